"""Compressed bodies (``Content-Encoding: gzip`` or ``deflate``) through the real apps and stores:
taken where data comes in (sessions, RUM events, the receiver's exports and bulks), within the
limit once decoded; refused with a precise error, and nothing stored, when they cannot be read."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from sessionexport.clock import now_ms
from sessionexport.generate.events import EventOptions, generate_event_streams
from sessionexport.generate.sessions import GeneratorOptions, generate_lines
from sessionexport.receiver.app import ReceiverConfig, create_receiver_app
from sessionexport.receiver.store import create_received_store
from tests.conftest import Api

pytestmark = pytest.mark.store  # on PostgreSQL too (tests/support/backend.py)

API_LIMIT = 256 * 1024  # the api fixture's max_body_bytes
BOMB = gzip.compress(b"\n" * (8 << 20))  # 8 MiB once inflated, 8 KB as sent


def lines(count: int, seed: int = 1) -> list[bytes]:
    return list(generate_lines(count, seed, GeneratorOptions(end_ms=1_760_000_000_000)))


async def ingest(
    api: Api, token: str, body: bytes, encoding: str, content_type: str = "application/x-ndjson"
) -> httpx.Response:
    headers = {**api.auth(token), "Content-Type": content_type, "Content-Encoding": encoding}
    return await api.client.post("/api/v2/usersessions", content=body, headers=headers)


async def stored_ids(api: Api, token: str) -> list[str]:
    response = await api.client.get("/api/v2/usersessions", params={"pageSize": 500}, headers=api.auth(token))
    return [s["userSessionId"] for s in response.json()["userSessions"]]


async def test_gzip_and_deflate_sessions_are_stored_as_sent_uncompressed(api: Api) -> None:
    token = await api.token()
    ndjson, array = lines(20), lines(5, seed=2)
    response = await ingest(api, token, gzip.compress(b"\n".join(ndjson)), "gzip")
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 20, "duplicates": 0}
    deflated = zlib.compress(b"[" + b",".join(array) + b"]")
    response = await ingest(api, token, deflated, "deflate", "application/json")
    assert response.json() == {"accepted": 5, "duplicates": 0}
    listed = await api.client.get("/api/v2/usersessions", params={"pageSize": 500}, headers=api.auth(token))
    stored = listed.json()["userSessions"]
    assert [orjson.dumps(s) for s in reversed(stored)] == ndjson + array  # the stored bytes, decoded once


async def test_a_body_that_inflates_past_the_limit_gets_413_and_stores_nothing(api: Api) -> None:
    token = await api.token()
    response = await ingest(api, token, BOMB, "gzip")
    assert response.status_code == 413
    message = response.json()["error"]["message"]
    assert (
        message
        == f"The request body exceeds the limit of {API_LIMIT} bytes once decompressed; send smaller batches"
    )
    assert await stored_ids(api, token) == []


async def test_an_unknown_encoding_gets_415_naming_the_header(api: Api) -> None:
    token = await api.token()
    response = await ingest(api, token, b"\n".join(lines(2)), "br")
    assert response.status_code == 415
    error = response.json()["error"]
    assert error["message"].startswith("Content-Encoding 'br' is not supported")
    assert error["constraintViolations"][0]["path"] == "Content-Encoding"
    assert error["constraintViolations"][0]["parameterLocation"] == "HEADER"
    assert await stored_ids(api, token) == []


async def test_a_cut_gzip_body_gets_400_and_stores_nothing(api: Api) -> None:
    token = await api.token()
    whole = gzip.compress(b"\n".join(lines(20)))
    response = await ingest(api, token, whole[: len(whole) // 2], "gzip")
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "the gzip body ends early: it was cut short"
    assert await stored_ids(api, token) == []


async def test_rum_events_may_come_gzipped(api: Api) -> None:
    token = await api.token()
    options = EventOptions(end_ms=now_ms(), span_ms=600_000, end_event_ratio=1.0)
    events = list(generate_event_streams(5, 3, options))
    headers = {**api.auth(token), "Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}
    response = await api.client.post(
        "/api/v2/rum/events", content=gzip.compress(b"\n".join(events)), headers=headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(set(events))
    bomb = await api.client.post("/api/v2/rum/events", content=BOMB, headers=headers)
    assert bomb.status_code == 413


async def test_routes_that_take_no_data_refuse_a_compressed_body(api: Api) -> None:
    token = await api.token()
    value = gzip.compress(b"[]")
    headers = {**api.auth(token), "Content-Type": "application/json", "Content-Encoding": "gzip"}
    response = await api.client.post("/api/v2/settings/objects", content=value, headers=headers)
    assert response.status_code == 415
    assert response.json()["error"]["message"] == (
        "This route takes no compressed body: send it without Content-Encoding"
    )


async def test_a_request_without_a_body_may_name_an_encoding(api: Api) -> None:
    response = await api.client.get("/health", headers={"Content-Encoding": "gzip"})
    assert response.status_code == 200


async def test_content_encoding_headers_given_twice_are_read_as_one_list(api: Api) -> None:
    token = await api.token()
    headers = [
        *api.auth(token).items(),
        ("Content-Type", "application/x-ndjson"),
        ("Content-Encoding", "identity"),
        ("Content-Encoding", "gzip"),
    ]
    body = gzip.compress(b"\n".join(lines(3)))
    response = await api.client.post("/api/v2/usersessions", content=body, headers=headers)
    assert response.json() == {"accepted": 3, "duplicates": 0}
    twice = [*headers[:-2], ("Content-Encoding", "gzip"), ("Content-Encoding", "gzip")]
    stacked = await api.client.post("/api/v2/usersessions", content=gzip.compress(body), headers=twice)
    assert stacked.status_code == 415
    settings = await api.client.post("/api/v2/settings/objects", content=body, headers=headers)
    assert settings.status_code == 415  # the middleware reads both headers too


async def test_a_large_page_of_sessions_goes_gzipped_to_a_client_that_takes_it(api: Api) -> None:
    token = await api.token()
    sent = list(generate_lines(30, 4, GeneratorOptions(kind="web", actions=(5, 6), end_ms=1_760_000_000_000)))
    assert (await ingest(api, token, gzip.compress(b"\n".join(sent)), "gzip")).status_code == 200

    async def page(accept: str, size: int = 100) -> httpx.Response:
        headers = {**api.auth(token), "Accept-Encoding": accept}
        return await api.client.get("/api/v2/usersessions", params={"pageSize": size}, headers=headers)

    gzipped = await page("gzip, deflate")
    assert gzipped.headers["content-encoding"] == "gzip" and gzipped.headers["vary"] == "Accept-Encoding"
    assert int(gzipped.headers["content-length"]) * 4 < len(gzipped.content)  # decoded by httpx
    plain = await page("identity")
    assert "content-encoding" not in plain.headers
    assert plain.content == gzipped.content and len(plain.content) > 64 * 1024
    assert [orjson.dumps(s) for s in reversed(plain.json()["userSessions"])] == sent
    small = await page("gzip", size=1)
    assert "content-encoding" not in small.headers  # not worth compressing


# -- the receiver ------------------------------------------------------------------------------------


@pytest.fixture
async def receiver(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_receiver_app(ReceiverConfig(store=create_received_store(tmp_path), max_body_bytes=API_LIMIT))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://receiver.test") as client:
            yield client


async def received(client: httpx.AsyncClient) -> dict[str, int]:
    counts: dict[str, int] = (await client.get("/received/counts")).json()
    return counts


async def test_the_receiver_takes_gzipped_exports_and_refuses_what_it_cannot_read(
    receiver: httpx.AsyncClient,
) -> None:
    ndjson = {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}
    stored = await receiver.put(
        "/export/events", content=gzip.compress(b"\n".join(lines(10))), headers=ndjson
    )
    assert stored.status_code == 200 and stored.json()["stored"] == 10
    bomb = await receiver.put("/export/events", content=BOMB, headers=ndjson)
    assert bomb.status_code == 413
    assert bomb.json()["error"]["message"] == f"request body over {API_LIMIT} bytes once decompressed"
    corrupt = await receiver.put("/export/events", content=b"\x1f\x8bnot really", headers=ndjson)
    assert corrupt.status_code == 400 and "the gzip body is corrupt" in corrupt.json()["error"]["message"]
    unknown = await receiver.put(
        "/export/events", content=b"{}", headers={**ndjson, "Content-Encoding": "br"}
    )
    assert unknown.status_code == 415
    counts = await received(receiver)
    assert counts["sessions"] == 10
    assert counts["refusedRequests"] == 3  # each refused request is recorded, with why


async def test_the_receivers_bulk_takes_gzip_and_answers_errors_as_elasticsearch(
    receiver: httpx.AsyncClient,
) -> None:
    action = b'{"index":{"_index":"s","_id":"1"}}\n{"a":1}\n'
    headers = {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}
    answer = await receiver.post("/_bulk", content=gzip.compress(action), headers=headers)
    assert answer.status_code == 200 and answer.json()["errors"] is False
    bomb = await receiver.post("/_bulk", content=BOMB, headers=headers)
    assert bomb.status_code == 413
    assert bomb.json()["error"]["type"] == "http_content_too_long"
    corrupt = await receiver.post("/_bulk", content=gzip.compress(action)[:-8], headers=headers)
    assert corrupt.status_code == 400
    assert corrupt.json()["error"] == {
        "root_cause": [
            {"type": "illegal_argument_exception", "reason": "the gzip body ends early: it was cut short"}
        ],
        "type": "illegal_argument_exception",
        "reason": "the gzip body ends early: it was cut short",
    }
    assert (await received(receiver))["documents"] == 1
