"""Retention: the session log keeps sessions for a bounded time (default 7 days)."""

from __future__ import annotations

import asyncio
import logging

from sessionexport.clock import now_ms
from sessionexport.store import Store

log = logging.getLogger(__name__)


async def purge_expired(store: Store, retention_ms: int, now: int) -> int:
    """Delete sessions that joined the log more than ``retention_ms`` before ``now``."""
    purged = await store.purge_sessions(now - retention_ms)
    if purged:
        log.info("retention: purged %d session(s) older than %.1f day(s)", purged, retention_ms / 86_400_000)
    return purged


async def run_retention(store: Store, retention_ms: int, every_seconds: float) -> None:
    """Purge now and then every ``every_seconds`` until cancelled; failures are logged, not fatal."""
    while True:
        try:
            await purge_expired(store, retention_ms, now_ms())
        except Exception:
            log.exception("retention: purge failed; will retry")
        await asyncio.sleep(every_seconds)
