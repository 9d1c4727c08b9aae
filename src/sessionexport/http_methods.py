"""The methods a path takes: HEAD wherever GET is, and all of them named when one is refused.

FastAPI routes take only the methods they name: HEAD got 405 (monitors probe with it). And where
a path has a route per method (the API's, the UI's GET and POST), a 405 named the methods of the
first of them alone.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGet:
    """ASGI middleware: a HEAD request is answered as its GET is, without the body (RFC 9110 §9.3.2)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


def allowed_methods(request: Request) -> str:
    """Every method the request's path takes (the ``Allow`` of a 405), HEAD with GET: each asked of
    the app's routes as a request of that method would be."""
    routes = [route for route in request.app.router.routes if not isinstance(route, Mount)]
    methods = {
        method
        for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
    }
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


_METHODS = ("DELETE", "GET", "PATCH", "POST", "PUT")
