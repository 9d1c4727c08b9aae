"""The storage interface. Every backend (SQLite embedded default, PostgreSQL) implements it.

Methods are coroutines so that no backend can block the event loop; each call is one
transaction. Times are epoch milliseconds, passed in by the caller so that rules stay testable,
except lease expiry: that is judged by the database's clock, the one clock every process sharing
the database agrees on.

Work distribution: an export's log is split into ``shards`` (seq % shards), each with a cursor of
its own and a lease; a worker exports a shard only while it holds its lease, and every cursor
write of an exporter is conditional on that lease, checked in the same transaction (``Claim``):
a worker that lost its lease (paused past its expiry, cut off) can no longer move the cursor,
neither back nor forth, once another has taken over.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from sessionexport.store.records import (
    Alert,
    AppendResult,
    BulkDecision,
    Claim,
    CompletedPart,
    Cursor,
    DeadLetter,
    DeliveryMinute,
    EventsResult,
    Lease,
    ListedDeadLetter,
    LogEntry,
    LogRead,
    NewAlert,
    NewEvent,
    NewSession,
    OpenSession,
    SettingsRecord,
    StoredSession,
    TokenRecord,
    WorkState,
)

# (sessions lost, the slowest cursor's position, the title of the open alert or None) -> the alert
DescribeLoss = Callable[[int, int, str | None], NewAlert]
# Whether an export was to send a session (its management zone's rules), read without its body.
Owed = Callable[[LogEntry], bool]

PURGE_BATCH = 5000


async def sessions_page(
    store: Store,
    *,
    limit: int,
    max_bytes: int,
    user_session_id: str | None = None,
    user_id: str | None = None,
    before_seq: int | None = None,
) -> tuple[list[StoredSession], bool]:
    """A page of ``recent_sessions``: at most ``limit``, cut once their bodies reach ``max_bytes``
    (at least one), and whether sessions follow it: a page cut by its size looks one ahead, so
    that paging never ends on an empty page."""
    rows = await store.recent_sessions(
        user_session_id=user_session_id,
        user_id=user_id,
        before_seq=before_seq,
        limit=limit + 1,
        max_bytes=max_bytes,
    )
    page = rows[:limit]
    if len(rows) > limit or not page or sum(len(s.body) for s in page) < max_bytes:
        return page, len(rows) > limit
    after = await store.recent_sessions(
        user_session_id=user_session_id, user_id=user_id, before_seq=page[-1].seq, limit=1
    )
    return page, bool(after)


async def purge_in_batches(delete_up_to: Callable[[int], Awaitable[int]]) -> int:
    """``delete_up_to(PURGE_BATCH)`` (one transaction that deletes at most that many sessions)
    until less than that was left; the total deleted. However much expired at once (a retention
    shortened, a long downtime), writes queued meanwhile go in between, and no transaction grows
    with the backlog."""
    purged = 0
    while True:
        deleted = await delete_up_to(PURGE_BATCH)
        purged += deleted
        if deleted < PURGE_BATCH:
            return purged


class StoreError(Exception):
    """The storage backend failed (unreachable, corrupt, full...)."""


class StoreFull(StoreError):
    """The disk (or quota) holding the database is full: writes fail until space is freed; what
    is stored stays whole and readable."""


class Deadlocked(StoreError):
    """The database ended the transaction to break a deadlock with a concurrent one: nothing of
    it was kept, and running it again succeeds."""


class InvalidValue(StoreError):
    """A value the database cannot hold (PostgreSQL: NUL in text): the request's fault, not the
    store's, so it is answered as a bad request rather than "retry later"."""

    @classmethod
    def not_unicode(cls, database: str, exc: UnicodeEncodeError) -> InvalidValue:
        """Text Python holds but UTF-8 cannot (a lone surrogate, which JSON's \\ud800 can say)."""
        shown = repr(exc.object[exc.start : exc.end])
        return cls(f"{database} cannot hold a value: text with {shown}, which is not Unicode text")


class VersionConflict(Exception):
    """The object changed (or vanished) since the version the caller read."""


class TooManyObjects(Exception):
    """The schema already holds its maximum number of objects."""


class ExternalIdTaken(Exception):
    """Another object of the schema has this externalId (written meanwhile by another process)."""


class LeaseLost(Exception):
    """The caller no longer holds the lease it wrote under (expired, taken over, revoked), or the
    export's cursor is split into other shards now: nothing was written."""


class Store(Protocol):
    async def open(self) -> None:
        """Connect and bring the schema up to date."""

    async def close(self) -> None:
        """Finish pending writes and release connections."""

    # -- session log -------------------------------------------------------------------------
    async def append_sessions(self, sessions: Sequence[NewSession], received_at: int) -> AppendResult:
        """Append all sessions in one transaction; a known identity counts as a duplicate."""

    async def recent_sessions(
        self,
        *,
        user_session_id: str | None = None,
        user_id: str | None = None,
        before_seq: int | None = None,
        limit: int = 100,
        max_bytes: int | None = None,
    ) -> list[StoredSession]:
        """Sessions newest first, optionally of one user session id or user id only, below a seq;
        with ``max_bytes``, they stop once their bodies reach that many bytes (the one that reaches
        it included: at least one), so that a page of large sessions stays within bounds."""

    async def count_sessions(self) -> int: ...

    async def purge_sessions(self, up_to_seq: int) -> int:
        """Delete the sessions with seq <= ``up_to_seq``; return how many. Unlike other calls, in
        transactions of ``PURGE_BATCH`` sessions (``purge_in_batches``)."""

    # -- RUM events and open sessions --------------------------------------------------------
    async def add_events(
        self, events: Sequence[NewEvent], now: int, check_at: int, limit: int | None = None
    ) -> EventsResult:
        """Keep events (all in one transaction); their sessions are looked at again at ``check_at``.
        An open session holds at most ``limit`` events (None: no limit); more are counted as overflow."""

    async def due_sessions(self, now: int, limit: int) -> list[OpenSession]:
        """Open sessions to look at now (``check_at`` passed), with their events."""

    async def complete_part(self, part: CompletedPart, received_at: int) -> AppendResult:
        """In one transaction: append the completed session to the log, drop the events it used,
        note how far the session is completed and when to look at it again."""

    async def purge_replayed_bodies(self, replayed_before: int) -> int:
        """Empty the bodies of dead letters replayed before ``replayed_before``: session content,
        delivered, kept no longer than the log keeps it (the letter stays, with what it held and
        how it went, so that counts of replayed sessions hold). How many were emptied."""

    async def purge_events(self, received_before: int, now: int) -> int:
        """Drop events and open-session rows nothing arrived for since ``received_before``, but
        those due by ``now`` (the sessionizer has not looked at them since: it completes them)."""

    # -- API tokens --------------------------------------------------------------------------
    async def add_token(self, token: TokenRecord) -> None: ...

    async def get_token(self, token_id: str) -> TokenRecord | None: ...

    async def list_tokens(self) -> list[TokenRecord]: ...

    async def revoke_token(self, token_id: str, revoked_at: int) -> bool:
        """Revoke a token; False when there is no such active token."""

    # -- UI login sessions -------------------------------------------------------------------
    async def end_ui_session(self, session_id: str, expires_at: int, now: int) -> None:
        """A UI session was logged out: refuse it from now on (until ``expires_at``, when its
        cookie expires anyway); forget the ended sessions already past theirs."""

    async def ui_session_ended(self, session_id: str) -> bool: ...

    # -- settings objects --------------------------------------------------------------------
    async def list_settings(self, schema_id: str | None = None) -> list[SettingsRecord]:
        """Objects (of one schema, or all), oldest first."""

    async def get_setting(self, object_id: str) -> SettingsRecord | None: ...

    async def insert_setting(self, record: SettingsRecord, max_objects: int) -> None:
        """Insert, atomically refusing with TooManyObjects when the schema is full, and with
        ExternalIdTaken when another of its objects has the record's externalId."""

    async def update_setting(self, record: SettingsRecord, expected_version: int) -> None:
        """Replace the object if it is still at ``expected_version``, else VersionConflict."""

    async def delete_setting(self, object_id: str, expected_version: int | None) -> bool:
        """Delete (if at ``expected_version`` when given, else VersionConflict); False if absent."""

    # -- export cursors (one consumer of the session log per export) ------------------------
    async def log_position(self) -> int:
        """The highest seq in the log (0 when empty): where a new export starts by default."""

    async def position_before(self, received_at: int) -> int:
        """The seq just before the first session received at or after the given time (0: none;
        the last seq when every session was received before): where a backfill starts, and up to
        where retention purges. Every session up to it was received before; one received before,
        after a later one (the clock of the host that took it was behind), comes after it."""

    async def ensure_cursor(self, export_id: str, position: int, now: int) -> Cursor:
        """The export's cursor, created (one shard) at ``position`` when it has none yet."""

    async def get_cursor(self, export_id: str) -> Cursor | None:
        """The export's cursor: its slowest shard's position, its shards' counts summed."""

    async def list_cursors(self) -> list[Cursor]:
        """Every shard's cursor, by export then shard."""

    async def note_replayed(self, export_id: str, now: int) -> None:
        """A replay delivered to the export's endpoint at ``now``: its last success (every shard's
        row, as the endpoint is one), so the status does not say "never" after a good replay."""

    async def move_cursor(self, export_id: str, position: int, now: int) -> None:
        """Set every shard of the cursor anywhere (backfill, replay from a point, skip ahead),
        creating it if needed, and revoke the export's leases: whoever exports it stops, and the
        next holder starts from there."""

    async def pass_expired(
        self,
        export_id: str,
        boundary: int,
        now: int,
        alert_kind: str,
        describe: DescribeLoss,
        owed: Owed | None = None,
    ) -> int:
        """Retention removes the log up to ``boundary``: move every shard of the export's cursor
        there at least, never back. In the same transaction, count the sessions its shards pass
        without having decided them (with ``owed``, those it takes: the others the export would
        have passed over) and, when there are any, raise ``describe(lost, the slowest
        shard's position, the title of the export's open alert of ``alert_kind`` or None)``; how
        many. One transaction, so that purges at once (every serve and worker purges) or a purge
        failing halfway count each lost session once."""

    async def delete_cursor(self, export_id: str) -> None:
        """The export was deleted: forget its cursors, leases, delivery history and dead letters
        (which hold session content that nothing could reach or replay any more; deleting an
        export is refused while it has pending ones), and close its open alerts."""

    async def read_log(self, after_seq: int, limit: int) -> list[LogEntry]:
        """Up to ``limit`` sessions after ``after_seq``, in seq order."""

    async def read_shard(self, after_seq: int, limit: int, shard: int, shards: int) -> LogRead:
        """Up to ``limit`` sessions of one shard after ``after_seq``, in seq order, and how far
        they cover the log."""

    async def recent_log(
        self, received_since: int, limit: int, before_seq: int | None = None, *, bodies: bool = True
    ) -> list[LogEntry]:
        """Up to ``limit`` sessions that joined the log at or after ``received_since``, newest first;
        without ``bodies``, their attributes only (each body empty)."""

    async def backlog(self, after_seq: int, shard: int = 0, shards: int = 1) -> tuple[int, int | None]:
        """(sessions of the shard after ``after_seq``, received_at of the first of them or None);
        a shard holds the sessions whose seq % shards == shard (by default: all of them)."""

    async def start_shard(self, claim: Claim, position: int, now: int) -> int:
        """Where the claimed shard starts: its cursor's position. The export's cursor is created
        at ``position`` (in ``claim.shards`` shards) when it has none; when it is split in another
        number of shards, it is split anew, every shard starting where the slowest one was (some
        sessions are sent again, none is passed over). LeaseLost without the lease."""

    async def record_bulk(self, claim: Claim, position: int, decision: BulkDecision, now: int) -> list[int]:
        """A bulk was decided: keep its dead letters, count its sessions, move the shard's cursor,
        raise and close the export's alerts it names, all in one transaction, under the claim's lease (else LeaseLost, and nothing written);
        return the dead letters' ids."""

    async def record_skip(self, claim: Claim, position: int, now: int) -> None:
        """Sessions up to ``position`` were filtered out: move the shard's cursor only (under the lease)."""

    async def delivery_history(self, export_id: str, since: int) -> list[DeliveryMinute]:
        """Sessions delivered and failed per minute from ``since`` on, oldest first."""

    async def record_error(self, export_id: str, message: str, now: int) -> None:
        """Note a failed attempt (the cursor stays)."""

    # -- work distribution: workers and leases (expiry by the database's clock) ------------------
    async def heartbeat(self, owner: str, lease_ms: int) -> WorkState:
        """In one transaction: note ``owner`` alive and extend every lease it still holds for
        ``lease_ms`` (an expired lease is lost, not renewed); the live workers and leases then."""

    async def claim_lease(self, export_id: str, shard: int, owner: str, lease_ms: int) -> bool:
        """Take a shard's lease for ``lease_ms`` if nobody holds it, it expired, or ``owner`` has
        it already (one atomic statement); False when another live worker holds it."""

    async def release_lease(self, export_id: str, shard: int, owner: str) -> None:
        """Give up a lease (only ``owner``'s): another worker may take it at once."""

    async def retire_worker(self, owner: str) -> None:
        """A worker stops: forget it and release its leases."""

    async def list_leases(self) -> list[Lease]:
        """The live leases, by export then shard."""

    # -- dead letters ------------------------------------------------------------------------
    async def list_dead_letters(
        self,
        export_id: str,
        *,
        state: str | None = None,
        limit: int = 100,
        before_id: int | None = None,
        ids: Sequence[int] | None = None,
    ) -> list[ListedDeadLetter]:
        """Newest first, without their bodies (``ids``: those only)."""

    async def get_dead_letter(self, letter_id: int) -> DeadLetter | None: ...

    async def count_dead_letters(self, export_id: str, state: str = "pending") -> int: ...

    async def replayed_sessions(self, export_id: str) -> int:
        """Sessions of the export's letters that a replay delivered."""

    async def discard_dead_letters(
        self, export_id: str, now: int, up_to: int | None = None
    ) -> tuple[int, int]:
        """Delete the export's pending letters that no replay holds (those up to id ``up_to``
        only, when given: what was shown); (letters, sessions) deleted."""

    async def claim_dead_letter(
        self, letter_id: int, export_id: str, now: int, until: int
    ) -> DeadLetter | None:
        """The export's pending letter, claimed for a replay until ``until`` (epoch ms); None when
        it is not a pending letter of that export, or another replay's claim still holds it."""

    async def renew_replay_claim(self, letter_id: int, held_until: int, until: int) -> bool:
        """Hold a replay's claim on a letter longer: from ``held_until`` (the claim as this replay
        set it) to ``until``; False when the claim is no longer that one (it lapsed and another
        replay took the letter, or the letter is no longer pending)."""

    async def finish_replay(
        self,
        letter_id: int,
        attempts: list[dict[str, object]],
        delivered: bool,
        now: int,
        reason: str | None = None,
    ) -> None:
        """End a replay's claim: append its attempts; mark the letter replayed when it was
        delivered, or give it the ``reason`` it failed this time (the one before is in its
        attempts). A letter no longer pending is left as it is."""

    # -- alerts ------------------------------------------------------------------------------
    async def raise_alert(self, export_id: str, kind: str, title: str, message: str, now: int) -> None:
        """Open an alert, or bump the open one of that export and kind."""

    async def close_alerts(self, export_id: str, kind: str, now: int) -> int: ...

    async def list_alerts(self, *, open_only: bool = False, limit: int | None = None) -> list[Alert]:
        """Newest first; ``limit`` None: all (the open ones are few: a handful per export shard)."""
