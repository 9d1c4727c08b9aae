"""The storage interface. Every backend (SQLite embedded default, PostgreSQL) implements it.

Methods are coroutines so that no backend can block the event loop; each call is one
transaction. Times are epoch milliseconds, passed in by the caller so that rules stay testable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sessionexport.store.records import (
    Alert,
    AppendResult,
    BulkDecision,
    CompletedPart,
    Cursor,
    DeadLetter,
    EventsResult,
    LogEntry,
    NewEvent,
    NewSession,
    OpenSession,
    SettingsRecord,
    StoredSession,
    TokenRecord,
)


class StoreError(Exception):
    """The storage backend failed (unreachable, corrupt, full...)."""


class VersionConflict(Exception):
    """The object changed (or vanished) since the version the caller read."""


class TooManyObjects(Exception):
    """The schema already holds its maximum number of objects."""


class Store(Protocol):
    async def open(self) -> None:
        """Connect and bring the schema up to date."""

    async def close(self) -> None:
        """Finish pending writes and release connections."""

    # -- session log -------------------------------------------------------------------------
    async def append_sessions(self, sessions: Sequence[NewSession], received_at: int) -> AppendResult:
        """Append all sessions in one transaction; a known identity counts as a duplicate."""

    async def recent_sessions(
        self, *, user_session_id: str | None = None, before_seq: int | None = None, limit: int = 100
    ) -> list[StoredSession]:
        """Sessions newest first, optionally one user session id only, below a seq."""

    async def count_sessions(self) -> int: ...

    async def purge_sessions(self, received_before: int) -> int:
        """Delete sessions that joined the log before the given time; return how many."""

    async def last_seq_before(self, received_before: int) -> int:
        """The highest seq of the sessions that joined the log before the given time (0: none)."""

    async def count_between(self, after_seq: int, up_to_seq: int) -> int:
        """Sessions with after_seq < seq <= up_to_seq."""

    # -- RUM events and open sessions --------------------------------------------------------
    async def add_events(self, events: Sequence[NewEvent], now: int, check_at: int) -> EventsResult:
        """Keep events (all in one transaction); their sessions are looked at again at ``check_at``."""

    async def due_sessions(self, now: int, limit: int) -> list[OpenSession]:
        """Open sessions to look at now (``check_at`` passed), with their events."""

    async def complete_part(self, part: CompletedPart, received_at: int) -> AppendResult:
        """In one transaction: append the completed session to the log, drop the events it used,
        note how far the session is completed and when to look at it again."""

    async def purge_events(self, received_before: int) -> int:
        """Drop events and open-session rows nothing arrived for since ``received_before``."""

    # -- API tokens --------------------------------------------------------------------------
    async def add_token(self, token: TokenRecord) -> None: ...

    async def get_token(self, token_id: str) -> TokenRecord | None: ...

    async def list_tokens(self) -> list[TokenRecord]: ...

    async def revoke_token(self, token_id: str, revoked_at: int) -> bool:
        """Revoke a token; False when there is no such active token."""

    # -- settings objects --------------------------------------------------------------------
    async def list_settings(self, schema_id: str | None = None) -> list[SettingsRecord]:
        """Objects (of one schema, or all), oldest first."""

    async def get_setting(self, object_id: str) -> SettingsRecord | None: ...

    async def insert_setting(self, record: SettingsRecord, max_objects: int) -> None:
        """Insert, atomically refusing with TooManyObjects when the schema is full."""

    async def update_setting(self, record: SettingsRecord, expected_version: int) -> None:
        """Replace the object if it is still at ``expected_version``, else VersionConflict."""

    async def delete_setting(self, object_id: str, expected_version: int | None) -> bool:
        """Delete (if at ``expected_version`` when given, else VersionConflict); False if absent."""

    # -- export cursors (one consumer of the session log per export) ------------------------
    async def log_position(self) -> int:
        """The highest seq in the log (0 when empty): where a new export starts by default."""

    async def position_before(self, received_at: int) -> int:
        """The seq just before the first session received at or after the given time (backfill)."""

    async def ensure_cursor(self, export_id: str, position: int, now: int) -> Cursor:
        """The export's cursor, created at ``position`` when it has none yet."""

    async def get_cursor(self, export_id: str) -> Cursor | None: ...

    async def list_cursors(self) -> list[Cursor]: ...

    async def move_cursor(self, export_id: str, position: int, now: int) -> None:
        """Set the cursor anywhere (backfill, replay from a point, skip ahead), creating it if needed."""

    async def delete_cursor(self, export_id: str) -> None: ...

    async def read_log(self, after_seq: int, limit: int) -> list[LogEntry]:
        """Up to ``limit`` sessions after ``after_seq``, in seq order."""

    async def recent_log(
        self, received_since: int, limit: int, before_seq: int | None = None
    ) -> list[LogEntry]:
        """Up to ``limit`` sessions that joined the log at or after ``received_since``, newest first."""

    async def backlog(self, after_seq: int) -> tuple[int, int | None]:
        """(sessions after ``after_seq``, received_at of the first of them or None)."""

    async def record_bulk(self, export_id: str, position: int, decision: BulkDecision, now: int) -> list[int]:
        """A bulk was decided: keep its dead letters, count its sessions, move the cursor, all in one
        transaction; return the dead letters' ids."""

    async def record_skip(self, export_id: str, position: int, now: int) -> None:
        """Sessions up to ``position`` were filtered out: move the cursor only."""

    async def record_error(self, export_id: str, message: str, now: int) -> None:
        """Note a failed attempt (the cursor stays)."""

    # -- dead letters ------------------------------------------------------------------------
    async def list_dead_letters(
        self, export_id: str, *, state: str | None = None, limit: int = 100, before_id: int | None = None
    ) -> list[DeadLetter]: ...

    async def get_dead_letter(self, letter_id: int) -> DeadLetter | None: ...

    async def count_dead_letters(self, export_id: str, state: str = "pending") -> int: ...

    async def finish_replay(
        self, letter_id: int, attempts: list[dict[str, object]], delivered: bool, now: int
    ) -> None:
        """Append a replay's attempts; mark the letter replayed when it was delivered."""

    # -- alerts ------------------------------------------------------------------------------
    async def raise_alert(self, export_id: str, kind: str, title: str, message: str, now: int) -> None:
        """Open an alert, or bump the open one of that export and kind."""

    async def close_alerts(self, export_id: str, kind: str, now: int) -> int: ...

    async def list_alerts(self, *, open_only: bool = False, limit: int = 200) -> list[Alert]: ...
