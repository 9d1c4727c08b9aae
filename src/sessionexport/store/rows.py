"""How records lie in the tables, the same on both backends: the columns each is read from or
written to, in order, and the conversions between rows and records. (The statements around
them differ, by placeholder style and dialect; these must not.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import orjson

from sessionexport.store.records import Claim, Cursor, DeadLetter, ListedDeadLetter, LogEntry, SettingsRecord

L = TypeVar("L", DeadLetter, ListedDeadLetter)

STORED_SESSION_COLUMNS = "seq, tenant_id, user_session_id, start_time, end_time, received_at, body"
LOG_ENTRY_COLUMNS = (
    "seq, received_at, tenant_id, user_session_id, start_time, user_type, application_type, country,"
    " applications, body"
)
CURSOR_COLUMNS = "export_id, position, last_success_at, last_error_at, last_error, delivered, failed, retried, shard, shards"
LEASE_COLUMNS = "export_id, shard, owner, expires_at"
DEAD_LETTER_COLUMNS = (
    "export_id, created_at, first_seq, last_seq, sessions, content_type, body, reason, attempts, id, state,"
    " replayed_at"
)
# DEAD_LETTER_COLUMNS with the body's size for the body: length() counts the bytes of a BLOB
# (SQLite) or bytea (PostgreSQL) without reading the body out.
LISTED_DEAD_LETTER_COLUMNS = (
    "export_id, created_at, first_seq, last_seq, sessions, content_type, length(body), reason, attempts, id,"
    " state, replayed_at"
)
SETTINGS_COLUMNS = (
    "object_id, schema_id, scope, external_id, value, schema_version, created, modified, created_by,"
    " modified_by, version"
)
ALERT_COLUMNS = "id, export_id, kind, title, message, opened_at, last_seen_at, occurrences, closed_at"


def log_entry(row: tuple[Any, ...]) -> LogEntry:
    """A row of LOG_ENTRY_COLUMNS (applications: a JSON list)."""
    seq, received_at, tenant_id, user_session_id, start_time, user_type, app_type, country, apps, body = row
    return LogEntry(
        seq,
        received_at,
        tenant_id,
        user_session_id,
        start_time,
        user_type,
        app_type,
        country,
        tuple(orjson.loads(apps)),
        body,
    )


def dead_letter(row: tuple[Any, ...]) -> DeadLetter:
    """A row of DEAD_LETTER_COLUMNS (sessions and attempts: JSON)."""
    return _letter(DeadLetter, row)


def listed_dead_letter(row: tuple[Any, ...]) -> ListedDeadLetter:
    """A row of LISTED_DEAD_LETTER_COLUMNS: as ``dead_letter``, with the body's size for the body."""
    return _letter(ListedDeadLetter, row)


def _letter(kind: Callable[..., L], row: tuple[Any, ...]) -> L:
    export_id, created_at, first_seq, last_seq, sessions, content_type, body, reason, attempts, *rest = row
    return kind(
        export_id,
        created_at,
        first_seq,
        last_seq,
        [tuple(s) for s in orjson.loads(sessions)],
        content_type,
        body,
        reason,
        orjson.loads(attempts),
        *rest,
    )


def cursor_values(c: Cursor) -> tuple[Any, ...]:
    """The values of CURSOR_COLUMNS."""
    return (
        c.export_id,
        c.position,
        c.last_success_at,
        c.last_error_at,
        c.last_error,
        c.delivered,
        c.failed,
        c.retried,
        c.shard,
        c.shards,
    )


def settings_values(r: SettingsRecord) -> tuple[Any, ...]:
    """The values of SETTINGS_COLUMNS."""
    return (
        r.object_id,
        r.schema_id,
        r.scope,
        r.external_id,
        r.value,
        r.schema_version,
        r.created,
        r.modified,
        r.created_by,
        r.modified_by,
        r.version,
    )


def claim_params(claim: Claim, position: int, now: int) -> dict[str, Any]:
    """The named parameters of a statement that writes a claimed shard's cursor."""
    return {
        "export_id": claim.export_id,
        "shard": claim.shard,
        "shards": claim.shards,
        "position": position,
        "now": now,
    }
