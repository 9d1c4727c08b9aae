"""Request bodies read as strict JSON (RFC 8259), the same reader ingest uses.

FastAPI reads a JSON body with the standard library, which takes ``NaN``, ``Infinity`` and
numbers too large for a float (as ``inf``) and passes lone surrogate escapes on as text: none of
them can be stored or sent on as JSON, so such a body is refused where it is read, with the byte
at which it went wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from sessionexport.ingest.documents import UTF8_BOM


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            # orjson.JSONDecodeError is a json.JSONDecodeError: FastAPI answers it as invalid JSON.
            # A byte order mark (files saved on Windows) is no JSON, but was always taken.
            self._json = orjson.loads((await self.body()).removeprefix(UTF8_BOM))
        return self._json


class StrictJsonRoute(APIRoute):
    """A route whose JSON body is read by ``StrictJsonRequest`` (``APIRouter(route_class=...)``)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handle(StrictJsonRequest(request.scope, request.receive))

        return strict_handler
