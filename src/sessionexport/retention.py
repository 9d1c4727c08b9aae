"""Retention: the session log keeps sessions for a bounded time (default 7 days)."""

from __future__ import annotations

import asyncio
import logging
import re

import orjson

from sessionexport.clock import now_ms
from sessionexport.export.supervisor import place_new_export
from sessionexport.export.zones import Zone, zone_from_value
from sessionexport.settings.schemas import EXPORT_SCHEMA, ZONE_SCHEMA
from sessionexport.store import Store
from sessionexport.store.records import NewAlert, SettingsRecord
from sessionexport.throttle import Throttle, recurring

log = logging.getLogger(__name__)
RETENTION_ALERT = "retention"


async def purge_expired(store: Store, retention_ms: int, now: int, open_ms: int = 0) -> int:
    """Delete sessions that joined the log more than ``retention_ms`` before ``now``, as a prefix
    of the log (up to ``Store.position_before``: no cursor is moved past a session that stays).

    An export whose cursor is still before them loses them: that is never silent. Its cursor
    (every shard of it) moves past them and an alert says how many sessions expired unexported.

    Dead letters replayed as long ago keep no body: the sessions they held were delivered, and
    are kept no longer than the log keeps them.

    RUM events of open sessions go when nothing arrived for them for the retention period, or
    ``open_ms`` when longer (as long as a session may stay open waiting for its next event: a
    retention shorter than that would drop sessions before they could complete).
    """
    exports = await store.list_settings(EXPORT_SCHEMA)
    for record in exports:  # one no exporter ran yet: it is owed them too
        await place_new_export(store, record)
    cutoff = now - retention_ms
    boundary = await store.position_before(cutoff)

    def describe(lost: int, position: int, open_title: str | None) -> NewAlert:
        total = lost + _expired_in(open_title)
        message = (
            f"Retention ({retention_ms / 86_400_000:g} days) removed sessions up to seq {boundary} that"
            f" this export had not decided yet (its cursor was at {position}): {lost} this"
            f" time, {total} since the alert opened."
        )
        return NewAlert(RETENTION_ALERT, _expired_title(total), message)

    # Counted as the cursors are moved, in one transaction each (see Store.pass_expired).
    behind = {cursor.export_id for cursor in await store.list_cursors() if cursor.position < boundary}
    zones = await _zones_of_exports(store, exports) if behind else {}
    for export_id in sorted(behind):
        owed = zone.contains if (zone := zones.get(export_id)) else None
        if lost := await store.pass_expired(export_id, boundary, now, RETENTION_ALERT, describe, owed):
            log.warning("retention: export %s loses %d unexported session(s)", export_id, lost)
    purged = await store.purge_sessions(boundary)
    if purged:
        log.info("retention: purged %d session(s) older than %g day(s)", purged, retention_ms / 86_400_000)
    if emptied := await store.purge_replayed_bodies(cutoff):
        log.info("retention: emptied the bodies of %d dead letter(s) replayed before that", emptied)
    idle_ms = max(retention_ms, open_ms)
    dropped = await store.purge_events(now - idle_ms, now)
    if dropped:  # sessions that never completed (no event for that long)
        log.warning(
            "retention: dropped %d RUM event(s) of sessions idle for %g hour(s)", dropped, idle_ms / 3_600_000
        )
    return purged


async def _zones_of_exports(store: Store, exports: list[SettingsRecord]) -> dict[str, Zone]:
    """The management zone of each export restricted to one that exists: the sessions outside it
    were never owed to the export, and expire without loss. (An export naming a zone that is gone
    exports nothing until it names one: everything it passes is counted.)"""
    zones = {record.object_id: record for record in await store.list_settings(ZONE_SCHEMA)}
    found = {}
    for record in exports:
        behavior = orjson.loads(record.value).get("exportBehavior") or {}  # no secret in it
        name = behavior.get("managementZone")
        if name and (zone := zones.get(name)):
            found[record.object_id] = zone_from_value(orjson.loads(zone.value))
    return found


def _expired_title(count: int) -> str:
    return f"{count} session(s) expired before they were exported"


_EXPIRED_TITLE = re.compile(r"(\d+) session\(s\) expired before they were exported")


def _expired_in(title: str | None) -> int:
    """What the export's open retention alert counts already: each purge adds to it, so that it
    tells all that was lost while the export did not deliver, not the last purge's share."""
    counted = _EXPIRED_TITLE.fullmatch(title) if title else None
    return int(counted[1]) if counted else 0


async def run_retention(store: Store, retention_ms: int, every_seconds: float, open_ms: int = 0) -> None:
    """Purge now and then every ``every_seconds`` until cancelled; failures are logged, not fatal."""
    failures = Throttle()
    while True:
        try:
            await purge_expired(store, retention_ms, now_ms(), open_ms)
        except Exception:
            if (quiet := failures.allows()) is not None:
                log.exception("retention: purge failed%s; will retry", recurring(quiet))
        else:
            if failures.reset():
                log.warning("retention: purges succeed again")
        await asyncio.sleep(every_seconds)
