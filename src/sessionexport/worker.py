"""``sessionexport worker``: the background work without the HTTP API: exporters, the sessionizer's
sweeps (RUM events into completed sessions) and retention."""

from __future__ import annotations

import asyncio
import logging
import signal

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
    log.info("worker: exporting from %s", config.database_url or config.data_dir)
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await store.close()
        log.info("worker: stopped")
