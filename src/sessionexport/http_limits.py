"""uvicorn's HTTP/1.1 protocol (httptools) with bounds on a request's head.

httptools takes a request line and headers of any size, for as long as they take to arrive: one
client could make a server hold gigabytes of headers, or connections for ever, before any route
(or token check) sees the request. Here a head (request line and headers) larger than
``MAX_HEAD_BYTES`` gets 431, and one not complete ``HEAD_TIMEOUT_SECONDS`` after it began (or
after the connection was made) gets 408; both close the connection. Bodies are bounded where
they are read (``request_bodies``).
"""

from __future__ import annotations

import asyncio
import http

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT_SECONDS = 30.0


class _HeadTooLarge(Exception):
    """Raised in a parser callback to stop parsing; httptools reports it as a parser error."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    _head_bytes = 0
    _refusal: http.HTTPStatus | None = None
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_arrived()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._await_head()

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_arrived()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._head_arrived()  # the keep-alive timeout now closes an idle connection

    def send_400_response(self, msg: str) -> None:
        if self._refusal is None:
            super().send_400_response(msg)
        else:  # the parser stopped at a head too large: say so, not "invalid request"
            self._refuse(self._refusal, f"request line and headers over {MAX_HEAD_BYTES} bytes")

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refusal = http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
            raise _HeadTooLarge

    def _await_head(self) -> None:
        self._head_arrived()
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT_SECONDS, self._head_timed_out)

    def _head_arrived(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            seconds = f"{HEAD_TIMEOUT_SECONDS:g}"
            self._refuse(
                http.HTTPStatus.REQUEST_TIMEOUT, f"request line and headers not sent within {seconds} s"
            )

    def _refuse(self, status: http.HTTPStatus, message: str) -> None:
        body = message.encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status.value, status.phrase.encode(), len(body), body)
        )
        self.transport.close()
