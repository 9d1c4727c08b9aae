"""The ingest routes (and the receiver's data routes) hold a bounded amount of request bodies at once: a request beyond it waits,
its body unread, for room; it gets 503 with Retry-After if none comes in time, and nothing of it
is stored. Through the real app, with a sender whose body arrives slowly holding the room."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sessionexport.api.app import create_app
from sessionexport.config import ServerConfig
from sessionexport.receiver.app import ReceiverOptions, create_receiver_app
from sessionexport.request_bodies import BodyBudget
from tests.conftest import make_token
from tests.support.engine import sessions

LIMIT = 64 * 1024
NDJSON = {"Content-Type": "application/x-ndjson"}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    config = ServerConfig(
        data_dir=tmp_path,
        run_exporters=False,
        max_body_bytes=LIMIT,
        ingest_buffer_bytes=LIMIT,  # room for one body of unknown length
        ingest_wait_seconds=0.3,
    )
    app = create_app(config)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as c,
    ):
        c.headers["Authorization"] = f"Api-Token {await make_token(app.state.store)}"
        yield c


class SlowBody:
    """A body of unknown length that sends its first line, then the rest once released."""

    @classmethod
    async def holding_room(
        cls, client: httpx.AsyncClient, method: str, url: str, seed: int
    ) -> tuple[SlowBody, asyncio.Task[httpx.Response]]:
        """A request of 3 sessions sent with a slow body, once it holds its room (its body is being read)."""
        slow = cls(sessions(3, seed=seed))
        sending = asyncio.create_task(client.request(method, url, content=slow, headers=NDJSON))
        await slow.started.wait()
        return slow, sending

    def __init__(self, lines: list[bytes]) -> None:
        self.lines = lines
        self.started, self.released = asyncio.Event(), asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.lines[0] + b"\n"
        self.started.set()
        await self.released.wait()
        yield b"\n".join(self.lines[1:])


async def test_a_request_beyond_the_buffer_waits_then_is_refused_and_stores_nothing(
    client: httpx.AsyncClient,
) -> None:
    slow, holding = await SlowBody.holding_room(client, "POST", "/api/v2/usersessions", seed=1)
    refused = await client.post("/api/v2/usersessions", content=sessions(1, seed=2)[0], headers=NDJSON)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "busy" in refused.json()["error"]["message"]
    slow.released.set()
    assert (await holding).json() == {"accepted": 3, "duplicates": 0}
    again = await client.post("/api/v2/usersessions", content=sessions(1, seed=2)[0], headers=NDJSON)
    assert again.status_code == 200 and again.json()["accepted"] == 1  # the refused one was not kept
    scraped = (await client.get("/metrics")).text
    answers = {
        sample.labels["code"]: sample.value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
        if sample.name == "sessionexport_ingest_requests_total"
        and sample.labels["route"] == "/api/v2/usersessions"
    }
    assert answers == {"200": 2, "503": 1}


async def test_a_request_that_finds_room_within_the_wait_goes_through(client: httpx.AsyncClient) -> None:
    slow, holding = await SlowBody.holding_room(client, "POST", "/api/v2/usersessions", seed=3)
    waiting = asyncio.create_task(
        client.post("/api/v2/rum/events", content=b'{"not": "an event"}', headers=NDJSON)
    )
    await asyncio.sleep(0.1)
    assert not waiting.done()  # no room: its body is not even read yet
    slow.released.set()
    assert (await holding).status_code == 200
    assert (await waiting).status_code == 400  # read, then judged, once there was room


async def test_what_can_never_be_taken_is_refused_at_once_not_after_waiting(
    client: httpx.AsyncClient,
) -> None:
    slow, holding = await SlowBody.holding_room(client, "POST", "/api/v2/usersessions", seed=4)
    line = sessions(1, seed=5)[0]
    too_large = await client.post(
        "/api/v2/usersessions", content=line, headers={**NDJSON, "Content-Length": str(LIMIT + 1)}
    )
    assert too_large.status_code == 413
    brotli = await client.post(
        "/api/v2/usersessions", content=line, headers={**NDJSON, "Content-Encoding": "br"}
    )
    assert brotli.status_code == 415
    for route in ("/api/v2/usersessions", "/api/v2/rum/events"):
        typed = await client.post(route, content=line, headers={"Content-Type": "text/plain"})
        assert typed.status_code == 400 and "content type" in typed.json()["error"]["message"]
    assert not holding.done()  # all of them answered while the room was still taken
    slow.released.set()
    assert (await holding).status_code == 200


async def test_the_receiver_holds_a_bounded_amount_of_bodies_too(tmp_path: Path) -> None:
    config = ReceiverOptions(data_dir=str(tmp_path), max_body_bytes=LIMIT, buffer_bytes=LIMIT).build()
    config.budget = BodyBudget(LIMIT, wait_seconds=0.3)
    app = create_receiver_app(config)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://r") as r,
    ):
        slow, holding = await SlowBody.holding_room(r, "PUT", "/export/events", seed=6)
        line = sessions(1, seed=7)[0]
        busy = await r.put("/export/events", content=line, headers=NDJSON)
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        bulk = b'{"index":{"_index":"s","_id":"1"}}\n' + line + b"\n"
        rejected = await r.post("/_bulk", content=bulk, headers=NDJSON)
        assert rejected.status_code == 429  # Elasticsearch's answer when overloaded: its clients retry
        assert rejected.json()["error"]["type"] == "es_rejected_execution_exception"
        too_large = await r.put(
            "/export/events", content=line, headers={**NDJSON, "Content-Length": str(LIMIT + 1)}
        )
        assert too_large.status_code == 413  # at once, not after waiting
        slow.released.set()
        assert (await holding).json()["stored"] == 3
        assert (await r.put("/export/events", content=line, headers=NDJSON)).json()["stored"] == 1
        assert (await r.post("/_bulk", content=bulk, headers=NDJSON)).json()["errors"] is False
