"""uvicorn's HTTP/1.1 protocol (httptools) with bounds on a request's head.

httptools takes a request line and headers of any size, for as long as they take to arrive (a
header value without its line end grows in memory, copied over at every read): one client could
make a server hold gigabytes, or connections for ever, before any route or token check sees the
request. Here the bytes of a head are counted as they arrive, before the parser sees them: over
``MAX_HEAD_BYTES`` the request gets 431; a head not complete ``HEAD_TIMEOUT_SECONDS`` after the
connection was made, or after the previous answer on it, gets 408. Both close the connection.
Bodies are bounded where they are read (``request_bodies``).
"""

from __future__ import annotations

import asyncio
import http
import re

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT_SECONDS = 30.0
_HEAD_END = re.compile(rb"\r?\n\r?\n")


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    _head_open = True  # bytes that arrive now belong to a request's head
    _head_bytes = 0
    _tail = b""  # the last bytes of the head so far: its end may come split over two reads
    _head_started = False  # a head began and is not complete (pipelined: maybe while answering)
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_arrived()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._head_open and self._head_too_large(data):
            self._refuse(http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"over {MAX_HEAD_BYTES} bytes")
            return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_started = True
        if not self._answering():  # else timed once the answer under way is sent
            self._await_head()

    def on_headers_complete(self) -> None:
        self._head_started = False
        self._head_arrived()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_open, self._head_bytes, self._tail = True, 0, b""  # the next request's head

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._head_started:  # a pipelined head, begun while this answer was sent
            self._await_head()
        else:
            self._head_arrived()  # the keep-alive timeout now closes an idle connection

    def _head_too_large(self, data: bytes) -> bool:
        """Count ``data`` up to where the head ends (if it ends in it): over the bound?"""
        if not self._head_bytes and not self._tail:
            data = data.lstrip(b"\r\n")  # blank lines before a request line end no head
        seen = self._tail + data
        end = _HEAD_END.search(seen)
        if end is None:
            self._head_bytes += len(data)
            self._tail = seen[-3:]
        else:
            self._head_bytes += max(0, end.end() - len(self._tail))
            self._head_open = False  # until this request's message is complete
        return self._head_bytes > MAX_HEAD_BYTES

    def _answering(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _await_head(self) -> None:
        self._head_arrived()
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT_SECONDS, self._head_timed_out)

    def _head_arrived(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing() and not self._answering():
            self._refuse(http.HTTPStatus.REQUEST_TIMEOUT, f"not sent within {HEAD_TIMEOUT_SECONDS:g} s")

    def _refuse(self, status: http.HTTPStatus, why: str) -> None:
        body = f"request line and headers {why}".encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status.value, status.phrase.encode(), len(body), body)
        )
        self.transport.close()
