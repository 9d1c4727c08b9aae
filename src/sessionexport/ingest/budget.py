"""How many bytes of request bodies the ingest routes hold at once.

Each request reserves what its body may take before reading it (its ``Content-Length``, or the
body limit when the length is not known or the body is compressed) and gives it back once
answered. A request that does not fit waits, and its body is not read meanwhile, so TCP holds the
sender back; one that still does not fit after ``wait_seconds`` is refused (``Busy``), to be sent
again. However many senders push at once, the server's memory for bodies stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class Busy(Exception):
    """No room for this body within the wait."""


class BodyBudget:
    def __init__(self, limit_bytes: int, wait_seconds: float) -> None:
        self.limit = limit_bytes
        self.wait_seconds = wait_seconds
        self.used = 0
        self._freed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def reserve(self, size: int) -> AsyncIterator[None]:
        """Hold ``size`` bytes of the budget (at most all of it) for the block's duration."""
        size = min(size, self.limit)  # a body larger than the whole budget waits for all of it
        async with self._freed:
            try:
                await asyncio.wait_for(
                    self._freed.wait_for(lambda: self.used + size <= self.limit), self.wait_seconds
                )
            except TimeoutError:
                raise Busy(f"{self.used} of {self.limit} bytes of request bodies in progress") from None
            self.used += size
        try:
            yield
        finally:
            async with self._freed:
                self.used -= size
                self._freed.notify_all()
