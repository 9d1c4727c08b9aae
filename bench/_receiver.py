"""A minimal HTTPS receiver for the benchmarks (run by uvicorn in its own process).

It reads each body (inflating a gzip one), counts its lines and answers 200. With ``BENCH_RECEIVER_LOG`` set, it also
notes when each session arrived (by userSessionId), and writes that file when it stops. With
``BENCH_RECEIVER_DELAY`` (seconds), it answers each request that much later, as a distant or busy
endpoint would (requests are still served concurrently).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_SESSION_ID = re.compile(rb'"userSessionId":"([^"]*)"')
_log_path = os.environ.get("BENCH_RECEIVER_LOG")
_delay = float(os.environ.get("BENCH_RECEIVER_DELAY") or 0)
_arrivals: list[tuple[bytes, float]] = []
_count = {"sessions": 0, "requests": 0}


async def receive(request: Request) -> Response:
    body = await request.body()
    if request.headers.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    if _delay:
        await asyncio.sleep(_delay)
    _count["requests"] += 1
    _count["sessions"] += body.count(b"\n")
    if _log_path:
        now = time.time()
        _arrivals.extend((sid, now) for sid in _SESSION_ID.findall(body))
    return Response(status_code=200)


async def count(_: Request) -> Response:
    return JSONResponse(_count)


@contextlib.asynccontextmanager
async def lifespan(_: Starlette) -> AsyncIterator[None]:
    yield
    if _log_path:
        text = "".join(f"{sid.decode()} {at}\n" for sid, at in _arrivals)
        await asyncio.to_thread(Path(_log_path).write_text, text)


app = Starlette(
    routes=[Route("/export/events", receive, methods=["PUT", "POST"]), Route("/count", count)],
    lifespan=lifespan,
)
