"""The bounds of a request's head (sessionexport.http_limits) and body (BodyDeadlines) on a real
uvicorn server on loopback: what a client could otherwise make the server hold (headers of any
size, a body's room in the budget, a connection), and for as long as it liked."""

from __future__ import annotations

import asyncio
import resource
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from sessionexport import http_limits, listening, request_bodies
from sessionexport.http_limits import MAX_HEAD_BYTES, BoundedHttpToolsProtocol
from sessionexport.request_bodies import BodyBudget, BodyDeadlines, read_body
from tests.support.threaded_server import ThreadedServer


async def _length(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(len(await request.body())))


async def _slow(_: Request) -> PlainTextResponse:
    await asyncio.sleep(1.5)  # longer than the head timeout of these tests
    return PlainTextResponse("slow")


@pytest.fixture
def port(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    monkeypatch.setattr(http_limits, "HEAD_TIMEOUT_SECONDS", 1.0)
    app = Starlette(routes=[Route("/", _length, methods=["GET", "POST"]), Route("/slow", _slow)])
    server = ThreadedServer(app, lifespan="off", http=BoundedHttpToolsProtocol).start()
    yield server.port
    server.stop()


def exchange(port: int, *parts: bytes, pause: float = 0.0) -> bytes:
    """Send ``parts`` (``pause`` seconds apart, until an answer comes) and read until the server
    closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        for part in parts:
            if select.select([conn], [], [], 0)[0]:
                break  # answered already: more bytes would only make the server's side reset
            conn.sendall(part)
            time.sleep(pause)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def request(body: bytes = b"", headers: bytes = b"") -> bytes:
    return (
        b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        + headers
        + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )


def test_a_head_over_the_limit_gets_431_and_the_server_goes_on(port: int) -> None:
    huge = b"X-Big: " + b"a" * MAX_HEAD_BYTES + b"\r\n"
    answer = exchange(port, request(headers=huge))
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer[:100]
    assert b"request line and headers over 65536 bytes" in answer
    many = b"".join(b"X-%d: 1\r\n" % n for n in range(MAX_HEAD_BYTES // 8))
    assert exchange(port, request(headers=many)).startswith(b"HTTP/1.1 431 ")
    assert exchange(port, request(b"abc", b"X-Fine: " + b"a" * 30_000 + b"\r\n")).endswith(b"\r\n\r\n3")


def test_a_header_without_its_line_end_is_counted_as_it_arrives(port: int) -> None:
    """httptools builds such a value up in memory until the line ends: it is cut at the bound."""
    chunk = b"a" * 16 * 1024
    answer = exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ", *[chunk] * 8, pause=0.05)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    blank_first = exchange(port, b"\r\n\r\nGET / HTTP/1.1\r\nX-Big: " + chunk * 5)
    assert blank_first.startswith(b"HTTP/1.1 431 "), blank_first[:100]  # blank lines end no head


def test_a_pipelined_head_is_timed_from_the_answer_before_it(port: int) -> None:
    """The slow first request is answered, not cut by the next head's timer; the next head,
    still unfinished a head timeout after that answer, gets its 408."""
    answer = exchange(port, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /hea")
    first, _, rest = answer.partition(b"\r\n\r\nslow")
    assert first.startswith(b"HTTP/1.1 200 OK\r\n"), answer[:200]
    assert rest.startswith(b"HTTP/1.1 408 "), answer


def test_a_head_that_never_ends_gets_408(port: int) -> None:
    started = time.monotonic()
    answer = exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ", b"a", pause=0.3)
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer[:100]
    assert b"request line and headers not sent within 1 s" in answer
    assert time.monotonic() - started < 5


def test_a_connection_that_sends_nothing_is_closed(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        assert conn.recv(65536).startswith(b"HTTP/1.1 408 ")
        assert conn.recv(65536) == b""  # closed


def test_a_body_slower_than_the_head_timeout_is_not_cut_by_it(port: int) -> None:
    head = b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 4\r\n\r\n"
    answer = exchange(port, head, b"ab", b"cd", pause=0.7)  # 1.4 s after the head
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\n4"), answer


def test_requests_on_a_kept_connection_each_get_the_head_timeout(port: int) -> None:
    one = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        for _ in range(3):
            conn.sendall(one)
            assert conn.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
            time.sleep(0.6)  # together longer than the head timeout: each head is timed alone


# -- bodies: BodyDeadlines ------------------------------------------------------------------------------


@dataclass
class Bodies:
    port: int
    budget: BodyBudget
    stored: list[bytes] = field(default_factory=list)


@pytest.fixture
def bodies(monkeypatch: pytest.MonkeyPatch) -> Iterator[Bodies]:
    monkeypatch.setattr(request_bodies, "BODY_IDLE_SECONDS", 0.5)
    monkeypatch.setattr(request_bodies, "BODY_SECONDS", 2.0)
    budget = BodyBudget(1024 * 1024)

    async def store(request: Request) -> PlainTextResponse:
        async with budget.room_for(request, 1024 * 1024):  # as the ingest routes hold their room
            body = await read_body(request, 1024 * 1024)
        await asyncio.sleep(1.0)  # an answer slower than the deadlines: they time the body only
        state.stored.append(body)
        return PlainTextResponse(str(len(body)))

    app = Starlette(routes=[Route("/", store, methods=["POST"])])
    app.add_middleware(BodyDeadlines)
    server = ThreadedServer(app, lifespan="off", http=BoundedHttpToolsProtocol).start()
    state = Bodies(server.port, budget)
    yield state
    server.stop()


def post_head(size: int) -> bytes:
    return b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % size


def test_a_body_that_stops_arriving_gets_408_and_gives_its_room_back(bodies: Bodies) -> None:
    answer = exchange(bodies.port, post_head(1000) + b"x" * 10)
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer[:100]
    assert b"The request body stopped arriving: nothing came for 0.5 s" in answer
    assert b"\r\nconnection: close\r\n" in answer.lower()  # the rest of that body is not read as a request
    assert bodies.stored == [] and bodies.budget.used == 0


def test_a_body_that_trickles_past_the_whole_deadline_gets_408(bodies: Bodies) -> None:
    answer = exchange(bodies.port, post_head(10), *[b"x"] * 10, pause=0.3)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    assert b"The request body was not sent whole within 2 s" in answer
    assert bodies.stored == [] and bodies.budget.used == 0


def test_a_body_with_short_pauses_and_a_slow_answer_are_not_cut(bodies: Bodies) -> None:
    answer = exchange(bodies.port, post_head(4), b"ab", b"cd", pause=0.3)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\n4"), answer
    assert bodies.stored == [b"abcd"]


def test_past_max_connections_a_request_gets_503_at_once_and_held_ones_do_not_starve_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Clients holding connections open (a body sent a byte at a time) must not take every
    descriptor the process has: past the limit, others are answered 503 and closed."""
    monkeypatch.setattr(listening, "MAX_CONNECTIONS", 3)
    app = Starlette(routes=[Route("/", _length, methods=["GET", "POST"])])
    sock = listening.bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = listening.bounded_server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.02)
        held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
        for conn in held:  # each a request whose body has only begun
            conn.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nx")
        time.sleep(0.2)
        assert exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(
            b"HTTP/1.1 503"
        )
        for conn in held:
            conn.close()
        time.sleep(0.2)
        assert exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(
            b"HTTP/1.1 200"
        )
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_the_limit_of_open_files_is_raised_as_far_as_the_hard_limit_lets_it() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = (
        listening.WANTED_OPEN_FILES
        if hard == resource.RLIM_INFINITY
        else min(listening.WANTED_OPEN_FILES, hard)
    )
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, wanted), hard))
        listening.raise_open_files_limit()
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (wanted, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
