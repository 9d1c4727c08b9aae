"""Wakes exporters when sessions join the log, so that they need not poll while idle."""

from __future__ import annotations

import asyncio
import contextlib


class LogNotifier:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        """Wake every current waiter (each waits on the event it found)."""
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, seconds: float) -> None:
        """Return when notified or after ``seconds``, whichever comes first."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._event.wait()
