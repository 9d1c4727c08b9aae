"""``sessionexport worker``: the background work without the HTTP API: exporters, the sessionizer's
sweeps (RUM events into completed sessions) and retention."""

from __future__ import annotations

import asyncio
import logging
import signal
from urllib.parse import urlsplit, urlunsplit

from sessionexport.config import ServerConfig
from sessionexport.export.metrics import ExportMetrics
from sessionexport.export.notifier import LogNotifier
from sessionexport.export.supervisor import ExportSupervisor
from sessionexport.ingest.assembly import Sessionizer
from sessionexport.retention import run_retention
from sessionexport.settings.objects import SettingsService
from sessionexport.settings.secrets import load_secret_box
from sessionexport.store import create_store

log = logging.getLogger(__name__)


async def run_worker(config: ServerConfig) -> None:
    store = create_store(config.data_dir, config.database_url)
    box = load_secret_box(config.data_dir, config.secret_keys)
    await store.open()
    settings = SettingsService(store, box, allow_http_loopback=config.allow_http_loopback)
    # No ingest in this process: exporters notice new sessions by polling the log.
    notifier = LogNotifier()
    supervisor = ExportSupervisor(
        store,
        settings,
        notifier,
        ExportMetrics(),
        ca_bundle=config.ca_bundle,
        allow_http_loopback=config.allow_http_loopback,
        lease_seconds=config.lease_seconds,
        max_in_flight=config.max_in_flight,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    tasks = [
        asyncio.create_task(supervisor.run()),
        asyncio.create_task(Sessionizer(store, notifier, config.sessionizer).run()),  # events -> sessions
        asyncio.create_task(run_retention(store, config.retention_ms, config.retention_check_seconds)),
    ]
    log.info("worker %s: exporting from %s", supervisor.owner, _where(config))
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await store.close()
        log.info("worker: stopped")


def _where(config: ServerConfig) -> str:
    """The database, without a password a URL may carry."""
    if not config.database_url:
        return str(config.data_dir)
    parts = urlsplit(config.database_url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
