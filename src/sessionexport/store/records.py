"""The plain records that cross the storage interface."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from sessionexport.clock import DAY_MS


@dataclass(frozen=True, slots=True)
class NewSession:
    """A validated session about to join the log, with the attributes extracted for filtering."""

    tenant_id: str
    user_session_id: str
    start_time: int
    end_time: int | None
    user_id: str | None
    user_type: str | None
    application_type: str | None
    country: str | None
    applications: tuple[str, ...]
    body: bytes


@dataclass(frozen=True, slots=True)
class StoredSession:
    seq: int
    tenant_id: str
    user_session_id: str
    start_time: int
    end_time: int | None
    received_at: int
    body: bytes


@dataclass(frozen=True, slots=True)
class AppendResult:
    accepted: int
    duplicates: int


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: str
    name: str
    scopes: frozenset[str]
    secret_hash: bytes
    created_at: int
    revoked_at: int | None = None
    expires_at: int | None = None  # epoch ms; None: never

    def row(self) -> tuple[Any, ...]:
        """The values of TOKEN_COLUMNS (scopes comma-separated)."""
        scopes = ",".join(sorted(self.scopes))
        return (
            self.id,
            self.name,
            scopes,
            self.secret_hash,
            self.created_at,
            self.revoked_at,
            self.expires_at,
        )

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> TokenRecord:
        token_id, name, scopes, secret_hash, created_at, revoked_at, expires_at = row
        return cls(
            token_id,
            name,
            frozenset(filter(None, scopes.split(","))),
            secret_hash,
            created_at,
            revoked_at,
            expires_at,
        )


TOKEN_COLUMNS = "id, name, scopes, secret_hash, created_at, revoked_at, expires_at"  # noqa: S105 (column names)


@dataclass(frozen=True, slots=True)
class SettingsRecord:
    """A settings object as stored: ``value`` is JSON with its secrets encrypted."""

    object_id: str
    schema_id: str
    scope: str
    external_id: str | None
    value: str
    schema_version: str
    created: int
    modified: int
    created_by: str
    modified_by: str
    version: int


class LogEntry(msgspec.Struct, frozen=True, gc=False):
    """A session as the exporter reads it: its place in the log, filter attributes and bytes.

    A msgspec Struct: one is built per session read, and it builds several times faster than a
    frozen dataclass (``gc=False``: it never holds a reference cycle)."""

    seq: int
    received_at: int
    tenant_id: str
    user_session_id: str
    start_time: int
    user_type: str | None
    application_type: str | None
    country: str | None
    applications: tuple[str, ...]
    body: bytes


@dataclass(frozen=True, slots=True)
class Cursor:
    """One shard's cursor, or (``get_cursor``) an export's: its slowest shard's position, its
    shards' counts summed, the latest success and error of any."""

    export_id: str
    position: int
    last_success_at: int | None = None
    last_error_at: int | None = None
    last_error: str | None = None
    delivered: int = 0
    failed: int = 0  # sessions dead-lettered
    retried: int = 0  # Elasticsearch items sent again after a 429 / 5xx
    shard: int = 0
    shards: int = 1


@dataclass(frozen=True, slots=True)
class Claim:
    """What an exporter works on and in whose name: shard ``shard`` of ``shards`` of an export
    (the sessions whose seq % shards == shard), under ``owner``'s lease."""

    export_id: str
    shard: int
    shards: int
    owner: str


@dataclass(frozen=True, slots=True)
class Lease:
    """Who exports a shard of an export, until when (epoch ms by the database's clock)."""

    export_id: str
    shard: int
    owner: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class WorkState:
    """What a heartbeat sees: the live workers (sorted) and every live lease."""

    workers: tuple[str, ...]
    leases: tuple[Lease, ...]


@dataclass(frozen=True, slots=True)
class LogRead:
    """Sessions of one shard after a position, in seq order, and how far they cover the log:
    every session of the shard with a seq up to ``end`` is among them (or before the position)."""

    entries: list[LogEntry]
    end: int


INT_MAX = 2**63 - 1  # the largest integer a column holds (SQLite INTEGER, PostgreSQL bigint)
HISTORY_MS = DAY_MS  # how far back delivery counts per minute are kept


@dataclass(frozen=True, slots=True)
class DeliveryMinute:
    """Sessions of one export decided within one minute (``minute``: epoch ms, floored)."""

    minute: int
    delivered: int
    failed: int


@dataclass(frozen=True, slots=True)
class NewDeadLetter:
    export_id: str
    created_at: int
    first_seq: int
    last_seq: int
    sessions: list[tuple[str, str, int]]
    content_type: str
    body: bytes
    reason: str
    attempts: list[dict[str, object]]


@dataclass(frozen=True, slots=True)
class NewAlert:
    """An alert to raise, or to bump when one of its ``kind`` is open for the export already."""

    kind: str
    title: str
    message: str


@dataclass(frozen=True, slots=True)
class BulkDecision:
    """What became of one bulk: delivered sessions, retried items, the dead letters of the rest,
    and the alerts that opens (``alerts``) or closes (``closes``: kinds)."""

    delivered: int
    retried: int = 0
    letters: tuple[NewDeadLetter, ...] = ()
    alerts: tuple[NewAlert, ...] = ()
    closes: tuple[str, ...] = ()

    @property
    def failed(self) -> int:
        return sum(len(letter.sessions) for letter in self.letters)


@dataclass(frozen=True, slots=True)
class DeadLetter(NewDeadLetter):
    id: int = 0
    state: str = "pending"
    replayed_at: int | None = None


@dataclass(frozen=True, slots=True)
class ListedDeadLetter:
    """A dead letter as lists show it: its fields in ``DeadLetter``'s order, but the body (up to a
    whole bulk) only by its size."""

    export_id: str
    created_at: int
    first_seq: int
    last_seq: int
    sessions: list[tuple[str, str, int]]
    content_type: str
    size: int
    reason: str
    attempts: list[dict[str, object]]
    id: int
    state: str
    replayed_at: int | None


@dataclass(frozen=True, slots=True)
class Alert:
    id: int
    export_id: str
    kind: str
    title: str
    message: str
    opened_at: int
    last_seen_at: int
    occurrences: int
    closed_at: int | None


@dataclass(frozen=True, slots=True)
class NewEvent:
    """A validated RUM event about to be kept until its session is complete."""

    tenant_id: str
    session_id: str
    event_id: str
    ts: int
    kind: str
    body: bytes


@dataclass(frozen=True, slots=True)
class EventsResult:
    accepted: int
    duplicates: int
    late: int  # for a part already completed: counted, not kept
    overflow: int = 0  # beyond what an open session may hold: counted, not kept


@dataclass(frozen=True, slots=True)
class OpenSession:
    tenant_id: str
    session_id: str
    part: int  # parts completed so far
    split: bool  # a limit already split this session into parts
    events: list[bytes]
    last_start: int | None = None  # startTime of the last completed part
    arrivals: int = 0  # events accepted so far (a version: see CompletedPart.seen_arrivals)
    last_arrival: int | None = None  # server time the latest event came in
    clock_lag: int | None = None  # how far behind the server's clock its device stamps events (ms)
    parts_before: int = 0  # of ``part``, those of earlier sessions under this id (ended ones)


@dataclass(frozen=True, slots=True)
class CompletedPart:
    """What the sessionizer decided for an open session: the session it became (None: nothing
    yet), the events that went into it, and when to look at the session again."""

    tenant_id: str
    session_id: str
    session: NewSession | None
    consumed: tuple[str, ...]  # event ids
    completed_until: int | None
    split: bool
    check_at: int | None
    start: int | None = None  # the completed session's startTime
    seen_arrivals: int | None = None  # written only if no event arrived since the session was read
    seen_part: int | None = None  # ... and no other worker completed a part of it meanwhile


def open_session_changed(part: CompletedPart, stored: tuple[int, int] | None) -> bool:
    """Whether the open session, as stored now (``(arrivals, part)``, None when gone), is no longer
    the one ``part`` was decided on: events arrived, or another worker completed a part of it
    (then its decision, made on the same events, is already written)."""
    if stored is None:
        return part.seen_arrivals is not None
    arrivals, parts = stored
    return part.seen_arrivals not in (None, arrivals) or part.seen_part not in (None, parts)
