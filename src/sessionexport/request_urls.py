"""Request URLs at the door of the HTTP apps: those no route could serve refused (API and
receiver), and Dynatrace's environment paths taken as the API's own."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sessionexport.request_bodies import send_error


class RefuseNulInUrl:
    """ASGI middleware: 400 for a path or query string holding NUL (``%00``). It is never part of
    a real id or filter, and databases such as PostgreSQL refuse it in text: passed on, a bad
    request would come back as a storage failure."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and ("\x00" in scope["path"] or b"%00" in scope["query_string"]):
            await send_error(scope, send, 400, "NUL (%00) is not allowed in a URL")
            return
        await self.app(scope, receive, send)


class EnvironmentPaths:
    """ASGI middleware: ``/e/<environment id>/api/...`` served as ``/api/...``. Dynatrace Managed
    and ActiveGate URLs put the environment before the API, so a client configured with such a
    URL works here unchanged (this server is one environment: any id names it)."""

    _PREFIX = re.compile(r"^/e/[^/]+(?=/api/)")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (prefix := self._PREFIX.match(scope["path"])):
            raw: bytes = scope.get("raw_path") or scope["path"].encode()
            scope = {**scope, "path": scope["path"][prefix.end() :], "raw_path": raw[raw.index(b"/", 3) :]}
            send = _redirecting_within(raw[: raw.index(b"/", 3)], send)
        await self.app(scope, receive, send)


def _redirecting_within(prefix: bytes, send: Send) -> Send:
    """``send``, with a redirect to an API path (a trailing slash's) kept under ``prefix``: behind
    a proxy that forwards only ``/e/<environment id>/...``, one to ``/api/...`` leads nowhere."""

    async def send_within(message: Message) -> None:
        if message["type"] == "http.response.start" and 300 <= message["status"] < 400:
            headers = [
                (name, _within(prefix, value) if name.lower() == b"location" else value)
                for name, value in message["headers"]
            ]
            message = {**message, "headers": headers}
        await send(message)

    return send_within


def _within(prefix: bytes, location: bytes) -> bytes:
    parts = urlsplit(location)
    return (
        urlunsplit(parts._replace(path=prefix + parts.path)) if parts.path.startswith(b"/api/") else location
    )
