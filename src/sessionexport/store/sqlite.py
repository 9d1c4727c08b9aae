"""SQLite backend: the embedded default, one file in the data directory.

Threads, durability and throughput settings are ``sqlite_engine``'s: one writer thread, a pool
of readers, WAL with ``synchronous=FULL``; an ingest is acknowledged only after its commit.
An exporter's decisions are the exception (``durable=False``): losing the last ones in a machine
crash only sends their bulks again.

Leases (see ``base``) use the same statements as on PostgreSQL; the one writer makes checking a
lease and writing under it one step by itself, and commits seqs in seq order.
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson

from sessionexport.clock import HOUR_MS, MINUTE_MS
from sessionexport.store.base import (
    DescribeLoss,
    ExternalIdTaken,
    LeaseLost,
    Owed,
    TooManyObjects,
    VersionConflict,
    purge_in_batches,
)
from sessionexport.store.cursors import combined, covered, split, split_as
from sessionexport.store.records import (
    HISTORY_MS,
    TOKEN_COLUMNS,
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
    NewDeadLetter,
    NewEvent,
    NewSession,
    OpenSession,
    SettingsRecord,
    StoredSession,
    TokenRecord,
    WorkState,
    open_session_changed,
)
from sessionexport.store.rows import (
    ALERT_COLUMNS,
    CURSOR_COLUMNS,
    DEAD_LETTER_COLUMNS,
    LEASE_COLUMNS,
    LISTED_DEAD_LETTER_COLUMNS,
    LOG_ENTRY_COLUMNS,
    SETTINGS_COLUMNS,
    STORED_SESSION_COLUMNS,
    claim_params,
    cursor_values,
    dead_letter,
    listed_dead_letter,
    log_entry,
    settings_values,
)
from sessionexport.store.sqlite_engine import SQLiteEngine, hours_present, insert_rows

T = TypeVar("T")

# Open sessions nothing arrived for since the horizon, unless due now: those the sessionizer has
# not looked at since they became due (none ran: a server down for longer) are completed, not dropped.
_STALE = "last_arrival < ? AND (check_at IS NULL OR check_at > ?)"


class SQLiteStore:
    dialect = "sqlite"

    def __init__(self, path: Path, *, readers: int = 3, existing: bool = False) -> None:
        self.path = path
        self._engine = SQLiteEngine(path, readers=readers, existing=existing)

    async def open(self) -> None:
        await self._engine.open()

    async def close(self) -> None:
        await self._engine.close()

    async def _write(self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        return await self._engine.write(fn, durable=durable)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._engine.read(fn)

    # -- session log -------------------------------------------------------------------------
    async def append_sessions(self, sessions: Sequence[NewSession], received_at: int) -> AppendResult:
        rows = _session_rows(sessions, received_at)
        return await self._write(lambda conn: _append(conn, rows))

    async def recent_sessions(
        self,
        *,
        user_session_id: str | None = None,
        user_id: str | None = None,
        before_seq: int | None = None,
        limit: int = 100,
        max_bytes: int | None = None,
    ) -> list[StoredSession]:
        filters = {"user_session_id": user_session_id, "user_id": user_id}
        matching = {column: value for column, value in filters.items() if value is not None}

        def select(conn: sqlite3.Connection) -> list[StoredSession]:
            if matching:
                if not (seqs := _newest_matches(conn, matching, before_seq, limit)):
                    return []
                rows = conn.execute(
                    f"SELECT {STORED_SESSION_COLUMNS} FROM sessions WHERE seq IN ({', '.join('?' * len(seqs))})"
                    " ORDER BY seq DESC",
                    seqs,
                )
            else:  # only the condition that applies: "(:x IS NULL OR seq < :x)" would scan the log
                before = "WHERE seq < :before" if before_seq is not None else ""
                rows = conn.execute(
                    f"SELECT {STORED_SESSION_COLUMNS} FROM sessions {before} ORDER BY seq DESC LIMIT :limit",
                    {"before": before_seq, "limit": limit},
                )
            return _within(max_bytes, (StoredSession(*row) for row in rows))  # read row by row

        return await self._read(select)

    async def count_sessions(self) -> int:
        return await self._read(lambda conn: int(conn.execute("SELECT count(*) FROM sessions").fetchone()[0]))

    async def purge_sessions(self, up_to_seq: int) -> int:
        async def delete_up_to(count: int) -> int:
            def delete(conn: sqlite3.Connection) -> int:
                return conn.execute(_PURGE_UP_TO, (up_to_seq, count)).rowcount

            return await self._write(delete)

        return await purge_in_batches(delete_up_to)

    # -- RUM events and open sessions --------------------------------------------------------
    async def add_events(
        self, events: Sequence[NewEvent], now: int, check_at: int, limit: int | None = None
    ) -> EventsResult:
        def add(conn: sqlite3.Connection) -> EventsResult:
            accepted = duplicates = late = overflow = 0
            offered: set[tuple[str, str, str]] = set()  # a second copy in the request is a duplicate
            for e in events:
                completed_until, held = conn.execute(
                    "SELECT completed_until, held FROM open_sessions WHERE tenant_id = ? AND session_id = ?",
                    (e.tenant_id, e.session_id),
                ).fetchone() or (None, 0)
                if completed_until is not None and e.ts <= completed_until and e.kind != "attributes":
                    late += 1
                    continue
                key = (e.tenant_id, e.session_id, e.event_id)
                if key in offered:
                    duplicates += 1
                    continue
                offered.add(key)
                if limit is not None and held >= limit:  # a duplicate still counts as one
                    if _has_event(conn, e):
                        duplicates += 1
                    else:
                        overflow += 1
                    continue
                inserted = conn.execute(
                    "INSERT INTO rum_events (tenant_id, session_id, event_id, ts, kind, body, received_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (e.tenant_id, e.session_id, e.event_id, e.ts, e.kind, e.body, now),
                ).rowcount
                if not inserted:
                    duplicates += 1
                    continue
                accepted += 1
                conn.execute(
                    "INSERT INTO open_sessions"
                    " (tenant_id, session_id, last_arrival, check_at, arrivals, clock_lag, held)"
                    " VALUES (?, ?, ?, ?, 1, ?, 1) ON CONFLICT (tenant_id, session_id) DO UPDATE SET"
                    " last_arrival = excluded.last_arrival, check_at = excluded.check_at,"
                    " arrivals = open_sessions.arrivals + 1, held = open_sessions.held + 1,"
                    " clock_lag = min(coalesce(open_sessions.clock_lag, excluded.clock_lag), excluded.clock_lag)",
                    (e.tenant_id, e.session_id, now, check_at, max(0, now - e.ts)),
                )
            return EventsResult(accepted, duplicates, late, overflow)

        return await self._write(add)

    async def due_sessions(self, now: int, limit: int) -> list[OpenSession]:
        def select(conn: sqlite3.Connection) -> list[OpenSession]:
            due = conn.execute(
                "SELECT tenant_id, session_id, part, split, last_start, arrivals, last_arrival, clock_lag,"
                " parts_before FROM open_sessions"
                " WHERE check_at IS NOT NULL AND check_at <= ? ORDER BY check_at, tenant_id, session_id LIMIT ?",
                (now, limit),
            ).fetchall()
            return [
                OpenSession(
                    tenant,
                    session,
                    part,
                    bool(split),
                    [
                        body
                        for (body,) in conn.execute(
                            "SELECT body FROM rum_events WHERE tenant_id = ? AND session_id = ?",
                            (tenant, session),
                        )
                    ],
                    last_start,
                    arrivals,
                    last_arrival,
                    clock_lag,
                    parts_before,
                )
                for tenant, session, part, split, last_start, arrivals, last_arrival, clock_lag, parts_before in due
            ]

        return await self._read(select)

    async def complete_part(self, part: CompletedPart, received_at: int) -> AppendResult:
        rows = _session_rows([part.session], received_at) if part.session else []

        def complete(conn: sqlite3.Connection) -> AppendResult:
            if _changed_since_read(conn, part):
                return AppendResult(0, 0)  # looked at again: add_events set it so, or another worker did it
            result = _append(conn, rows) if rows else AppendResult(0, 0)
            dropped = 0
            for start in range(0, len(part.consumed), 500):
                chunk = part.consumed[start : start + 500]
                dropped += conn.execute(
                    f"DELETE FROM rum_events WHERE tenant_id = ? AND session_id = ?"
                    f" AND event_id IN ({','.join('?' * len(chunk))})",
                    (part.tenant_id, part.session_id, *chunk),
                ).rowcount
            conn.execute(
                "UPDATE open_sessions SET part = part + :parts, split = :split, check_at = :check_at,"
                " last_start = coalesce(:start, last_start), held = held - :dropped,"
                " parts_before = CASE WHEN :split THEN parts_before ELSE part + :parts END,"
                " completed_until = CASE WHEN :until IS NULL THEN completed_until"
                " ELSE max(coalesce(completed_until, :until), :until) END"
                " WHERE tenant_id = :tenant AND session_id = :session",
                {
                    "parts": 1 if rows else 0,
                    "dropped": dropped,
                    "split": int(part.split),
                    "check_at": part.check_at,
                    "until": part.completed_until,
                    "start": part.start,
                    "tenant": part.tenant_id,
                    "session": part.session_id,
                },
            )
            return result

        return await self._write(complete)

    async def purge_replayed_bodies(self, replayed_before: int) -> int:
        return await self._write(
            lambda c: (
                c.execute(
                    "UPDATE dead_letters SET body = X'' WHERE state = 'replayed' AND replayed_at < ?"
                    " AND length(body) > 0",
                    (replayed_before,),
                ).rowcount
            )
        )

    async def purge_events(self, received_before: int, now: int) -> int:
        def purge(conn: sqlite3.Connection) -> int:
            stale = f"SELECT tenant_id, session_id FROM open_sessions WHERE {_STALE}"
            dropped = conn.execute(
                f"DELETE FROM rum_events WHERE (tenant_id, session_id) IN ({stale})", (received_before, now)
            ).rowcount
            conn.execute(f"DELETE FROM open_sessions WHERE {_STALE}", (received_before, now))
            return int(dropped)

        return await self._write(purge)

    # -- API tokens --------------------------------------------------------------------------
    async def add_token(self, token: TokenRecord) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO api_tokens ({TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                token.row(),
            )

        await self._write(insert)

    async def get_token(self, token_id: str) -> TokenRecord | None:
        def select(conn: sqlite3.Connection) -> TokenRecord | None:
            row = conn.execute(f"SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = ?", (token_id,)).fetchone()
            return TokenRecord.from_row(row) if row else None

        return await self._read(select)

    async def list_tokens(self) -> list[TokenRecord]:
        def select(conn: sqlite3.Connection) -> list[TokenRecord]:
            rows = conn.execute(f"SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at, id").fetchall()
            return [TokenRecord.from_row(row) for row in rows]

        return await self._read(select)

    async def revoke_token(self, token_id: str, revoked_at: int) -> bool:
        def update(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (revoked_at, token_id),
            )
            return cursor.rowcount == 1

        return await self._write(update)

    # -- UI login sessions -------------------------------------------------------------------
    async def end_ui_session(self, session_id: str, expires_at: int, now: int) -> None:
        def end(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM ended_ui_sessions WHERE expires_at < ?", (now,))
            conn.execute(
                "INSERT INTO ended_ui_sessions (id, expires_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
                (session_id, expires_at),
            )

        await self._write(end)

    async def ui_session_ended(self, session_id: str) -> bool:
        query = "SELECT 1 FROM ended_ui_sessions WHERE id = ?"
        return await self._read(lambda c: c.execute(query, (session_id,)).fetchone() is not None)

    # -- settings objects --------------------------------------------------------------------
    async def list_settings(self, schema_id: str | None = None) -> list[SettingsRecord]:
        def select(conn: sqlite3.Connection) -> list[SettingsRecord]:
            rows = conn.execute(
                f"SELECT {SETTINGS_COLUMNS} FROM settings_objects WHERE (:schema IS NULL OR schema_id = :schema)"
                " ORDER BY created, object_id",
                {"schema": schema_id},
            ).fetchall()
            return [SettingsRecord(*row) for row in rows]

        return await self._read(select)

    async def get_setting(self, object_id: str) -> SettingsRecord | None:
        def select(conn: sqlite3.Connection) -> SettingsRecord | None:
            row = conn.execute(
                f"SELECT {SETTINGS_COLUMNS} FROM settings_objects WHERE object_id = ?", (object_id,)
            ).fetchone()
            return SettingsRecord(*row) if row else None

        return await self._read(select)

    async def insert_setting(self, record: SettingsRecord, max_objects: int) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            (count,) = conn.execute(
                "SELECT count(*) FROM settings_objects WHERE schema_id = ?", (record.schema_id,)
            ).fetchone()
            if count >= max_objects:
                raise TooManyObjects(record.schema_id)
            if _external_id_taken(conn, record):
                raise ExternalIdTaken(record.external_id)
            conn.execute(
                f"INSERT INTO settings_objects ({SETTINGS_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                settings_values(record),
            )

        await self._write(insert)

    async def update_setting(self, record: SettingsRecord, expected_version: int) -> None:
        def update(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(
                "UPDATE settings_objects SET scope = ?, external_id = ?, value = ?, schema_version = ?,"
                " modified = ?, modified_by = ?, version = ? WHERE object_id = ? AND version = ?",
                (
                    record.scope,
                    record.external_id,
                    record.value,
                    record.schema_version,
                    record.modified,
                    record.modified_by,
                    record.version,
                    record.object_id,
                    expected_version,
                ),
            )
            if cursor.rowcount != 1:
                raise VersionConflict(record.object_id)

        await self._write(update)

    async def delete_setting(self, object_id: str, expected_version: int | None) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT version FROM settings_objects WHERE object_id = ?", (object_id,)
            ).fetchone()
            if row is None:
                return False
            if expected_version is not None and row[0] != expected_version:
                raise VersionConflict(object_id)
            conn.execute("DELETE FROM settings_objects WHERE object_id = ?", (object_id,))
            return True

        return await self._write(delete)

    # -- export cursors ----------------------------------------------------------------------
    async def log_position(self) -> int:
        return await self._read(
            lambda c: int(c.execute("SELECT coalesce(max(seq), 0) FROM sessions").fetchone()[0])
        )

    async def position_before(self, received_at: int) -> int:
        def select(conn: sqlite3.Connection) -> int:
            first = conn.execute(_FIRST_RECEIVED_AT_OR_AFTER, (received_at,)).fetchone()
            if first is None:
                return int(conn.execute("SELECT coalesce(max(seq), 0) FROM sessions").fetchone()[0])
            return int(first[0]) - 1

        return await self._read(select)

    async def ensure_cursor(self, export_id: str, position: int, now: int) -> Cursor:
        def upsert(conn: sqlite3.Connection) -> Cursor:
            conn.execute(
                "INSERT INTO export_cursors (export_id, position, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (export_id, shard) DO NOTHING",
                (export_id, position, now),
            )
            return combined(_shard_cursors(conn, export_id))

        return await self._write(upsert)

    async def get_cursor(self, export_id: str) -> Cursor | None:
        shards = await self._read(lambda conn: _shard_cursors(conn, export_id))
        return combined(shards) if shards else None

    async def list_cursors(self) -> list[Cursor]:
        return await self._read(
            lambda c: [
                Cursor(*row)
                for row in c.execute(f"SELECT {CURSOR_COLUMNS} FROM export_cursors ORDER BY export_id, shard")
            ]
        )

    async def move_cursor(self, export_id: str, position: int, now: int) -> None:
        def move(conn: sqlite3.Connection) -> None:
            params = {"export_id": export_id, "position": position, "now": now}
            conn.execute("DELETE FROM export_leases WHERE export_id = ?", (export_id,))
            conn.execute(
                "INSERT INTO export_cursors (export_id, position, updated_at) VALUES (:export_id, :position, :now)"
                " ON CONFLICT (export_id, shard) DO UPDATE SET position = excluded.position,"
                " updated_at = excluded.updated_at",
                params,
            )
            conn.execute(
                "UPDATE export_cursors SET position = :position, updated_at = :now"
                " WHERE export_id = :export_id AND shard <> 0",
                params,
            )

        await self._write(move)

    async def pass_expired(
        self,
        export_id: str,
        boundary: int,
        now: int,
        alert_kind: str,
        describe: DescribeLoss,
        owed: Owed | None = None,
    ) -> int:
        def count(conn: sqlite3.Connection, position: int, shard: int, shards: int) -> int:
            params = (position, boundary, shards, shard)
            if owed is None:
                return int(conn.execute(_COUNT_BETWEEN, params).fetchone()[0])
            return sum(owed(log_entry(row)) for row in conn.execute(_ATTRIBUTES_BETWEEN, params))

        def pass_boundary(conn: sqlite3.Connection) -> int:
            behind = conn.execute(
                "SELECT position, shard, shards FROM export_cursors WHERE export_id = ? AND position < ?",
                (export_id, boundary),
            ).fetchall()
            lost = sum(count(conn, position, shard, shards) for position, shard, shards in behind)
            if lost:
                open_alert = conn.execute(_OPEN_ALERT_TITLE, (export_id, alert_kind)).fetchone()
                title = open_alert[0] if open_alert else None
                _raise_alert(conn, export_id, describe(lost, min(p for p, _, _ in behind), title), now)
            conn.execute(
                "UPDATE export_cursors SET position = ?, updated_at = ? WHERE export_id = ? AND position < ?",
                (boundary, now, export_id, boundary),
            )
            return lost

        return await self._write(pass_boundary)

    async def delete_cursor(self, export_id: str) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM export_leases WHERE export_id = ?", (export_id,))
            conn.execute("DELETE FROM export_cursors WHERE export_id = ?", (export_id,))
            conn.execute("DELETE FROM delivery_minutes WHERE export_id = ?", (export_id,))
            conn.execute("DELETE FROM dead_letters WHERE export_id = ?", (export_id,))
            conn.execute(
                f"UPDATE alerts SET closed_at = {_NOW} WHERE export_id = ? AND closed_at IS NULL",
                (export_id,),
            )

        await self._write(delete)

    async def read_log(self, after_seq: int, limit: int) -> list[LogEntry]:
        def select(conn: sqlite3.Connection) -> list[LogEntry]:
            rows = conn.execute(_READ_LOG, (after_seq, limit)).fetchall()
            return [log_entry(row) for row in rows]

        return await self._read(select)

    async def read_shard(self, after_seq: int, limit: int, shard: int, shards: int) -> LogRead:
        def select(conn: sqlite3.Connection) -> LogRead:
            log_end = int(conn.execute("SELECT coalesce(max(seq), 0) FROM sessions").fetchone()[0])
            if shards == 1:  # the plain index range
                rows = conn.execute(_READ_LOG, (after_seq, limit)).fetchall()
            else:
                rows = conn.execute(_READ_SHARD, (after_seq, shards, shard, limit)).fetchall()
            entries = [log_entry(row) for row in rows]
            return LogRead(entries, covered(after_seq, [e.seq for e in entries], limit, log_end))

        return await self._read(select)

    async def recent_log(
        self, received_since: int, limit: int, before_seq: int | None = None, *, bodies: bool = True
    ) -> list[LogEntry]:
        columns = LOG_ENTRY_COLUMNS if bodies else _ATTRIBUTE_COLUMNS

        def select(conn: sqlite3.Connection) -> list[LogEntry]:
            rows = conn.execute(
                f"SELECT {columns} FROM sessions WHERE received_at >= :since"
                " AND (:before IS NULL OR seq < :before) ORDER BY seq DESC LIMIT :limit",
                {"since": received_since, "before": before_seq, "limit": limit},
            ).fetchall()
            return [log_entry(row) for row in rows]

        return await self._read(select)

    async def backlog(self, after_seq: int, shard: int = 0, shards: int = 1) -> tuple[int, int | None]:
        params = {"after": after_seq, "shard": shard, "shards": shards}

        def select(conn: sqlite3.Connection) -> tuple[int, int | None]:
            count, first = conn.execute(_BACKLOG, params).fetchone()
            return int(count), (int(first) if first is not None else None)

        return await self._read(select)

    async def start_shard(self, claim: Claim, position: int, now: int) -> int:
        def start(conn: sqlite3.Connection) -> int:
            _hold_lease(conn, claim)
            shards = _shard_cursors(conn, claim.export_id)
            if not split_as(shards, claim.shards):
                conn.execute("DELETE FROM export_cursors WHERE export_id = ?", (claim.export_id,))
                shards = split(claim.export_id, shards, claim.shards, position)
                conn.executemany(_INSERT_CURSOR, [(*cursor_values(c), now) for c in shards])
            return shards[claim.shard].position

        return await self._write(start)

    async def record_skip(self, claim: Claim, position: int, now: int) -> None:
        def skip(conn: sqlite3.Connection) -> None:
            _hold_lease(conn, claim)
            _write_shard(conn, _SKIP, claim_params(claim, position, now))

        await self._write(skip, durable=False)  # lost in a crash: filtered out again

    async def record_bulk(self, claim: Claim, position: int, decision: BulkDecision, now: int) -> list[int]:
        def record(conn: sqlite3.Connection) -> list[int]:
            _hold_lease(conn, claim)
            ids = [_insert_dead_letter(conn, letter) for letter in decision.letters]
            counts = {"delivered": decision.delivered, "failed": decision.failed, "retried": decision.retried}
            _write_shard(conn, _COUNT_BULK, claim_params(claim, position, now) | counts)
            if decision.letters:
                conn.execute(
                    "UPDATE export_cursors SET last_error_at = ?, last_error = ? WHERE export_id = ? AND shard = ?",
                    (now, decision.letters[-1].reason, claim.export_id, claim.shard),
                )
            _count_minute(conn, claim.export_id, decision, now)
            for alert in decision.alerts:
                _raise_alert(conn, claim.export_id, alert, now)
            for kind in decision.closes:
                _close_alerts(conn, claim.export_id, kind, now)
            return ids

        # Lost in a machine crash (not a killed process), the decision is made again: the bulk is
        # sent again, at least once as ever. Not syncing it to disk halves the writer's work per bulk.
        return await self._write(record, durable=False)

    async def delivery_history(self, export_id: str, since: int) -> list[DeliveryMinute]:
        return await self._read(
            lambda c: [
                DeliveryMinute(*row)
                for row in c.execute(
                    "SELECT minute, delivered, failed FROM delivery_minutes"
                    " WHERE export_id = ? AND minute >= ? ORDER BY minute",
                    (export_id, since),
                )
            ]
        )

    async def record_error(self, export_id: str, message: str, now: int) -> None:
        await self._write(
            lambda c: c.execute(
                "UPDATE export_cursors SET last_error_at = ?, last_error = ?, updated_at = ? WHERE export_id = ?",
                (now, message, now, export_id),
            )
        )

    # -- work distribution (one writer here: the statements are PostgreSQL's, minus row locks) ---
    async def heartbeat(self, owner: str, lease_ms: int) -> WorkState:
        def beat(conn: sqlite3.Connection) -> WorkState:
            params = {"owner": owner, "ms": lease_ms}
            conn.execute(
                f"INSERT INTO export_workers (owner, expires_at) VALUES (:owner, {_NOW} + :ms)"
                " ON CONFLICT (owner) DO UPDATE SET expires_at = excluded.expires_at",
                params,
            )
            conn.execute(
                f"UPDATE export_leases SET expires_at = {_NOW} + :ms WHERE owner = :owner AND expires_at > {_NOW}",
                params,
            )
            conn.execute(f"DELETE FROM export_workers WHERE expires_at <= {_NOW}")
            workers = conn.execute(
                f"SELECT owner FROM export_workers WHERE expires_at > {_NOW} ORDER BY owner"
            )
            return WorkState(tuple(w for (w,) in workers), tuple(_live_leases(conn)))

        return await self._write(beat)

    async def claim_lease(self, export_id: str, shard: int, owner: str, lease_ms: int) -> bool:
        def claim(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                f"INSERT INTO export_leases AS l (export_id, shard, owner, expires_at)"
                f" VALUES (:export_id, :shard, :owner, {_NOW} + :ms)"
                " ON CONFLICT (export_id, shard) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at"
                f" WHERE l.owner = excluded.owner OR l.expires_at <= {_NOW}",
                {"export_id": export_id, "shard": shard, "owner": owner, "ms": lease_ms},
            )
            return cursor.rowcount == 1

        return await self._write(claim)

    async def release_lease(self, export_id: str, shard: int, owner: str) -> None:
        await self._write(
            lambda c: c.execute(
                "DELETE FROM export_leases WHERE export_id = ? AND shard = ? AND owner = ?",
                (export_id, shard, owner),
            )
        )

    async def retire_worker(self, owner: str) -> None:
        def retire(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM export_leases WHERE owner = ?", (owner,))
            conn.execute("DELETE FROM export_workers WHERE owner = ?", (owner,))

        await self._write(retire)

    async def list_leases(self) -> list[Lease]:
        return await self._read(_live_leases)

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
        def select(conn: sqlite3.Connection) -> list[ListedDeadLetter]:
            rows = conn.execute(
                f"SELECT {LISTED_DEAD_LETTER_COLUMNS} FROM dead_letters WHERE export_id = :export"
                " AND (:state IS NULL OR state = :state) AND (:before IS NULL OR id < :before)"
                " AND (:ids IS NULL OR id IN (SELECT value FROM json_each(:ids)))"
                " ORDER BY id DESC LIMIT :limit",
                {
                    "export": export_id,
                    "state": state,
                    "before": before_id,
                    "ids": None if ids is None else orjson.dumps(list(ids)).decode(),
                    "limit": limit,
                },
            ).fetchall()
            return [listed_dead_letter(row) for row in rows]

        return await self._read(select)

    async def get_dead_letter(self, letter_id: int) -> DeadLetter | None:
        def select(conn: sqlite3.Connection) -> DeadLetter | None:
            row = conn.execute(
                f"SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE id = ?", (letter_id,)
            ).fetchone()
            return dead_letter(row) if row else None

        return await self._read(select)

    async def count_dead_letters(self, export_id: str, state: str = "pending") -> int:
        return await self._read(
            lambda c: int(
                c.execute(
                    "SELECT count(*) FROM dead_letters WHERE export_id = ? AND state = ?", (export_id, state)
                ).fetchone()[0]
            )
        )

    async def replayed_sessions(self, export_id: str) -> int:
        query = "SELECT coalesce(sum(session_count), 0) FROM dead_letters WHERE export_id = ? AND state = 'replayed'"
        return await self._read(lambda c: int(c.execute(query, (export_id,)).fetchone()[0]))

    async def discard_dead_letters(
        self, export_id: str, now: int, up_to: int | None = None
    ) -> tuple[int, int]:
        def delete(conn: sqlite3.Connection) -> tuple[int, int]:
            rows = conn.execute(
                "DELETE FROM dead_letters WHERE export_id = ? AND state = 'pending'"
                " AND (replaying_until IS NULL OR replaying_until < ?) AND (? IS NULL OR id <= ?)"
                " RETURNING session_count",
                (export_id, now, up_to, up_to),
            ).fetchall()
            return len(rows), sum(row[0] for row in rows)

        return await self._write(delete)

    async def claim_dead_letter(
        self, letter_id: int, export_id: str, now: int, until: int
    ) -> DeadLetter | None:
        def claim(conn: sqlite3.Connection) -> DeadLetter | None:
            row = conn.execute(
                f"UPDATE dead_letters SET replaying_until = ? WHERE {_CLAIMABLE} RETURNING {DEAD_LETTER_COLUMNS}",
                (until, letter_id, export_id, now),
            ).fetchone()
            return dead_letter(row) if row else None

        return await self._write(claim)

    async def note_replayed(self, export_id: str, now: int) -> None:
        await self._write(
            lambda c: c.execute(
                "UPDATE export_cursors SET last_success_at = max(coalesce(last_success_at, 0), ?) WHERE export_id = ?",
                (now, export_id),
            )
        )

    async def renew_replay_claim(self, letter_id: int, held_until: int, until: int) -> bool:
        def renew(conn: sqlite3.Connection) -> bool:
            changed = conn.execute(
                "UPDATE dead_letters SET replaying_until = ? WHERE id = ? AND replaying_until = ? AND state = 'pending'",
                (until, letter_id, held_until),
            ).rowcount
            return bool(changed)

        return await self._write(renew)

    async def finish_replay(
        self,
        letter_id: int,
        attempts: list[dict[str, object]],
        delivered: bool,
        now: int,
        reason: str | None = None,
    ) -> None:
        def update(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT attempts FROM dead_letters WHERE id = ?", (letter_id,)).fetchone()
            if row is None:
                return
            all_attempts = [*orjson.loads(row[0]), *attempts]
            conn.execute(
                "UPDATE dead_letters SET attempts = ?, state = ?, replayed_at = ?, reason = coalesce(?, reason),"
                " replaying_until = NULL WHERE id = ? AND state = 'pending'",
                (
                    orjson.dumps(all_attempts),
                    "replayed" if delivered else "pending",
                    now if delivered else None,
                    None if delivered else reason,
                    letter_id,
                ),
            )

        await self._write(update)

    # -- alerts ------------------------------------------------------------------------------
    async def raise_alert(self, export_id: str, kind: str, title: str, message: str, now: int) -> None:
        await self._write(lambda c: _raise_alert(c, export_id, NewAlert(kind, title, message), now))

    async def close_alerts(self, export_id: str, kind: str, now: int) -> int:
        return await self._write(lambda c: _close_alerts(c, export_id, kind, now))

    async def list_alerts(self, *, open_only: bool = False, limit: int | None = None) -> list[Alert]:
        def select(conn: sqlite3.Connection) -> list[Alert]:
            rows = conn.execute(
                f"SELECT {ALERT_COLUMNS}"
                " FROM alerts WHERE (:open = 0 OR closed_at IS NULL) ORDER BY id DESC LIMIT :limit",
                {"open": int(open_only), "limit": -1 if limit is None else limit},  # -1: no limit
            ).fetchall()
            return [Alert(*row) for row in rows]

        return await self._read(select)


_INSERT_CURSOR = f"INSERT INTO export_cursors ({CURSOR_COLUMNS}, updated_at) VALUES ({', '.join(['?'] * 11)})"
_READ_LOG = f"SELECT {LOG_ENTRY_COLUMNS} FROM sessions WHERE seq > ? ORDER BY seq LIMIT ?"
_READ_SHARD = f"SELECT {LOG_ENTRY_COLUMNS} FROM sessions WHERE seq > ? AND seq % ? = ? ORDER BY seq LIMIT ?"
_COUNT_BULK = (
    "UPDATE export_cursors SET position = max(position, :position), delivered = delivered + :delivered,"
    " failed = failed + :failed, retried = retried + :retried, updated_at = :now,"
    " last_success_at = CASE WHEN :delivered > 0 THEN :now ELSE last_success_at END"
    " WHERE export_id = :export_id AND shard = :shard AND shards = :shards"
)
_IN_SHARD = "seq > :after AND (:shards = 1 OR seq % :shards = :shard)"
# A log entry's columns without its body: the attributes a zone or a listing reads.
_ATTRIBUTE_COLUMNS = LOG_ENTRY_COLUMNS.replace("body", "X'' AS body")
_COUNT_BETWEEN = "SELECT count(*) FROM sessions WHERE seq > ? AND seq <= ? AND seq % ? = ?"
_ATTRIBUTES_BETWEEN = _COUNT_BETWEEN.replace("count(*)", _ATTRIBUTE_COLUMNS)
_OPEN_ALERT_TITLE = "SELECT title FROM alerts WHERE export_id = ? AND kind = ? AND closed_at IS NULL"
_BACKLOG = (
    f"SELECT count(*), (SELECT received_at FROM sessions WHERE {_IN_SHARD} ORDER BY seq LIMIT 1)"
    f" FROM sessions WHERE {_IN_SHARD}"
)
_SKIP = (
    "UPDATE export_cursors SET position = max(position, :position), updated_at = :now"
    " WHERE export_id = :export_id AND shard = :shard AND shards = :shards"
)
# The database's clock, epoch ms (see base: lease expiry is judged by it).
_NOW = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
# A pending letter of the export that no replay holds (a claim that ran out no longer holds it).
_CLAIMABLE = (
    "id = ? AND export_id = ? AND state = 'pending' AND (replaying_until IS NULL OR replaying_until < ?)"
)


# NOT INDEXED: each row by its rowid, not through the index of seqs (a search more per row).
_PURGE_UP_TO = "DELETE FROM sessions NOT INDEXED WHERE seq IN (SELECT seq FROM sessions WHERE seq <= ? ORDER BY seq LIMIT ?)"
# In log order, from its start, only as far as the first one (an index by time would have to visit
# every session received after it to know the lowest seq).
_FIRST_RECEIVED_AT_OR_AFTER = (
    "SELECT seq FROM sessions NOT INDEXED WHERE received_at >= ? ORDER BY seq LIMIT 1"
)


def _newest_matches(
    conn: sqlite3.Connection, matching: dict[str, str], before: int | None, limit: int
) -> list[int]:
    """The seqs of the newest ``limit`` sessions below ``before`` whose columns have the values of
    ``matching``: the newest ones of each hour present in the log, through an index by hour, and
    the newest of all these."""
    probe = hour_probe(list(matching), before is not None)
    params = {**matching, "before": before, "limit": limit}
    found = [
        seq
        for hour in hours_present(conn, "sessions")
        for (seq,) in conn.execute(probe, {**params, "hour": hour})
    ]
    return heapq.nlargest(limit, found)


def hour_probe(columns: list[str], before: bool) -> str:
    """The query for one hour's newest matches (named parameters: ``hour``, each column, ``before``
    when asked for, ``limit``)."""
    where = [f"received_at / {HOUR_MS} = :hour", *(f"{column} = :{column}" for column in columns)]
    where += ["seq < :before"] if before else []
    return f"SELECT seq FROM sessions WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT :limit"


def _changed_since_read(conn: sqlite3.Connection, part: CompletedPart) -> bool:
    """Whether events arrived for the open session, or a part of it was completed, since the
    sessionizer read it (``part`` was decided on what it read)."""
    row = conn.execute(
        "SELECT arrivals, part FROM open_sessions WHERE tenant_id = ? AND session_id = ?",
        (part.tenant_id, part.session_id),
    ).fetchone()
    return open_session_changed(part, tuple(row) if row else None)


def _session_rows(sessions: Sequence[NewSession], received_at: int) -> list[tuple[Any, ...]]:
    return [
        (
            s.tenant_id,
            s.user_session_id,
            s.start_time,
            s.end_time,
            received_at,
            s.user_id,
            s.user_type,
            s.application_type,
            s.country,
            orjson.dumps(s.applications),
            len(s.body),
            s.body,
        )
        for s in sessions
    ]


def _external_id_taken(conn: sqlite3.Connection, record: SettingsRecord) -> bool:
    if record.external_id is None:
        return False
    row = conn.execute(
        "SELECT 1 FROM settings_objects WHERE schema_id = ? AND external_id = ?",
        (record.schema_id, record.external_id),
    ).fetchone()
    return row is not None


def _append(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> AppendResult:
    accepted = insert_rows(conn, _INSERT_SESSIONS, rows, _IGNORE_DUPLICATE_SESSIONS)
    return AppendResult(accepted=accepted, duplicates=len(rows) - accepted)


def _insert_dead_letter(conn: sqlite3.Connection, letter: NewDeadLetter) -> int:
    cursor = conn.execute(
        "INSERT INTO dead_letters (export_id, created_at, first_seq, last_seq, session_count, sessions,"
        " content_type, body, reason, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            letter.export_id,
            letter.created_at,
            letter.first_seq,
            letter.last_seq,
            len(letter.sessions),
            orjson.dumps(letter.sessions),
            letter.content_type,
            letter.body,
            letter.reason,
            orjson.dumps(letter.attempts),
        ),
    )
    return int(cursor.lastrowid or 0)


def _shard_cursors(conn: sqlite3.Connection, export_id: str) -> list[Cursor]:
    rows = conn.execute(
        f"SELECT {CURSOR_COLUMNS} FROM export_cursors WHERE export_id = ? ORDER BY shard", (export_id,)
    )
    return [Cursor(*row) for row in rows]


def _hold_lease(conn: sqlite3.Connection, claim: Claim) -> None:
    held = conn.execute(
        f"SELECT 1 FROM export_leases WHERE export_id = ? AND shard = ? AND owner = ? AND expires_at > {_NOW}",
        (claim.export_id, claim.shard, claim.owner),
    ).fetchone()
    if held is None:
        raise LeaseLost(f"shard {claim.shard}: {claim.owner} no longer holds its lease")


def _write_shard(conn: sqlite3.Connection, statement: str, params: dict[str, Any]) -> None:
    if conn.execute(statement, params).rowcount != 1:
        raise LeaseLost(f"its cursor is no longer split in {params['shards']}")


def _live_leases(conn: sqlite3.Connection) -> list[Lease]:
    rows = conn.execute(
        f"SELECT {LEASE_COLUMNS} FROM export_leases WHERE expires_at > {_NOW} ORDER BY export_id, shard"
    )
    return [Lease(*row) for row in rows]


_INSERT_SESSIONS = (
    "INSERT INTO sessions (tenant_id, user_session_id, start_time, end_time, received_at, user_id,"
    " user_type, application_type, country, applications, size, body)"
)
_IGNORE_DUPLICATE_SESSIONS = "ON CONFLICT (tenant_id, user_session_id, start_time) DO NOTHING"


def _raise_alert(conn: sqlite3.Connection, export_id: str, alert: NewAlert, now: int) -> None:
    cursor = conn.execute(
        "UPDATE alerts SET title = ?, message = ?, last_seen_at = ?, occurrences = occurrences + 1"
        " WHERE export_id = ? AND kind = ? AND closed_at IS NULL",
        (alert.title, alert.message, now, export_id, alert.kind),
    )
    if cursor.rowcount == 0:
        conn.execute(
            "INSERT INTO alerts (export_id, kind, title, message, opened_at, last_seen_at) VALUES (?, ?, ?, ?, ?, ?)",
            (export_id, alert.kind, alert.title, alert.message, now, now),
        )


def _close_alerts(conn: sqlite3.Connection, export_id: str, kind: str, now: int) -> int:
    return conn.execute(
        "UPDATE alerts SET closed_at = ? WHERE export_id = ? AND kind = ? AND closed_at IS NULL",
        (now, export_id, kind),
    ).rowcount


def _count_minute(conn: sqlite3.Connection, export_id: str, decision: BulkDecision, now: int) -> None:
    minute = now - now % MINUTE_MS
    conn.execute(
        "INSERT INTO delivery_minutes (export_id, minute, delivered, failed) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (export_id, minute) DO UPDATE SET"
        " delivered = delivery_minutes.delivered + excluded.delivered,"
        " failed = delivery_minutes.failed + excluded.failed",
        (export_id, minute, decision.delivered, decision.failed),
    )
    conn.execute(
        "DELETE FROM delivery_minutes WHERE export_id = ? AND minute < ?", (export_id, minute - HISTORY_MS)
    )


def _has_event(conn: sqlite3.Connection, event: NewEvent) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM rum_events WHERE tenant_id = ? AND session_id = ? AND event_id = ?",
            (event.tenant_id, event.session_id, event.event_id),
        ).fetchone()
        is not None
    )


def _within(max_bytes: int | None, sessions: Iterable[StoredSession]) -> list[StoredSession]:
    """The sessions until their bodies reach ``max_bytes`` (that one included); all without it."""
    kept, total = [], 0
    for session in sessions:
        kept.append(session)
        total += len(session.body)
        if max_bytes is not None and total >= max_bytes:
            break
    return kept
