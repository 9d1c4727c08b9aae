"""Request bodies: large ones are parsed off the event loop, small ones on it (a thread costs
more); no route reads a body over its limit."""

from __future__ import annotations

import gzip
import threading
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sessionexport import request_bodies
from sessionexport.content_encoding import UnreadableBody
from sessionexport.request_bodies import (
    OFF_LOOP_BYTES,
    BodyLimit,
    BodyTooLarge,
    parse_off_loop,
    read_body,
    room_needed,
)


def where_parsed(body: bytes) -> int:
    return threading.get_ident()


async def test_a_large_body_is_parsed_in_another_thread() -> None:
    assert await parse_off_loop(where_parsed, b"x" * OFF_LOOP_BYTES) != threading.get_ident()


async def test_a_small_body_is_parsed_right_here() -> None:
    assert await parse_off_loop(where_parsed, b"x" * (OFF_LOOP_BYTES - 1)) == threading.get_ident()


async def test_a_parse_error_reaches_the_caller_from_either_place() -> None:
    def refuse(body: bytes) -> None:
        raise ValueError(len(body))

    for size in (10, OFF_LOOP_BYTES * 2):
        try:
            await parse_off_loop(refuse, b"x" * size)
        except ValueError as exc:
            assert exc.args == (size,)
        else:
            raise AssertionError("the error was lost")


# -- BodyLimit: no route reads a body larger than it takes ------------------------------------------
LIMIT = 1000


def limited_app() -> tuple[httpx.AsyncClient, list[int]]:
    """An app whose routes echo the size of what they read, behind ``BodyLimit`` (``/data`` reads
    within a limit of its own)."""
    seen: list[int] = []

    async def echo(request: Request) -> Response:
        body = await request.body()
        seen.append(len(body))
        return JSONResponse({"size": len(body)})

    app = Starlette(routes=[Route("/small", echo, methods=["POST"]), Route("/data", echo, methods=["POST"])])
    limited = BodyLimit(app, limit_for=lambda path: None if path == "/data" else LIMIT)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=limited), base_url="http://test")
    return client, seen


async def chunks(count: int, size: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield b"x" * size


async def test_a_body_within_the_limit_reaches_the_route() -> None:
    client, seen = limited_app()
    async with client:
        response = await client.post("/small", content=b"x" * LIMIT)
    assert response.status_code == 200 and seen == [LIMIT]


async def test_a_declared_body_over_the_limit_is_refused_before_the_route_runs() -> None:
    client, seen = limited_app()
    async with client:
        response = await client.post("/small", content=b"x" * (LIMIT + 1))
    assert response.status_code == 413
    assert response.json() == {
        "error": {"code": 413, "message": f"The request body exceeds the limit of {LIMIT} bytes"}
    }
    assert seen == []


async def test_a_streamed_body_is_refused_once_it_grows_past_the_limit() -> None:
    client, seen = limited_app()
    async with client:
        response = await client.post("/small", content=chunks(5, 300))  # no Content-Length
    assert response.status_code == 413
    assert seen == []  # the route saw the client go, and its answer was dropped


async def test_a_route_with_a_limit_of_its_own_is_left_to_it() -> None:
    client, seen = limited_app()
    async with client:
        response = await client.post("/data", content=b"x" * (LIMIT * 5))
    assert response.status_code == 200 and seen == [LIMIT * 5]


async def test_a_compressed_body_is_inflated_in_another_thread_however_small(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A few kilobytes may inflate to the whole limit: never on the event loop."""
    where: list[int] = []

    def decode(body: bytes, encoding: str, limit: int) -> bytes:
        where.append(threading.get_ident())
        return gzip.decompress(body)

    monkeypatch.setattr(request_bodies, "decode", decode)

    async def echo(request: Request) -> Response:
        return Response(await read_body(request, LIMIT))

    app = Starlette(routes=[Route("/data", echo, methods=["POST"])])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        response = await client.post(
            "/data", content=gzip.compress(b"tiny"), headers={"Content-Encoding": "gzip"}
        )
    assert response.content == b"tiny"
    assert where and where[0] != threading.get_ident()


def _request(*headers: tuple[str, str]) -> Request:
    raw = [(name.lower().encode(), value.encode()) for name, value in headers]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": raw})


@pytest.mark.parametrize(
    ("headers", "room"),
    [
        ((("Content-Length", "100"),), 100),
        ((), 1000),  # length unknown: it may take the limit
        ((("Content-Length", "100"), ("Content-Encoding", "gzip")), 1000),  # may inflate to the limit
        ((("Content-Length", "100"), ("Content-Encoding", "identity")), 100),
        # every header line counts, as when the body is read: the second one compresses it
        ((("Content-Length", "100"), ("Content-Encoding", "identity"), ("Content-Encoding", "gzip")), 1000),
        ((("Content-Length", "100"), ("Content-Encoding", ""), ("Content-Encoding", "deflate")), 1000),
    ],
)
def test_the_room_a_body_needs(headers: tuple[tuple[str, str], ...], room: int) -> None:
    assert room_needed(_request(*headers), 1000) == room


def test_what_reading_would_refuse_is_refused_before_room_is_taken() -> None:
    with pytest.raises(BodyTooLarge):
        room_needed(_request(("Content-Length", "1001")), 1000)
    with pytest.raises(UnreadableBody) as refused:
        room_needed(_request(("Content-Length", "10"), ("Content-Encoding", "br")), 1000)
    assert refused.value.status == 415
