"""The pieces every sessionexport process is made of, wired from one ``ServerConfig``: the store,
the settings service, the exporters' supervisor and the sessionizer; and the background work they
run (retention always; exporters and the sessionizer's sweeps where ``run_exporters``). ``serve``
puts the HTTP API in front of them, ``worker`` runs them alone."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from sessionexport.config import ServerConfig
from sessionexport.export.metrics import ExportMetrics
from sessionexport.export.notifier import LogNotifier
from sessionexport.export.supervisor import ExportSupervisor
from sessionexport.ingest.assembly import Sessionizer
from sessionexport.ingest.metrics import IngestMetrics
from sessionexport.retention import run_retention
from sessionexport.settings.objects import SettingsService
from sessionexport.settings.secrets import load_secret_box
from sessionexport.store import Store, create_store

log = logging.getLogger(__name__)

# How long stopping waits for the background work (exporters hand their shards over: a few
# seconds), then for the database to close, before the process goes anyway.
STOP_SECONDS = 15.0
CLOSE_SECONDS = 5.0


@dataclass
class Services:
    config: ServerConfig
    store: Store
    settings: SettingsService
    notifier: LogNotifier  # told of new sessions (ingest) so that exporters need not wait for a poll
    registry: CollectorRegistry  # every metric of the process: /metrics shows it
    metrics: ExportMetrics
    ingest_metrics: IngestMetrics
    exports: ExportSupervisor
    sessionizer: Sessionizer

    @classmethod
    def create(cls, config: ServerConfig, store: Store | None = None) -> Services:
        store = store or create_store(config.data_dir, config.database_url)
        box = load_secret_box(config.data_dir, config.secret_keys)
        settings = SettingsService(store, box, allow_http_loopback=config.allow_http_loopback)
        notifier, registry = LogNotifier(), CollectorRegistry()
        metrics, ingest_metrics = ExportMetrics(registry), IngestMetrics(registry)
        exports = ExportSupervisor(
            store,
            settings,
            notifier,
            metrics,
            ca_bundle=config.ca_bundle,
            proxy=config.proxy,
            allow_http_loopback=config.allow_http_loopback,
            lease_seconds=config.lease_seconds,
            max_in_flight=config.max_in_flight,
        )
        settings.on_change = exports.poke  # the exporters follow the settings at once
        sessionizer = Sessionizer(store, notifier, config.sessionizer, metrics=ingest_metrics)
        return cls(config, store, settings, notifier, registry, metrics, ingest_metrics, exports, sessionizer)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Services]:
        """The store open and the background work running, until the block ends."""
        config = self.config
        await self.store.open()
        tasks = [
            asyncio.create_task(
                run_retention(
                    self.store,
                    config.retention_ms,
                    config.retention_check_seconds,
                    config.sessionizer.open_ms,
                ),
                name="retention",
            )
        ]
        if config.run_exporters:  # the process with the background work also completes sessions
            tasks.append(asyncio.create_task(self.exports.run(), name="exports"))
            tasks.append(asyncio.create_task(self.sessionizer.run(), name="sessionizer"))
        try:
            yield self
        finally:
            await _stop_within(tasks, STOP_SECONDS)
            try:
                await asyncio.wait_for(self.store.close(), CLOSE_SECONDS)
            except TimeoutError:
                log.warning("stopping: the database did not close within %gs; left as it is", CLOSE_SECONDS)


async def _stop_within(tasks: list[asyncio.Task[None]], seconds: float) -> None:
    """Cancel ``tasks`` and wait for them to end, for ``seconds`` at most: the exporters hand their
    shards over on the way out, and a database that stopped answering (a hung server, a network
    that drops everything) would hold the process up for as long. Past that, what they did not
    finish is left to expire (leases) or is done again (bulks in flight)."""
    for task in tasks:
        task.cancel()
    _, pending = await asyncio.wait(tasks, timeout=seconds)
    if pending:
        names = ", ".join(sorted(task.get_name() for task in pending))
        log.warning(
            "stopping: %s did not finish within %gs (does the database answer?); left behind", names, seconds
        )
        for task in pending:
            task.cancel()
