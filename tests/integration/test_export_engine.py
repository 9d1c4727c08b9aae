"""The export engine against real HTTPS receivers on loopback (certificates from a test CA)."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from sessionexport.api.app import create_app
from sessionexport.config import ServerConfig
from sessionexport.generate.sessions import GeneratorOptions, generate_lines
from sessionexport.settings.schemas import EXPORT_SCHEMA
from tests.conftest import make_token
from tests.support.receiver import Receiver, Tls

OBJECTS = "/api/v2/settings/objects"


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    return Tls.create(tmp_path)


@pytest.fixture
def receiver(tls: Tls) -> Iterator[Receiver]:
    r = Receiver(tls).start()
    yield r
    r.stop()


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


@pytest.fixture
async def engine(tmp_path: Path, tls: Tls) -> AsyncIterator[Engine]:
    app = create_app(ServerConfig(data_dir=tmp_path / "data", ca_bundle=tls.ca_file))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://sessionexport.test", timeout=60
        ) as client:
            token = await make_token(app.state.store)
            yield Engine(client, {"Authorization": f"Api-Token {token}"}, app)


def sessions(count: int, seed: int = 1, **options: Any) -> list[bytes]:
    return list(generate_lines(count, seed, GeneratorOptions(end_ms=1_760_000_000_000, **options)))


async def until(condition: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if await result if inspect.isawaitable(result) else result:
            return
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        await asyncio.sleep(0.02)


async def delivered(engine: Engine, export_id: str, count: int) -> bool:
    return bool((await engine.status(export_id))["deliveredSessions"] == count)


async def test_sessions_reach_an_https_receiver_byte_for_byte(engine: Engine, receiver: Receiver) -> None:
    export_id = await engine.create_export(export_value(receiver.url))
    lines = sessions(25)
    await engine.ingest(lines)
    await until(lambda: len(receiver.sessions()) == 25, "25 sessions delivered")
    assert sorted(receiver.sessions()) == sorted(lines)
    request = receiver.requests[0]
    assert request.method == "PUT"
    assert request.headers["content-type"] == "application/json"
    assert request.body.endswith(b"\n")
    await until(lambda: delivered(engine, export_id, 25), "delivery recorded")
    status = await engine.status(export_id)
    assert status["state"] == "running" and status["backlog"] == 0 and status["lastSuccess"]
