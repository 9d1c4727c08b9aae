"""The app factory. Its lifespan owns the store and the background tasks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from sessionexport import __version__
from sessionexport.api import exports, health, rum, settings, usersessions
from sessionexport.api.errors import ERROR_ENVELOPE_SCHEMA, install_error_handlers
from sessionexport.config import ServerConfig
from sessionexport.export.metrics import ExportMetrics
from sessionexport.export.notifier import LogNotifier
from sessionexport.export.supervisor import ExportSupervisor
from sessionexport.ingest.assembly import Sessionizer
from sessionexport.retention import run_retention
from sessionexport.settings.objects import SettingsService
from sessionexport.settings.secrets import load_secret_box
from sessionexport.store import Store, create_store
from sessionexport.web.app import create_ui

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
        tasks = [
            asyncio.create_task(run_retention(store, config.retention_ms, config.retention_check_seconds))
        ]
        if config.run_exporters:  # the process with the background work also completes sessions
            tasks.append(asyncio.create_task(supervisor.run(), name="exports"))
            tasks.append(asyncio.create_task(app.state.sessionizer.run(), name="sessionizer"))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
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
    box = load_secret_box(config.data_dir, config.secret_keys)
    settings_service = SettingsService(store, box, allow_http_loopback=config.allow_http_loopback)
    app.state.notifier = LogNotifier()
    app.state.metrics = ExportMetrics()
    supervisor = ExportSupervisor(
        store,
        settings_service,
        app.state.notifier,
        app.state.metrics,
        ca_bundle=config.ca_bundle,
        allow_http_loopback=config.allow_http_loopback,
        lease_seconds=config.lease_seconds,
        max_in_flight=config.max_in_flight,
    )
    settings_service.on_change = supervisor.poke
    app.state.settings = settings_service
    app.state.sessionizer = Sessionizer(store, app.state.notifier, config.sessionizer)
    app.state.exports = supervisor
    install_error_handlers(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.include_router(health.router)
    app.include_router(usersessions.router)
    app.include_router(rum.router)
    app.include_router(settings.router)
    app.include_router(exports.router)
    app.include_router(exports.metrics_router)
    app.mount("/ui", create_ui(app.state))
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with its 422 answers replaced by the 400s this API really gives."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        for path in schema["paths"].values():
            for operation in path.values():
                responses = operation.get("responses", {})
                if responses.pop("422", None) is not None and "400" not in responses:
                    responses["400"] = {
                        "description": "Invalid request parameters or body (Dynatrace error envelope)",
                        "content": {"application/json": {"schema": ERROR_ENVELOPE_SCHEMA}},
                    }
        schema["components"]["schemas"].pop("HTTPValidationError", None)
        schema["components"]["schemas"].pop("ValidationError", None)
        app.openapi_schema = schema
    return app.openapi_schema
