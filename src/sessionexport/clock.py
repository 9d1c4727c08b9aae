"""Wall-clock time in epoch milliseconds, the unit of every timestamp in sessionexport."""

import time
from datetime import UTC, datetime

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def utc_text(epoch_ms: int | None) -> str:
    """``2026-11-26 15:08:22 UTC``; an em dash for never."""
    if epoch_ms is None:
        return "—"
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
