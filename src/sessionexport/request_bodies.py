"""Request bodies within limits, for both HTTP apps (the API and the receiver).

Routes that take data (sessions, events, bulks) read their bodies with ``read_body`` and their own
configurable limit, which applies to the body as sent and, for a compressed one
(``Content-Encoding: gzip`` or ``deflate``), once decoded. ``BodyLimit`` bounds every other route,
and refuses compressed bodies there: without it a body is read whole before any token or login is
checked, so anyone could make the server hold any amount of memory.

``BodyBudget`` bounds how many bytes of bodies the data routes hold at once: each request takes its
room (``room_needed``) before its body is read and gives it back once answered. A request that does
not fit waits, its body unread, so TCP holds the sender back; one that still does not fit after the
wait is refused (``Busy``), to be sent again. However many senders push at once, the memory for
bodies stays bounded.

``BodyDeadlines`` bounds how long a body may take: a client that stops sending (or trickles) would
otherwise hold its room, and its connection, for as long as it likes.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sessionexport.content_encoding import IDENTITY, DecodedTooLarge, UnreadableBody, body_encoding, decode
from sessionexport.throttle import Throttle, recurring

T = TypeVar("T")
log = logging.getLogger(__name__)

DEFAULT_BUFFER_BYTES = 256 * 1024 * 1024  # bodies the data routes of one process hold at once
BUFFER_WAIT_SECONDS = 10.0  # a request waits this long for room, then is refused (Busy)
_GONE = Throttle()  # clients gone before their bodies were read: said now and then, with a count


class BodyTooLarge(Exception):
    status = 413

    def __init__(self, limit: int, *, decompressed: bool = False) -> None:
        self.limit = limit
        self.what = f"{limit} bytes once decompressed" if decompressed else f"{limit} bytes"
        super().__init__(f"request body over {self.what}")


class Busy(Exception):
    """No room for this body within the wait."""


class BodyBudget:
    def __init__(self, limit_bytes: int, wait_seconds: float = BUFFER_WAIT_SECONDS) -> None:
        self.limit = limit_bytes
        self.wait_seconds = wait_seconds
        self.used = 0
        self._freed = asyncio.Condition()

    def room_for(self, request: Request, body_limit: int) -> contextlib.AbstractAsyncContextManager[None]:
        """The room ``request``'s body needs (``room_needed``: what can never be taken is refused
        at once, not made to wait), held for the block's duration."""
        return self.reserve(room_needed(request, body_limit))

    @contextlib.asynccontextmanager
    async def reserve(self, size: int) -> AsyncIterator[None]:
        """Hold ``size`` bytes (at most all of them: a larger body waits for all) for the block."""
        size = min(size, self.limit)
        async with self._freed:
            try:
                await asyncio.wait_for(
                    self._freed.wait_for(lambda: self.used + size <= self.limit), self.wait_seconds
                )
            except TimeoutError:
                raise Busy(f"{self.used} of {self.limit} bytes of request bodies in progress") from None
            self.used += size
        try:
            yield
        finally:
            async with self._freed:
                self.used -= size
                self._freed.notify_all()


def room_needed(request: Request, limit: int) -> int:
    """The most memory the body can take once read and decoded: its declared length, or the
    limit when the length is not declared or the body is compressed. What ``read_body`` would
    refuse before reading anything is refused here already: ``BodyTooLarge`` for a declared
    length over the limit, ``UnreadableBody`` for an encoding that is not taken."""
    encoding = _encoding(request)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    return int(declared) if declared.isdigit() and encoding == IDENTITY else limit


def _encoding(request: Request) -> str:
    return body_encoding(",".join(request.headers.getlist("content-encoding")))  # every header line


async def read_body(request: Request, limit: int) -> bytes:
    """The body, decoded, refused (``BodyTooLarge``) as soon as it exceeds ``limit`` as sent or
    decoded: never read or inflated whole. ``UnreadableBody`` for an encoding that is not taken
    (before anything is read) or a corrupt compressed body."""
    encoding = _encoding(request)
    raw = await _read_raw(request, limit)
    if encoding == IDENTITY:
        return raw
    try:  # always in a thread: a few kilobytes may inflate to the whole limit
        return await asyncio.to_thread(decode, raw, encoding, limit)
    except DecodedTooLarge:
        raise BodyTooLarge(limit, decompressed=True) from None


async def _read_raw(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


SMALL_BODY_BYTES = 1024 * 1024  # settings objects, forms, token requests: far less in practice
BODY_IDLE_SECONDS = 30.0  # no byte of a body for this long: 408
BODY_SECONDS = 300.0  # a whole body within this long (10 MiB at 35 KB/s)


class BodyDeadlines:
    """ASGI middleware: a 408 for a request body that stops arriving (nothing for
    ``BODY_IDLE_SECONDS``) or is not whole after ``BODY_SECONDS``; the route sees the client gone,
    and gives back what it holds. The answer, once the body is read, is not timed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        whole_by = loop.time() + BODY_SECONDS
        body_read, stalled, started = False, "", False

        async def timed_receive() -> Message:
            nonlocal body_read, stalled
            if stalled:
                return {"type": "http.disconnect"}
            if body_read:  # what follows is a wait for the client to go away, as long as it takes
                return await receive()
            try:
                async with asyncio.timeout_at(min(whole_by, loop.time() + BODY_IDLE_SECONDS)):
                    message = await receive()
            except TimeoutError:
                stalled = (
                    f"The request body was not sent whole within {BODY_SECONDS:g} s"
                    if loop.time() >= whole_by
                    else f"The request body stopped arriving: nothing came for {BODY_IDLE_SECONDS:g} s"
                )
                if not started:
                    await send_error(scope, send, 408, stalled, close=True)
                return {"type": "http.disconnect"}
            body_read = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def answer(message: Message) -> None:
            nonlocal started
            if stalled:
                return  # the 408 was the answer
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed_receive, answer)
        except ClientDisconnect:
            if not stalled:
                raise
        if stalled:
            log.info("%s %s: %s; nothing was stored", scope["method"], scope["path"], stalled)


class BodyLimit:
    """ASGI middleware: a 413 for a body over ``limit_for(path)`` bytes, told by its Content-Length
    before anything is read, or as soon as a body without one grows past it. ``limit_for`` gives
    None for a route that reads its body within a limit of its own (``read_body``)."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int | None]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._within_limit(scope, receive, send)
        except ClientDisconnect:  # mid-body: nothing was stored, and there is no one to answer
            if (quiet := _GONE.allows()) is not None:  # a thousand at once would flood the log
                log.info(
                    "%s %s: the client went away before its body was read%s",
                    scope["method"],
                    scope["path"],
                    recurring(quiet),
                )

    async def _within_limit(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.limit_for(scope["path"]) if scope["type"] == "http" else None
        if limit is None:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _too_large(scope, send, limit)
            return
        if _has_body(headers) and _compressed(scope["headers"]):
            message = "This route takes no compressed body: send it without Content-Encoding"
            await send_error(scope, send, 415, message)
            return
        received, refused, started = 0, False, False

        async def limited_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit and not refused:
                    refused = True
                    if not started:
                        await _too_large(scope, send, limit)
                    return {"type": "http.disconnect"}  # the app stops reading; its answer is dropped
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except ClientDisconnect:
            if not refused:  # the client went away itself
                raise


def _has_body(headers: dict[bytes, bytes]) -> bool:
    declared = headers.get(b"content-length", b"0")
    return b"transfer-encoding" in headers or not declared.isdigit() or int(declared) > 0


def _compressed(headers: list[tuple[bytes, bytes]]) -> bool:
    named = b",".join(value for name, value in headers if name == b"content-encoding")
    try:
        return body_encoding(named.decode("latin-1")) != IDENTITY
    except UnreadableBody:
        return True


async def _too_large(scope: Scope, send: Send, limit: int) -> None:
    await send_error(scope, send, 413, f"The request body exceeds the limit of {limit} bytes")


async def send_error(scope: Scope, send: Send, status: int, message: str, *, close: bool = False) -> None:
    """An error answer from middleware (before any route runs): in the apps' envelope, or as a
    page for a browser's page or form (the web UI's forms get here too). ``close``: the
    connection closes after it (what is left of the request is not read as the next one)."""
    headers = dict(scope["headers"])
    if b"hx-request" in headers:  # swapped into the page: a fragment (a title would rename the tab)
        body = _ERROR_FRAGMENT.format(message=html.escape(message)).encode()
        content_type = b"text/html; charset=utf-8"
    elif b"text/html" in headers.get(b"accept", b""):
        body = _ERROR_PAGE.format(status=status, message=html.escape(message)).encode()
        content_type = b"text/html; charset=utf-8"
    else:
        body = orjson.dumps({"error": {"code": status, "message": message}})
        content_type = b"application/json"
    answer = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if close:
        answer.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": answer})
    await send({"type": "http.response.body", "body": body})


_ERROR_PAGE = (
    '<!doctype html><html lang="en"><meta charset="utf-8"><title>Error {status}</title>'
    "<p>{message}.</p><p>Nothing was changed: go back and try again.</p></html>"
)
_ERROR_FRAGMENT = "<p>{message}. Nothing was changed.</p>"


OFF_LOOP_BYTES = 64 * 1024


async def parse_off_loop(parse: Callable[[bytes], T], body: bytes) -> T:
    """``parse(body)``, in a worker thread for a large body: validating megabytes of sessions takes
    tens of milliseconds, which would otherwise stall every other request on the event loop."""
    if len(body) < OFF_LOOP_BYTES:
        return parse(body)
    return await asyncio.to_thread(parse, body)
