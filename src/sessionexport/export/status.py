"""What the status route and the UI's health page say about one export: state, counts, backlog,
lag, last success and error, dead letters and open alerts. Read from the store, so it is true in
every process that shares it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sessionexport.export.config import ExportConfig
from sessionexport.export.metrics import ExportState
from sessionexport.export.supervisor import ExportSupervisor, starting_position
from sessionexport.store import Store
from sessionexport.store.records import Alert, Cursor


@dataclass(frozen=True)
class ExportHealth:
    object_id: str
    endpoint_url: str
    state: ExportState
    position: int | None
    backlog: int
    lag_seconds: float | None
    delivered: int
    failed: int
    replayed: int
    retried: int
    last_success: int | None
    last_error: str | None
    last_error_at: int | None
    dead_letters: int
    open_alerts: list[Alert]

    def as_json(self) -> dict[str, Any]:
        return {
            "objectId": self.object_id,
            "endpointUrl": self.endpoint_url,
            "state": self.state,
            "position": self.position,
            "backlog": self.backlog,
            "lagSeconds": self.lag_seconds,
            "deliveredSessions": self.delivered,
            "failedSessions": self.failed,
            "replayedSessions": self.replayed,
            "retriedItems": self.retried,
            "lastSuccess": self.last_success,
            "lastError": self.last_error,
            "lastErrorAt": self.last_error_at,
            "deadLetters": self.dead_letters,
            "openAlerts": [alert_json(a) for a in self.open_alerts],
        }


async def export_running(store: Store, supervisor: ExportSupervisor | None, export_id: str) -> bool:
    """Whether a worker exports it: asked of this process's supervisor when it runs exporters (it
    knows the other workers' leases too), else of the leases in the store."""
    if supervisor is not None:
        return supervisor.is_running(export_id)
    return any(lease.export_id == export_id for lease in await store.list_leases())


async def export_health(store: Store, config: ExportConfig, running: bool, now: int) -> ExportHealth:
    """``running``: whether a worker exports it (``export_running``)."""
    cursor = await store.get_cursor(config.export_id)
    backlog, lag = await backlog_and_lag(store, config.export_id, now)
    alerts = [a for a in await store.list_alerts(open_only=True) if a.export_id == config.export_id]
    # An export that raises no alerts (disableNotification) is failing by its cursor alone.
    failing = bool(alerts) or (config.disable_notification and _failed_last(cursor))
    return ExportHealth(
        object_id=config.export_id,
        endpoint_url=config.endpoint_url,
        state=_state(config.enabled, running, failing),
        position=cursor.position if cursor else None,
        backlog=backlog,
        lag_seconds=lag,
        delivered=cursor.delivered if cursor else 0,
        failed=cursor.failed if cursor else 0,
        replayed=await store.replayed_sessions(config.export_id),
        retried=cursor.retried if cursor else 0,
        last_success=cursor.last_success_at if cursor else None,
        last_error=cursor.last_error if cursor else None,
        last_error_at=cursor.last_error_at if cursor else None,
        dead_letters=await store.count_dead_letters(config.export_id),
        open_alerts=alerts,
    )


async def backlog_and_lag(store: Store, export_id: str, now: int) -> tuple[int, float | None]:
    """Sessions not yet decided (after their shard's cursor), and the age in seconds of the oldest
    of them (None: caught up). An export no exporter ran for yet has no cursor: counted from where
    its cursor will be placed."""
    shards = [(c.position, c.shard, c.shards) for c in await store.list_cursors() if c.export_id == export_id]
    if not shards and (record := await store.get_setting(export_id)) is not None:
        shards = [(await starting_position(store, record), 0, 1)]
    behind = [await store.backlog(*shard) for shard in shards]
    first = [first_at for _, first_at in behind if first_at is not None]
    lag = max(0.0, round((now - min(first)) / 1000, 3)) if first else None  # a host's clock ahead: 0
    return sum(count for count, _ in behind), lag


def _failed_last(cursor: Cursor | None) -> bool:
    """Whether it failed after its last delivery (until one succeeds again)."""
    if cursor is None or cursor.last_error_at is None:
        return False
    return cursor.last_success_at is None or cursor.last_error_at > cursor.last_success_at


def _state(enabled: bool, running: bool, alerting: bool) -> ExportState:
    if not enabled:
        return "paused"
    if not running:
        return "stopped"
    return "failing" if alerting else "running"


def alert_json(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.id,
        "objectId": alert.export_id,
        "kind": alert.kind,
        "title": alert.title,
        "message": alert.message,
        "openedAt": alert.opened_at,
        "lastSeenAt": alert.last_seen_at,
        "occurrences": alert.occurrences,
        "closedAt": alert.closed_at,
        "state": "open" if alert.closed_at is None else "closed",
    }
