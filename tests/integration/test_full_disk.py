"""A full disk under the embedded store: the API and the receiver say so (503, Retry-After), store
nothing of the refused request, keep serving reads, and take writes again once there is room.

SQLite's own cap on a database's pages (``PRAGMA max_page_count`` on the writer's connection)
stands in for the full disk: the writer then gets SQLITE_FULL, the very error a full disk gives.
The end-to-end test of a real file-size limit is tests/e2e/test_full_disk.py.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from sessionexport.api.app import create_app
from sessionexport.config import ServerConfig
from sessionexport.receiver.app import ReceiverOptions, create_receiver_app
from sessionexport.receiver.store.sqlite import SQLiteReceivedStore
from sessionexport.store.sqlite import SQLiteStore
from sessionexport.store.sqlite_engine import SQLiteEngine
from tests.conftest import make_token
from tests.support.engine import sessions

NDJSON = {"Content-Type": "application/x-ndjson"}
NO_CAP = 1_073_741_823  # SQLite's default max_page_count


async def cap_pages(engine: SQLiteEngine, extra: int | None) -> None:
    """Let the writer's database grow by ``extra`` pages at most (None: no cap)."""

    def cap(conn: sqlite3.Connection) -> None:
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
        conn.execute(f"PRAGMA max_page_count={NO_CAP if extra is None else pages + extra}")

    await engine.write(cap)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, SQLiteStore]]:
    app = create_app(ServerConfig(data_dir=tmp_path, run_exporters=False))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://sessionexport.test"
        ) as client,
    ):
        client.headers["Authorization"] = f"Api-Token {await make_token(app.state.store)}"
        yield client, app.state.store


async def test_ingest_on_a_full_disk_is_refused_saying_so_and_resumes_with_room(
    api: tuple[httpx.AsyncClient, SQLiteStore], caplog: pytest.LogCaptureFixture
) -> None:
    client, store = api
    first = await client.post("/api/v2/usersessions", content=b"\n".join(sessions(5)), headers=NDJSON)
    assert first.status_code == 200
    await cap_pages(store._engine, 1)
    more = b"\n".join(sessions(50, seed=2))  # ~400 KB: more than one 64 KiB page
    refused = await client.post("/api/v2/usersessions", content=more, headers=NDJSON)
    assert refused.status_code == 503
    assert "disk of the store is full" in refused.json()["error"]["message"]
    assert refused.headers["retry-after"] == "60"
    assert await store.count_sessions() == 5  # nothing of the refused request
    with caplog.at_level(logging.ERROR, logger="sessionexport.api.errors"):
        for _ in range(5):  # a sender retrying at once
            assert (
                await client.post("/api/v2/usersessions", content=more, headers=NDJSON)
            ).status_code == 503
    said = [r for r in caplog.records if r.name == "sessionexport.api.errors"]
    assert len(said) <= 1  # said once a minute at most, not once per refusal
    listed = await client.get("/api/v2/usersessions")
    assert listed.status_code == 200 and len(listed.json()["userSessions"]) == 5  # reads go on
    await cap_pages(store._engine, None)  # room again
    again = await client.post("/api/v2/usersessions", content=more, headers=NDJSON)
    assert again.status_code == 200 and again.json() == {"accepted": 50, "duplicates": 0}


async def test_the_receiver_on_a_full_disk_says_so_and_stores_nothing(tmp_path: Path) -> None:
    app = create_receiver_app(ReceiverOptions(data_dir=str(tmp_path)).build())
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://receiver.test") as client,
    ):
        store = app.state.receiver.store
        assert isinstance(store, SQLiteReceivedStore)
        await cap_pages(store._engine, 1)
        body = b"\n".join(sessions(50, seed=3))
        refused = await client.put("/export/events", content=body, headers=NDJSON)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "60"
        assert "storage is full" in refused.text
        await cap_pages(store._engine, None)
        assert (await client.put("/export/events", content=body, headers=NDJSON)).status_code == 200
