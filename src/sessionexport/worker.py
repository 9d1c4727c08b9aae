"""``sessionexport worker``: the background work without the HTTP API: exporters, the sessionizer's
sweeps (RUM events into completed sessions) and retention; with ``/health`` and ``/metrics`` on a
port of its own when asked (``create_worker_app``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator

from fastapi import FastAPI

from sessionexport.api import health, metrics
from sessionexport.api.app import app_of
from sessionexport.config import ServerConfig
from sessionexport.request_bodies import SMALL_BODY_BYTES, BodyLimit
from sessionexport.request_urls import RefuseNulInUrl
from sessionexport.services import Services
from sessionexport.store.locations import shown_location

log = logging.getLogger(__name__)


async def run_worker(config: ServerConfig) -> None:
    # No ingest in this process: exporters notice new sessions by polling the log.
    services = Services.create(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with working(services):
        await stop.wait()


def create_worker_app(config: ServerConfig) -> FastAPI:
    """The worker, with only ``/health`` and ``/metrics`` to look at it: its exporters' counters
    are nowhere else. Served by uvicorn, which stops it on SIGINT and SIGTERM."""
    services = Services.create(config)
    app = app_of(
        services,
        lambda: working(services),
        title="sessionexport worker",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.add_middleware(BodyLimit, limit_for=lambda path: SMALL_BODY_BYTES)
    app.add_middleware(RefuseNulInUrl)
    return app


@contextlib.asynccontextmanager
async def working(services: Services) -> AsyncIterator[None]:
    """The worker's services running, said when they start and when they stopped."""
    async with services.running():
        where = shown_location(services.config.data_dir, services.config.database_url)
        log.info("worker %s: exporting from %s", services.exports.owner, where)
        yield
    log.info("worker: stopped")
