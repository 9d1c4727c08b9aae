"""The app factory. Its lifespan owns the store and the background tasks."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from sessionexport import __version__
from sessionexport.api import exports, health, metrics, rum, settings, usersessions
from sessionexport.api.errors import ERROR_ENVELOPE_SCHEMA, document_errors, install_error_handlers
from sessionexport.api.metrics import CountAnswers
from sessionexport.api.security import TokenFirst, check_route_tokens
from sessionexport.config import ServerConfig
from sessionexport.http_methods import HeadAsGet
from sessionexport.request_bodies import SMALL_BODY_BYTES, BodyBudget, BodyDeadlines, BodyLimit
from sessionexport.request_urls import EnvironmentPaths, RefuseNulInUrl
from sessionexport.services import Services
from sessionexport.store import Store
from sessionexport.web.app import create_ui

DESCRIPTION = """\
Completed user sessions in, kept durably, streamed out in bulk. Compatible with Dynatrace's user
session export. Every `/api/v2` route needs `Authorization: Api-Token <token>` with the scope it
names; create tokens with `sessionexport tokens create`.
"""


def create_app(config: ServerConfig, store: Store | None = None) -> FastAPI:
    services = Services.create(config, store)
    app = app_of(services, title="sessionexport", docs_url="/docs", openapi_url="/openapi.json")
    app.state.body_budget = BodyBudget(config.ingest_buffer_bytes, config.ingest_wait_seconds)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.include_router(health.router)
    app.include_router(usersessions.router)
    app.include_router(rum.router)
    app.include_router(settings.router)
    app.include_router(exports.router)
    app.include_router(metrics.router)
    app.mount("/ui", create_ui(app.state))
    # the ingest routes read their bodies within their own, configurable limit
    data_routes = frozenset({usersessions.router.prefix, f"{rum.router.prefix}/events"})
    # Without a token: 401 whatever the body, unless it declares one too large (413, outer: cheaper).
    app.add_middleware(TokenFirst)
    app.add_middleware(BodyDeadlines)
    app.add_middleware(BodyLimit, limit_for=lambda path: None if path in data_routes else SMALL_BODY_BYTES)
    app.add_middleware(RefuseNulInUrl)
    app.add_middleware(CountAnswers, metrics=services.ingest_metrics, routes=data_routes)
    app.add_middleware(EnvironmentPaths)  # outermost: every other part sees the API's own path
    return app


def app_of(
    services: Services, running: Callable[[], AbstractAsyncContextManager[Any]] | None = None, **options: Any
) -> FastAPI:
    """An app whose lifespan runs ``services`` (within ``running()``; default: their own
    ``running``), with them in its state, and the error envelope; FastAPI's ``options``."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with (running or services.running)():
            yield

    app = FastAPI(version=__version__, description=DESCRIPTION, lifespan=lifespan, **options)
    state = app.state
    state.config, state.store, state.settings = services.config, services.store, services.settings
    state.notifier, state.registry = services.notifier, services.registry
    state.metrics, state.ingest_metrics = services.metrics, services.ingest_metrics
    state.exports, state.sessionizer = services.exports, services.sessionizer
    install_error_handlers(app, check_route_tokens)
    app.add_middleware(HeadAsGet)
    return app


def _name_scopes(operation: dict[str, Any]) -> None:
    """One security requirement holding every scope the route checks (FastAPI lists one per
    check, which OpenAPI reads as alternatives), and the scopes named in the description."""
    scopes = sorted(
        {s for requirement in operation.get("security", ()) for s in requirement.get("ApiToken", ())}
    )
    if not scopes:
        return
    operation["security"] = [{"ApiToken": scopes}]
    named = " and ".join(f"`{s}`" for s in scopes)
    operation["description"] = f"{operation.get('description', '')}\n\nToken scope: {named}.".strip()


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with its 422 answers replaced by the 400s this API really gives, and
    the errors every route can give documented on each."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        for path in schema["paths"].values():
            for operation in path.values():
                _name_scopes(operation)
                responses = operation.get("responses", {})
                if responses.pop("422", None) is not None and "400" not in responses:
                    responses["400"] = {
                        "description": "Invalid request parameters or body (Dynatrace error envelope)",
                        "content": {"application/json": {"schema": ERROR_ENVELOPE_SCHEMA}},
                    }
                document_errors(operation)
        schema["components"]["schemas"].pop("HTTPValidationError", None)
        schema["components"]["schemas"].pop("ValidationError", None)
        app.openapi_schema = schema
    return app.openapi_schema
