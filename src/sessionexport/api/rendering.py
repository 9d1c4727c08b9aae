"""JSON responses rendered with orjson; large answers gzipped for clients that take it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sessionexport.content_encoding import accepts_gzip, gzipped

GZIP_FROM_BYTES = 64 * 1024  # below this, compressing saves the client less than it costs us


class OrjsonResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except orjson.JSONEncodeError:
            # Strings decoded from a client's JSON may hold lone surrogates (valid JSON escapes,
            # invalid UTF-8); echoing them back must not fail, so escape them as JSON does.
            return json.dumps(content, separators=(",", ":")).encode()


async def large_answer(
    request: Request, body: bytes, media_type: str, headers: dict[str, str] | None = None
) -> Response:
    """``body`` (a page of sessions, a download), gzipped off the event loop when it is large and
    the client takes gzip: such bodies shrink about 7x."""
    headers = {**(headers or {}), "Vary": "Accept-Encoding"}
    if len(body) >= GZIP_FROM_BYTES and accepts_gzip(request.headers.get("accept-encoding")):
        body = await asyncio.to_thread(gzipped, body)
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type=media_type, headers=headers)


async def download(request: Request, body: bytes, media_type: str, filename: str) -> Response:
    """A file to save (``large_answer``: gzipped on the way when large; the file saved is ``body``)."""
    return await large_answer(
        request, body, media_type, {"Content-Disposition": f'attachment; filename="{filename}"'}
    )
