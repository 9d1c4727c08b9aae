"""Request bodies read as strict JSON (RFC 8259), the same reader ingest uses.

FastAPI reads a JSON body with the standard library, which takes ``NaN``, ``Infinity`` and
numbers too large for a float (as ``inf``) and passes lone surrogate escapes on as text: none of
them can be stored or sent on as JSON, so such a body is refused where it is read, with the byte
at which it went wrong. So is one nested deeper than any settings value is: the settings code
copies and walks values recursively, and Python's recursion would give out first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from sessionexport.ingest.documents import UTF8_BOM

MAX_DEPTH = 64  # of arrays and objects; a settings value needs a handful
_STRING_OR_BRACKET = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            # orjson.JSONDecodeError is a json.JSONDecodeError: FastAPI answers it as invalid JSON.
            # A byte order mark (files saved on Windows) is no JSON, but was always taken.
            body = (await self.body()).removeprefix(UTF8_BOM)
            value = orjson.loads(body)
            if deeper_than(value, MAX_DEPTH):
                raise json.JSONDecodeError(f"nested deeper than {MAX_DEPTH} levels", "", too_deep_at(body))
            self._json = value
        return self._json


def deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` deep (without recursing: that is the point)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


def too_deep_at(body: bytes) -> int:
    """The byte offset of the first bracket nested deeper than ``MAX_DEPTH`` (strings skipped)."""
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(body):
        token = match[0]
        if token in (b"[", b"{"):
            depth += 1
            if depth > MAX_DEPTH:
                return match.start()
        elif token in (b"]", b"}"):
            depth -= 1
    return 0


class StrictJsonRoute(APIRoute):
    """A route whose JSON body is read by ``StrictJsonRequest`` (``APIRouter(route_class=...)``)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handle(StrictJsonRequest(request.scope, request.receive))

        return strict_handler
