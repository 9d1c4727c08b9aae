"""Wakes exporters when sessions join the log, so that they need not poll while idle."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable


class LogNotifier:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        """Wake every current waiter (each waits on the event it found)."""
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, seconds: float | None) -> None:
        """Return when notified or after ``seconds``, whichever comes first."""
        await wait_for_at_most(self._event.wait(), seconds)


async def wait_for_at_most(awaitable: Awaitable[object], seconds: float | None) -> bool:
    """Await for at most ``seconds``; True when it finished.

    Unlike ``asyncio.timeout`` on Python 3.11, a cancellation that arrives as the time runs out
    is never mistaken for the timeout, so loops built on this always stop when cancelled.
    """
    waiter = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait([waiter], timeout=seconds)
    finally:
        if not waiter.done():
            waiter.cancel()
    return bool(done)
