"""Reading a request body with a size limit, for both HTTP apps (the API and the receiver)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from starlette.requests import Request

T = TypeVar("T")


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body over {limit} bytes")
        self.limit = limit


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused (``BodyTooLarge``) as soon as it exceeds ``limit``: never read whole."""
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


OFF_LOOP_BYTES = 64 * 1024


async def parse_off_loop(parse: Callable[[bytes], T], body: bytes) -> T:
    """``parse(body)``, in a worker thread for a large body: validating megabytes of sessions takes
    tens of milliseconds, which would otherwise stall every other request on the event loop."""
    if len(body) < OFF_LOOP_BYTES:
        return parse(body)
    return await asyncio.to_thread(parse, body)
