"""``sessionexport worker``: the background work without the HTTP API: exporters, the sessionizer's
sweeps (RUM events into completed sessions) and retention."""

from __future__ import annotations

import asyncio
import logging
import signal
from urllib.parse import urlsplit, urlunsplit

from sessionexport.config import ServerConfig
from sessionexport.services import Services

log = logging.getLogger(__name__)


async def run_worker(config: ServerConfig) -> None:
    # No ingest in this process: exporters notice new sessions by polling the log.
    services = Services.create(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with services.running():
        log.info("worker %s: exporting from %s", services.exports.owner, _where(config))
        await stop.wait()
    log.info("worker: stopped")


def _where(config: ServerConfig) -> str:
    """The database, without a password a URL may carry."""
    if not config.database_url:
        return str(config.data_dir)
    parts = urlsplit(config.database_url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
