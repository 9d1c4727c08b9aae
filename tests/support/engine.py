"""The app with its exporters, driven in-process over httpx, for tests of the export path."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import httpx

from sessionexport.api.app import create_app
from sessionexport.config import ServerConfig
from sessionexport.generate.sessions import GeneratorOptions, generate_lines
from sessionexport.settings.schemas import EXPORT_SCHEMA
from tests.conftest import make_token
from tests.support.backend import backend_database

OBJECTS = "/api/v2/settings/objects"


@dataclass
class Engine:
    client: httpx.AsyncClient
    headers: dict[str, str]
    app: Any

    async def ingest(self, lines: list[bytes]) -> None:
        response = await self.client.post(
            "/api/v2/usersessions",
            content=b"\n".join(lines),
            headers={**self.headers, "Content-Type": "application/x-ndjson"},
        )
        assert response.status_code == 200, response.text

    async def create_export(self, value: dict[str, Any]) -> str:
        body = [{"schemaId": EXPORT_SCHEMA, "scope": "environment", "value": value}]
        response = await self.client.post(OBJECTS, json=body, headers=self.headers)
        assert response.status_code == 200, response.text
        object_id: str = response.json()[0]["objectId"]
        await self.until_running(object_id)
        return object_id

    async def until_running(self, object_id: str) -> None:
        await until(lambda: self.app.state.exports.is_running(object_id), what="exporter running")
        await asyncio.sleep(0.05)  # let it read its starting position

    async def status(self, object_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/api/v2/exports/{object_id}/status", headers=self.headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def export_value(url: str, tuning: dict[str, Any] | None = None, **sections: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "endpointDefinition": {"endpointUrl": url, "contentType": "application/json", "usePost": False},
        "authentication": {"active": False},
        "sendDirect": {"active": False},
        "exportBehavior": {
            "customConfiguration": json.dumps({"flushIntervalSeconds": 0.2, **(tuning or {})})
        },
    }
    for name, section in sections.items():
        value[name] = {**value.get(name, {}), **section}
    return value


@asynccontextmanager
async def running_engine(config: ServerConfig) -> AsyncIterator[Engine]:
    """The real app (exporters and sessionizer running) in-process, with an all-scopes token; on
    the test backend (a fresh PostgreSQL schema with SESSIONEXPORT_TEST_BACKEND=postgresql) unless
    the configuration names a database."""
    if config.database_url is not None:
        async with _running(config) as engine:
            yield engine
        return
    with backend_database() as url:
        async with _running(replace(config, database_url=url)) as engine:
            yield engine


@asynccontextmanager
async def _running(config: ServerConfig) -> AsyncIterator[Engine]:
    app = create_app(config)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://sessionexport.test", timeout=60) as client,
    ):
        token = await make_token(app.state.store)
        yield Engine(client, {"Authorization": f"Api-Token {token}"}, app)


def sessions(count: int, seed: int = 1, **options: Any) -> list[bytes]:
    return list(generate_lines(count, seed, GeneratorOptions(end_ms=1_760_000_000_000, **options)))


async def until(condition: Callable[[], bool | Awaitable[bool]], what: str, within: float = 15) -> None:
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if await result if inspect.isawaitable(result) else result:
            return
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        await asyncio.sleep(0.02)
