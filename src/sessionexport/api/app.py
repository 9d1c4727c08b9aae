"""The app factory. Its lifespan owns the store and the background tasks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from sessionexport import __version__
from sessionexport.api import health, usersessions
from sessionexport.api.errors import install_error_handlers
from sessionexport.config import ServerConfig
from sessionexport.retention import run_retention
from sessionexport.store import Store, create_store

DESCRIPTION = """\
Completed user sessions in, kept durably, streamed out in bulk. Compatible with Dynatrace's user
session export. Every `/api/v2` route needs `Authorization: Api-Token <token>` with the scope it
names; create tokens with `sessionexport tokens create`.
"""


def create_app(config: ServerConfig, store: Store | None = None) -> FastAPI:
    store = store or create_store(config.data_dir, config.database_url)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await store.open()
        retention = asyncio.create_task(
            run_retention(store, config.retention_ms, config.retention_check_seconds)
        )
        try:
            yield
        finally:
            retention.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await retention
            await store.close()

    app = FastAPI(
        title="sessionexport",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.config = config
    app.state.store = store
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(usersessions.router)
    return app
