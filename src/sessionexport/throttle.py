"""Saying a recurring failure now and then, not each time: a sender that retries against a full
disk, or a background loop that retries every second while the database is down, would otherwise
fill the log (on that very disk, perhaps)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class Throttle:
    def __init__(self, every_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every_seconds
        self.clock = clock
        self._last = -math.inf
        self._quiet = 0

    def allows(self) -> int | None:
        """None: keep quiet this time; else how many times it kept quiet since it last allowed."""
        now = self.clock()
        if now - self._last < self.every:
            self._quiet += 1
            return None
        quiet, self._last, self._quiet = self._quiet, now, 0
        return quiet

    def reset(self) -> bool:
        """A success: the next failure is said at once. True when failures had been said since
        the last success (worth saying that they stopped)."""
        failing = self._last != -math.inf
        self._last, self._quiet = -math.inf, 0
        return failing


def recurring(quiet: int) -> str:
    """What to add to a message that ``Throttle.allows`` let through."""
    return f" (and {quiet} more time(s) since it was last said)" if quiet else ""
