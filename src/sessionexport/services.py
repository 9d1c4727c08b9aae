"""The pieces every sessionexport process is made of, wired from one ``ServerConfig``: the store,
the settings service, the exporters' supervisor and the sessionizer; and the background work they
run (retention always; exporters and the sessionizer's sweeps where ``run_exporters``). ``serve``
puts the HTTP API in front of them, ``worker`` runs them alone."""

from __future__ import annotations

import asyncio
import contextlib
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
                run_retention(self.store, config.retention_ms, config.retention_check_seconds),
                name="retention",
            )
        ]
        if config.run_exporters:  # the process with the background work also completes sessions
            tasks.append(asyncio.create_task(self.exports.run(), name="exports"))
            tasks.append(asyncio.create_task(self.sessionizer.run(), name="sessionizer"))
        try:
            yield self
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.store.close()
