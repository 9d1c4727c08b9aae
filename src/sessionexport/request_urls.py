"""Request URLs that no route could serve, refused at the door of both HTTP apps (API and receiver)."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from sessionexport.request_bodies import send_error


class RefuseNulInUrl:
    """ASGI middleware: 400 for a path or query string holding NUL (``%00``). It is never part of
    a real id or filter, and databases such as PostgreSQL refuse it in text: passed on, a bad
    request would come back as a storage failure."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and ("\x00" in scope["path"] or b"%00" in scope["query_string"]):
            await send_error(send, 400, "NUL (%00) is not allowed in a URL")
            return
        await self.app(scope, receive, send)
