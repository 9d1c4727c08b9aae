"""PostgreSQL backend (``--database-url postgresql://...``): psycopg 3 behind an async connection pool.

Same semantics as the SQLite backend, method for method; what differs is how they are kept when
several processes write at once (SQLite has one writer thread, PostgreSQL has many connections):

- Connecting, pooling (autocommit connections), migrations under an advisory lock and the
  translation of errors to ``StoreError`` (never with the password) are ``postgresql_database``'s.
- Appends are one ``INSERT ... SELECT FROM unnest(...)`` per batch: seqs follow the batch order, and
  ``ON CONFLICT DO NOTHING`` makes a known identity a duplicate, also against a concurrent append of
  the same session (it waits for that one to commit, then skips).
- Rules that SQLite keeps by serialising writes are kept by the database here: the settings object
  limit under a transaction-scoped advisory lock per schema, "one open alert per export and kind"
  by a partial unique index (raising is one upsert), versions by ``WHERE version = expected``,
  and events against parts being completed by locking the session's ``open_sessions`` row first.
- Seqs commit in seq order, so a reader never passes one that is still to commit: every append
  draws its seqs under a transaction-scoped advisory lock taken right before its INSERT, held
  until its commit (see ``append_in_transaction``). Appends take turns for that last statement only.

- Leases: see ``base`` for the model. A cursor write locks its lease row (``FOR SHARE``) and
  checks owner and expiry in the transaction that writes; a takeover updates that row, so the two
  take turns: a stale worker's write either commits before the takeover or is refused after it.
  Statements that lock several lease rows lock them in key order, and lease rows before cursor
  rows, so that they never wait for each other crosswise.

``TooManyObjects``, ``ExternalIdTaken``, ``VersionConflict`` and ``LeaseLost`` pass through
untranslated (their transaction rolled back).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson

from sessionexport.clock import MINUTE_MS
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
from sessionexport.store.postgresql_database import Connection, PostgresDatabase, ReadConnection
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

# Advisory lock keys: any constants work as long as nothing else sharing the database uses them.
MIGRATION_LOCK = 0x5358_534D  # "SXSM" (the receiver's store uses "SXRM")
SETTINGS_LOCK = 0x5358_534F  # "SXSO"; the second key is the hash of the settings schema id
APPEND_LOCK = 0x5358_5341  # "SXSA": held from drawing seqs to the commit of an append
CURSOR_LOCK = 0x5358_5343  # "SXSC"; the second key is the hash of the export id: splitting its cursor
MAX_CONNECTIONS = 8
Params = Sequence[Any] | dict[str, Any]


# -- SQL ------------------------------------------------------------------------------------------
# Every serve and worker purges, often at the same moments. Each takes the rows it deletes in seq
# order and passes over those another purge holds (that one deletes them): two purges never wait
# for each other crosswise, which PostgreSQL ended as a deadlock.
_PURGE_UP_TO = (
    "DELETE FROM sessions WHERE seq IN"
    " (SELECT seq FROM sessions WHERE seq <= %s ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED)"
)
# The database's clock, epoch ms: lease expiry is judged by it, so that workers on several hosts agree.
_NOW = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"

# One statement per batch, whatever its size (no parameter limit: each column is one array).
# Bodies go in binary (%b): as text, an array of bytea is hex-escaped, twice the bytes to send and
# more than twice the time.
_APPEND = """
INSERT INTO sessions (tenant_id, user_session_id, start_time, end_time, received_at, user_id, user_type,
                      application_type, country, applications, size, body)
SELECT tenant_id, user_session_id, start_time, end_time, %(received_at)s, user_id, user_type,
       application_type, country, applications, octet_length(body), body
  FROM unnest(%(tenant_id)s::text[], %(user_session_id)s::text[], %(start_time)s::bigint[],
              %(end_time)s::bigint[], %(user_id)s::text[], %(user_type)s::text[],
              %(application_type)s::text[], %(country)s::text[], %(applications)s::text[],
              %(body)b::bytea[])
       WITH ORDINALITY AS s (tenant_id, user_session_id, start_time, end_time, user_id, user_type,
                             application_type, country, applications, body, ord)
 ORDER BY ord  -- seqs in batch order
    ON CONFLICT (tenant_id, user_session_id, start_time) DO NOTHING
"""
# A user session id picks its rows by index, so its query is a separate statement: one query with
# "(%s IS NULL OR user_session_id = %s)" could be planned (generically, once prepared) as a scan.
_RECENT_SESSIONS = f"""
SELECT {STORED_SESSION_COLUMNS} FROM sessions
 WHERE (%(before)s::bigint IS NULL OR seq < %(before)s)
 ORDER BY seq DESC LIMIT %(limit)s
"""
_RECENT_SESSIONS_OF_ONE = f"""
SELECT {STORED_SESSION_COLUMNS} FROM sessions
 WHERE user_session_id = %(usid)s AND (%(before)s::bigint IS NULL OR seq < %(before)s)
 ORDER BY seq DESC LIMIT %(limit)s
"""
_RECENT_SESSIONS_OF_USER = f"""
SELECT {STORED_SESSION_COLUMNS} FROM sessions
 WHERE user_id = %(uid)s AND (%(before)s::bigint IS NULL OR seq < %(before)s)
   AND (%(usid)s::text IS NULL OR user_session_id = %(usid)s)
 ORDER BY seq DESC LIMIT %(limit)s
"""
# A page of sessions cut where their bodies reach %(max_bytes)s (that one included), counted by the
# server from the sizes it keeps: the bodies past the cut are neither read out nor sent.
_WITHIN_BYTES = f"""
SELECT {STORED_SESSION_COLUMNS} FROM (
  SELECT *, sum(octet_length(body)) OVER (ORDER BY seq DESC) - octet_length(body) AS bytes_before
    FROM ({{page}}) AS page
) AS counted WHERE bytes_before < %(max_bytes)s ORDER BY seq DESC
"""
_COUNT_MINUTE = """
INSERT INTO delivery_minutes (export_id, minute, delivered, failed)
VALUES (%(export_id)s, %(minute)s, %(delivered)s, %(failed)s)
ON CONFLICT (export_id, minute) DO UPDATE
   SET delivered = delivery_minutes.delivered + EXCLUDED.delivered,
       failed = delivery_minutes.failed + EXCLUDED.failed
"""

# A session's open_sessions row is locked before its events are looked at, by add_events and
# complete_part alike (in that order: row, then events; sorted when there are several), so that
# the two take turns per session as SQLite's one writer makes them: a part being completed is
# waited for, and then its completed_until and arrivals are the ones read. add_events makes the
# rows of new sessions first: two requests opening one session then take turns too (else both
# would count from no event held, and keep twice the limit).
_OPEN_NEW_SESSIONS = """
INSERT INTO open_sessions (tenant_id, session_id, last_arrival, check_at, arrivals)
SELECT DISTINCT tenant_id, session_id, %(now)s::bigint, %(check_at)s::bigint, 0
  FROM unnest(%(tenant_id)s::text[], %(session_id)s::text[]) AS e (tenant_id, session_id)
 ORDER BY tenant_id, session_id
    ON CONFLICT (tenant_id, session_id) DO NOTHING
"""
_LOCK_OPEN_SESSIONS = """
SELECT 1 FROM open_sessions
 WHERE (tenant_id, session_id) IN (SELECT * FROM unnest(%(tenant_id)s::text[], %(session_id)s::text[]))
 ORDER BY tenant_id, session_id
   FOR UPDATE
"""
# Events of a part already completed (``ts <= completed_until``) are late, except attributes;
# the others are kept once (a re-sent event id is a duplicate; within a batch the first one), in
# the order sent while their session holds fewer than ``limit`` (the rest: overflow), and every
# session that kept some counts them as arrivals and is looked at again at ``check_at``. Rows
# are written in key order: two batches never wait for each other crosswise.
_ADD_EVENTS = """
WITH incoming AS (
    SELECT * FROM unnest(%(tenant_id)s::text[], %(session_id)s::text[], %(event_id)s::text[],
                         %(ts)s::bigint[], %(kind)s::text[], %(body)b::bytea[])
           WITH ORDINALITY AS e (tenant_id, session_id, event_id, ts, kind, body, ord)
), timely AS (
    SELECT e.*, coalesce(o.held, 0) AS held FROM incoming e LEFT JOIN open_sessions o USING (tenant_id, session_id)
     WHERE o.completed_until IS NULL OR e.ts > o.completed_until OR e.kind = 'attributes'
), fresh AS (
    SELECT DISTINCT ON (tenant_id, session_id, event_id) t.* FROM timely t
     WHERE NOT EXISTS (SELECT 1 FROM rum_events r
                        WHERE (r.tenant_id, r.session_id, r.event_id) = (t.tenant_id, t.session_id, t.event_id))
     ORDER BY tenant_id, session_id, event_id, ord
), roomy AS (
    SELECT * FROM (SELECT f.*, row_number() OVER (PARTITION BY tenant_id, session_id ORDER BY ord) AS nth
                     FROM fresh f) ranked
     WHERE %(limit)s::bigint IS NULL OR held + nth <= %(limit)s::bigint
), kept AS (
    INSERT INTO rum_events (tenant_id, session_id, event_id, ts, kind, body, received_at)
    SELECT tenant_id, session_id, event_id, ts, kind, body, %(now)s FROM roomy
     ORDER BY tenant_id, session_id, event_id
        ON CONFLICT DO NOTHING
    RETURNING tenant_id, session_id, ts
), touched AS (
    INSERT INTO open_sessions (tenant_id, session_id, last_arrival, check_at, arrivals, clock_lag, held)
    SELECT tenant_id, session_id, %(now)s::bigint, %(check_at)s::bigint, count(*),
           greatest(0, %(now)s::bigint - max(ts)), count(*) FROM kept
     GROUP BY tenant_id, session_id ORDER BY tenant_id, session_id
        ON CONFLICT (tenant_id, session_id)
        DO UPDATE SET last_arrival = excluded.last_arrival, check_at = excluded.check_at,
                      arrivals = open_sessions.arrivals + excluded.arrivals,
                      held = open_sessions.held + excluded.held,
                      clock_lag = least(open_sessions.clock_lag, excluded.clock_lag)
)
SELECT (SELECT count(*) FROM incoming), (SELECT count(*) FROM timely), (SELECT count(*) FROM fresh),
       (SELECT count(*) FROM roomy), (SELECT count(*) FROM kept)
"""
_ARRIVALS_AND_PART = (
    "SELECT arrivals, part FROM open_sessions WHERE tenant_id = %s AND session_id = %s FOR UPDATE"
)
_DUE_SESSIONS = """
SELECT o.tenant_id, o.session_id, o.part, o.split, o.last_start, o.arrivals, o.last_arrival, o.clock_lag,
       o.parts_before, coalesce((SELECT array_agg(e.body ORDER BY e.ts, e.event_id)
                   FROM rum_events e
                  WHERE e.tenant_id = o.tenant_id AND e.session_id = o.session_id), '{}')
  FROM open_sessions o
 WHERE o.check_at IS NOT NULL AND o.check_at <= %s
 ORDER BY o.check_at, o.tenant_id COLLATE "C", o.session_id COLLATE "C"
 LIMIT %s
"""
_DROP_CONSUMED = (
    "DELETE FROM rum_events WHERE tenant_id = %s AND session_id = %s AND event_id = ANY(%s::text[])"
)
# greatest() ignores NULLs: completed_until only grows, and stays as it is when none is given.
_NOTE_PART = """
UPDATE open_sessions
   SET part = part + %(parts)s, split = %(split)s, check_at = %(check_at)s::bigint,
       last_start = coalesce(%(start)s::bigint, last_start), held = held - %(dropped)s,
       parts_before = CASE WHEN %(split)s THEN parts_before ELSE part + %(parts)s END,
       completed_until = greatest(completed_until, %(until)s::bigint)
 WHERE tenant_id = %(tenant)s AND session_id = %(session)s
"""
# Open sessions nothing arrived for since the horizon, unless due now: those the sessionizer has
# not looked at since they became due (none ran: a server down for longer) are completed, not dropped.
_PURGE_EVENTS = """
WITH stale AS (DELETE FROM open_sessions WHERE last_arrival < %(horizon)s
                  AND (check_at IS NULL OR check_at > %(now)s) RETURNING tenant_id, session_id)
DELETE FROM rum_events e USING stale s WHERE e.tenant_id = s.tenant_id AND e.session_id = s.session_id
"""

_POSITION_BEFORE = """
SELECT coalesce((SELECT seq FROM sessions WHERE received_at >= %s ORDER BY seq LIMIT 1) - 1,
                (SELECT max(seq) FROM sessions), 0)
"""
_IN_SHARD = "seq > %(after)s AND (%(shards)s = 1 OR seq %% %(shards)s = %(shard)s)"
_BACKLOG = f"""
SELECT count(*), (SELECT received_at FROM sessions WHERE {_IN_SHARD} ORDER BY seq LIMIT 1)
  FROM sessions WHERE {_IN_SHARD}
"""
_SHARD_CURSORS = f"SELECT {CURSOR_COLUMNS} FROM export_cursors WHERE export_id = %s ORDER BY shard"
_INSERT_CURSOR = (
    f"INSERT INTO export_cursors ({CURSOR_COLUMNS}, updated_at) VALUES ({', '.join(['%s'] * 11)})"
)
_MOVE_CURSOR = """
INSERT INTO export_cursors (export_id, position, updated_at) VALUES (%(export_id)s, %(position)s, %(now)s)
    ON CONFLICT (export_id, shard) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at
"""
_MOVE_OTHER_SHARDS = """
UPDATE export_cursors SET position = %(position)s, updated_at = %(now)s WHERE export_id = %(export_id)s AND shard <> 0
"""
# The lease row is locked (FOR SHARE) until the cursor write commits: a takeover (which updates
# that row) waits for the write, or the write sees the new owner and is refused; never both.
_HOLD_LEASE = f"""
SELECT 1 FROM export_leases
 WHERE export_id = %s AND shard = %s AND owner = %s AND expires_at > {_NOW}
   FOR SHARE
"""
_COUNT_BULK = """
UPDATE export_cursors
   SET position = greatest(position, %(position)s), delivered = delivered + %(delivered)s,
       failed = failed + %(failed)s, retried = retried + %(retried)s, updated_at = %(now)s,
       last_success_at = CASE WHEN %(delivered)s > 0 THEN %(now)s ELSE last_success_at END
 WHERE export_id = %(export_id)s AND shard = %(shard)s AND shards = %(shards)s
"""
_SKIP = """
UPDATE export_cursors SET position = greatest(position, %(position)s), updated_at = %(now)s
 WHERE export_id = %(export_id)s AND shard = %(shard)s AND shards = %(shards)s
"""
_READ_LOG = f"SELECT {LOG_ENTRY_COLUMNS} FROM sessions WHERE seq > %s ORDER BY seq LIMIT %s"
_LOG_END = "SELECT coalesce(max(seq), 0) FROM sessions"
_READ_SHARD = (
    f"SELECT {LOG_ENTRY_COLUMNS} FROM sessions WHERE seq > %s AND seq %% %s = %s ORDER BY seq LIMIT %s"
)

# -- leases (see base.Store) --
_NOTE_WORKER = f"""
INSERT INTO export_workers (owner, expires_at) VALUES (%(owner)s, {_NOW} + %(ms)s)
    ON CONFLICT (owner) DO UPDATE SET expires_at = excluded.expires_at
"""
# Rows are locked in key order, as every statement that locks several lease rows does.
_RENEW_LEASES = f"""
UPDATE export_leases SET expires_at = {_NOW} + %(ms)s
 WHERE (export_id, shard) IN (SELECT export_id, shard FROM export_leases
                               WHERE owner = %(owner)s AND expires_at > {_NOW}
                               ORDER BY export_id, shard FOR UPDATE)
"""
_FORGET_EXPIRED_WORKERS = f"""
DELETE FROM export_workers
 WHERE owner IN (SELECT owner FROM export_workers WHERE expires_at <= {_NOW} FOR UPDATE SKIP LOCKED)
"""
_LIVE_WORKERS = f'SELECT owner FROM export_workers WHERE expires_at > {_NOW} ORDER BY owner COLLATE "C"'
_LIVE_LEASES = f'SELECT {LEASE_COLUMNS} FROM export_leases WHERE expires_at > {_NOW} ORDER BY export_id COLLATE "C", shard'
_CLAIM_LEASE = f"""
INSERT INTO export_leases AS l (export_id, shard, owner, expires_at)
VALUES (%(export_id)s, %(shard)s, %(owner)s, {_NOW} + %(ms)s)
    ON CONFLICT (export_id, shard) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
 WHERE l.owner = excluded.owner OR l.expires_at <= {_NOW}
"""
_REVOKE_LEASES = """
DELETE FROM export_leases
 WHERE (export_id, shard) IN (SELECT export_id, shard FROM export_leases WHERE export_id = %s
                               ORDER BY shard FOR UPDATE)
"""
_INSERT_DEAD_LETTER = """
INSERT INTO dead_letters (export_id, created_at, first_seq, last_seq, session_count, sessions, content_type,
                          body, reason, attempts)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id
"""
_LIST_DEAD_LETTERS = f"""
SELECT {LISTED_DEAD_LETTER_COLUMNS} FROM dead_letters
 WHERE export_id = %(export)s AND (%(state)s::text IS NULL OR state = %(state)s)
   AND (%(before)s::bigint IS NULL OR id < %(before)s)
   AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
 ORDER BY id DESC LIMIT %(limit)s
"""
_RAISE_ALERT = """
INSERT INTO alerts (export_id, kind, title, message, opened_at, last_seen_at) VALUES (%s, %s, %s, %s, %s, %s)
    ON CONFLICT (export_id, kind) WHERE closed_at IS NULL
    DO UPDATE SET title = excluded.title, message = excluded.message, last_seen_at = excluded.last_seen_at,
                  occurrences = alerts.occurrences + 1
"""
_CLOSE_ALERTS = "UPDATE alerts SET closed_at = %s WHERE export_id = %s AND kind = %s AND closed_at IS NULL"
_OPEN_ALERT_TITLE = "SELECT title FROM alerts WHERE export_id = %s AND kind = %s AND closed_at IS NULL"
# A log entry's columns without its body: the attributes a zone or a listing reads.
_ATTRIBUTE_COLUMNS = LOG_ENTRY_COLUMNS.replace("body", "''::bytea AS body")
_COUNT_BETWEEN = "SELECT count(*) FROM sessions WHERE seq > %s AND seq <= %s AND seq %% %s = %s"
_ATTRIBUTES_BETWEEN = _COUNT_BETWEEN.replace("count(*)", _ATTRIBUTE_COLUMNS)
_UPDATE_SETTING = """
UPDATE settings_objects
   SET scope = %s, external_id = %s, value = %s, schema_version = %s, modified = %s, modified_by = %s,
       version = %s
 WHERE object_id = %s AND version = %s
"""
# Text ordering is byte order ("C"), as in SQLite, whatever the database's collation.
_LIST_SETTINGS = f"""
SELECT {SETTINGS_COLUMNS} FROM settings_objects WHERE (%(schema)s::text IS NULL OR schema_id = %(schema)s)
 ORDER BY created, object_id COLLATE "C"
"""


class PostgresStore:
    dialect = "postgresql"

    def __init__(self, url: str, *, max_connections: int = MAX_CONNECTIONS, existing: bool = False) -> None:
        self.url = url
        self._db = PostgresDatabase(
            url,
            migrations="sessionexport.store",
            migrations_table="schema_migrations",
            migration_lock=MIGRATION_LOCK,
            max_connections=max_connections,
            existing=existing,
        )

    async def open(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    # -- session log -------------------------------------------------------------------------
    async def append_sessions(self, sessions: Sequence[NewSession], received_at: int) -> AppendResult:
        if not sessions:
            return AppendResult(0, 0)
        async with self._transaction() as conn:  # its lock is held until the commit
            return await append_in_transaction(conn, sessions, received_at)

    async def recent_sessions(
        self,
        *,
        user_session_id: str | None = None,
        user_id: str | None = None,
        before_seq: int | None = None,
        limit: int = 100,
        max_bytes: int | None = None,
    ) -> list[StoredSession]:
        if user_id is not None:
            query = _RECENT_SESSIONS_OF_USER
        else:
            query = _RECENT_SESSIONS if user_session_id is None else _RECENT_SESSIONS_OF_ONE
        params = {"usid": user_session_id, "uid": user_id, "before": before_seq, "limit": limit}
        if max_bytes is not None:
            query, params = _WITHIN_BYTES.format(page=query), params | {"max_bytes": max_bytes}
        rows = await self._rows(query, params)
        return [StoredSession(*row) for row in rows]

    async def count_sessions(self) -> int:
        return int(await self._value("SELECT count(*) FROM sessions"))

    async def purge_sessions(self, up_to_seq: int) -> int:
        async def delete_up_to(count: int) -> int:
            return await self._execute(_PURGE_UP_TO, (up_to_seq, count))

        return await purge_in_batches(delete_up_to)

    # -- RUM events and open sessions --------------------------------------------------------
    async def add_events(
        self, events: Sequence[NewEvent], now: int, check_at: int, limit: int | None = None
    ) -> EventsResult:
        if not events:
            return EventsResult(0, 0, 0)
        sessions = {"tenant_id": [e.tenant_id for e in events], "session_id": [e.session_id for e in events]}
        params = sessions | {
            "event_id": [e.event_id for e in events],
            "ts": [e.ts for e in events],
            "kind": [e.kind for e in events],
            "body": [e.body for e in events],
            "now": now,
            "check_at": check_at,
            "limit": limit,
        }
        async with self._transaction() as conn:
            await conn.execute(_OPEN_NEW_SESSIONS, params)
            await conn.execute(_LOCK_OPEN_SESSIONS, sessions)
            cursor = await conn.execute(_ADD_EVENTS, params)
            row = await cursor.fetchone()
        assert row is not None  # aggregates: always one row
        incoming, timely, fresh, roomy, kept = row
        # (roomy - kept: events another transaction kept meanwhile, for a session not yet open)
        return EventsResult(kept, timely - fresh + roomy - kept, incoming - timely, fresh - roomy)

    async def due_sessions(self, now: int, limit: int) -> list[OpenSession]:
        rows = await self._rows(_DUE_SESSIONS, (now, limit))
        return [
            OpenSession(
                tenant, session, part, split, list(events), last_start, arrivals, last_arrival, lag, before
            )
            for tenant, session, part, split, last_start, arrivals, last_arrival, lag, before, events in rows
        ]

    async def complete_part(self, part: CompletedPart, received_at: int) -> AppendResult:
        async with self._transaction() as conn:
            cursor = await conn.execute(_ARRIVALS_AND_PART, (part.tenant_id, part.session_id))
            row = await cursor.fetchone()
            if open_session_changed(part, tuple(row) if row else None):
                return AppendResult(0, 0)  # looked at again: add_events set it so, or another worker did it
            dropped = 0
            if part.consumed:
                cursor = await conn.execute(
                    _DROP_CONSUMED, (part.tenant_id, part.session_id, list(part.consumed))
                )
                dropped = cursor.rowcount
            await conn.execute(_NOTE_PART, _part_params(part) | {"dropped": dropped})
            # The append comes last: its lock (see append_in_transaction) is held as briefly as can be.
            if part.session is None:
                return AppendResult(0, 0)
            return await append_in_transaction(conn, [part.session], received_at)

    async def purge_replayed_bodies(self, replayed_before: int) -> int:
        return await self._execute(
            "UPDATE dead_letters SET body = ''::bytea WHERE state = 'replayed' AND replayed_at < %s"
            " AND octet_length(body) > 0",
            (replayed_before,),
        )

    async def purge_events(self, received_before: int, now: int) -> int:
        return await self._execute(_PURGE_EVENTS, {"horizon": received_before, "now": now})

    # -- API tokens --------------------------------------------------------------------------
    async def add_token(self, token: TokenRecord) -> None:
        await self._execute(
            f"INSERT INTO api_tokens ({TOKEN_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            token.row(),
        )

    async def get_token(self, token_id: str) -> TokenRecord | None:
        rows = await self._rows(f"SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = %s", (token_id,))
        return TokenRecord.from_row(rows[0]) if rows else None

    async def list_tokens(self) -> list[TokenRecord]:
        query = f'SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at, id COLLATE "C"'
        return [TokenRecord.from_row(row) for row in await self._rows(query)]

    async def revoke_token(self, token_id: str, revoked_at: int) -> bool:
        query = "UPDATE api_tokens SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL"
        return await self._execute(query, (revoked_at, token_id)) == 1

    # -- UI login sessions -------------------------------------------------------------------
    async def end_ui_session(self, session_id: str, expires_at: int, now: int) -> None:
        async with self._transaction() as conn:
            await conn.execute("DELETE FROM ended_ui_sessions WHERE expires_at < %s", (now,))
            await conn.execute(
                "INSERT INTO ended_ui_sessions (id, expires_at) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING",
                (session_id, expires_at),
            )

    async def ui_session_ended(self, session_id: str) -> bool:
        return bool(await self._rows("SELECT 1 FROM ended_ui_sessions WHERE id = %s", (session_id,)))

    # -- settings objects --------------------------------------------------------------------
    async def list_settings(self, schema_id: str | None = None) -> list[SettingsRecord]:
        return [SettingsRecord(*row) for row in await self._rows(_LIST_SETTINGS, {"schema": schema_id})]

    async def get_setting(self, object_id: str) -> SettingsRecord | None:
        query = f"SELECT {SETTINGS_COLUMNS} FROM settings_objects WHERE object_id = %s"
        rows = await self._rows(query, (object_id,))
        return SettingsRecord(*rows[0]) if rows else None

    async def insert_setting(self, record: SettingsRecord, max_objects: int) -> None:
        async with self._transaction() as conn:
            # Counting then inserting is a race between two transactions unless inserts into one
            # schema take turns: the lock is held until this transaction ends.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (SETTINGS_LOCK, record.schema_id)
            )
            if await _count_settings(conn, record.schema_id) >= max_objects:
                raise TooManyObjects(record.schema_id)
            if await _external_id_taken(conn, record):
                raise ExternalIdTaken(record.external_id)
            await conn.execute(
                f"INSERT INTO settings_objects ({SETTINGS_COLUMNS}) VALUES ({', '.join(['%s'] * 11)})",
                settings_values(record),
            )

    async def update_setting(self, record: SettingsRecord, expected_version: int) -> None:
        # A concurrent update of the same row makes this one wait, then see the new version: conflict.
        changed = await self._execute(
            _UPDATE_SETTING,
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
        if changed != 1:
            raise VersionConflict(record.object_id)

    async def delete_setting(self, object_id: str, expected_version: int | None) -> bool:
        async with self._transaction() as conn:
            cursor = await conn.execute(
                "SELECT version FROM settings_objects WHERE object_id = %s FOR UPDATE", (object_id,)
            )
            row = await cursor.fetchone()
            if row is None:
                return False
            if expected_version is not None and row[0] != expected_version:
                raise VersionConflict(object_id)
            await conn.execute("DELETE FROM settings_objects WHERE object_id = %s", (object_id,))
            return True

    # -- export cursors ----------------------------------------------------------------------
    async def log_position(self) -> int:
        return int(await self._value(_LOG_END))

    async def position_before(self, received_at: int) -> int:
        return int(await self._value(_POSITION_BEFORE, (received_at,)))

    async def ensure_cursor(self, export_id: str, position: int, now: int) -> Cursor:
        # Two statements: the SELECT takes a new snapshot, so it also sees a cursor that a
        # concurrent ensure_cursor created while this INSERT waited for it.
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO export_cursors (export_id, position, updated_at) VALUES (%s, %s, %s)"
                " ON CONFLICT (export_id, shard) DO NOTHING",
                (export_id, position, now),
            )
            shards = await _shard_cursors(conn, export_id)
        return combined(shards)

    async def get_cursor(self, export_id: str) -> Cursor | None:
        async with self._connection() as conn:
            shards = await _shard_cursors(conn, export_id)
        return combined(shards) if shards else None

    async def list_cursors(self) -> list[Cursor]:
        query = f'SELECT {CURSOR_COLUMNS} FROM export_cursors ORDER BY export_id COLLATE "C", shard'
        return [Cursor(*row) for row in await self._rows(query)]

    async def move_cursor(self, export_id: str, position: int, now: int) -> None:
        params = {"export_id": export_id, "position": position, "now": now}
        async with self._transaction() as conn:
            await conn.execute(_REVOKE_LEASES, (export_id,))  # leases first: the order every writer locks in
            await conn.execute(_MOVE_CURSOR, params)
            await conn.execute(_MOVE_OTHER_SHARDS, params)

    async def pass_expired(
        self,
        export_id: str,
        boundary: int,
        now: int,
        alert_kind: str,
        describe: DescribeLoss,
        owed: Owed | None = None,
    ) -> int:
        async with self._transaction() as conn:
            # Locked, then read: a purge at once in another process waits here, and then sees
            # the cursors this one moved (it counts nothing twice).
            cursor = await conn.execute(
                "SELECT position, shard, shards FROM export_cursors WHERE export_id = %s FOR UPDATE",
                (export_id,),
            )
            behind = [row for row in await cursor.fetchall() if row[0] < boundary]
            lost = 0
            for position, shard, shards in behind:
                params = (position, boundary, shards, shard)
                if owed is None:
                    counted = await conn.execute(_COUNT_BETWEEN, params)
                    lost += int((await counted.fetchall())[0][0])
                else:  # row by row from the server: however many expired, memory stays flat
                    async for row in conn.cursor().stream(_ATTRIBUTES_BETWEEN, params):
                        lost += owed(log_entry(row))
            if lost:
                found = await conn.execute(_OPEN_ALERT_TITLE, (export_id, alert_kind))
                open_alert = await found.fetchone()
                alert = describe(lost, min(row[0] for row in behind), open_alert[0] if open_alert else None)
                await conn.execute(
                    _RAISE_ALERT, (export_id, alert.kind, alert.title, alert.message, now, now)
                )
            await conn.execute(
                "UPDATE export_cursors SET position = %s, updated_at = %s WHERE export_id = %s AND position < %s",
                (boundary, now, export_id, boundary),
            )
            return lost

    async def delete_cursor(self, export_id: str) -> None:
        async with self._transaction() as conn:
            await conn.execute(_REVOKE_LEASES, (export_id,))
            await conn.execute("DELETE FROM export_cursors WHERE export_id = %s", (export_id,))
            await conn.execute("DELETE FROM delivery_minutes WHERE export_id = %s", (export_id,))
            await conn.execute("DELETE FROM dead_letters WHERE export_id = %s", (export_id,))
            await conn.execute(
                f"UPDATE alerts SET closed_at = {_NOW} WHERE export_id = %s AND closed_at IS NULL",
                (export_id,),
            )

    async def read_log(self, after_seq: int, limit: int) -> list[LogEntry]:
        # Safe to pass every seq seen: appends commit in seq order (see append_in_transaction).
        return [log_entry(row) for row in await self._rows(_READ_LOG, (after_seq, limit), binary=True)]

    async def read_shard(self, after_seq: int, limit: int, shard: int, shards: int) -> LogRead:
        def select(conn: ReadConnection) -> LogRead:
            [(log_end,)] = conn.execute(_LOG_END).fetchall()  # read first: see cursors.covered
            if shards == 1:  # the plain index range
                cursor = conn.execute(_READ_LOG, (after_seq, limit), binary=True)  # see _rows
            else:
                cursor = conn.execute(_READ_SHARD, (after_seq, shards, shard, limit), binary=True)
            entries = [log_entry(row) for row in cursor.fetchall()]
            return LogRead(entries, covered(after_seq, [e.seq for e in entries], limit, log_end))

        return await self._db.read(select)  # megabytes of bodies: see PostgresDatabase.read

    async def recent_log(
        self, received_since: int, limit: int, before_seq: int | None = None, *, bodies: bool = True
    ) -> list[LogEntry]:
        columns = LOG_ENTRY_COLUMNS if bodies else _ATTRIBUTE_COLUMNS
        query = (
            f"SELECT {columns} FROM sessions WHERE received_at >= %(since)s"
            " AND (%(before)s::bigint IS NULL OR seq < %(before)s) ORDER BY seq DESC LIMIT %(limit)s"
        )
        rows = await self._rows(query, {"since": received_since, "before": before_seq, "limit": limit})
        return [log_entry(row) for row in rows]

    async def backlog(self, after_seq: int, shard: int = 0, shards: int = 1) -> tuple[int, int | None]:
        count, first = await self._row(_BACKLOG, {"after": after_seq, "shard": shard, "shards": shards})
        return int(count), (int(first) if first is not None else None)

    async def start_shard(self, claim: Claim, position: int, now: int) -> int:
        async with self._transaction() as conn:
            await _hold_lease(conn, claim)
            # Exporters of several shards may start at once: one of them splits the cursor.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (CURSOR_LOCK, claim.export_id)
            )
            shards = await _shard_cursors(conn, claim.export_id)
            if not split_as(shards, claim.shards):
                await conn.execute("DELETE FROM export_cursors WHERE export_id = %s", (claim.export_id,))
                shards = split(claim.export_id, shards, claim.shards, position)
                for row in shards:
                    await conn.execute(_INSERT_CURSOR, (*cursor_values(row), now))
            return shards[claim.shard].position

    async def record_bulk(self, claim: Claim, position: int, decision: BulkDecision, now: int) -> list[int]:
        async with self._transaction() as conn:
            await conn.execute(_UNSYNCED)
            await _hold_lease(conn, claim)
            ids = [await _insert_dead_letter(conn, letter) for letter in decision.letters]
            counts = {"delivered": decision.delivered, "failed": decision.failed, "retried": decision.retried}
            written = await conn.execute(_COUNT_BULK, claim_params(claim, position, now) | counts)
            if written.rowcount != 1:
                raise LeaseLost(f"its cursor is no longer split in {claim.shards}")
            if decision.letters:
                await conn.execute(
                    "UPDATE export_cursors SET last_error_at = %s, last_error = %s"
                    " WHERE export_id = %s AND shard = %s",
                    (now, decision.letters[-1].reason, claim.export_id, claim.shard),
                )
            await _count_minute(conn, claim.export_id, decision, now)
            for alert in decision.alerts:
                await conn.execute(
                    _RAISE_ALERT, (claim.export_id, alert.kind, alert.title, alert.message, now, now)
                )
            for kind in decision.closes:
                await conn.execute(_CLOSE_ALERTS, (now, claim.export_id, kind))
            return ids

    async def delivery_history(self, export_id: str, since: int) -> list[DeliveryMinute]:
        query = (
            "SELECT minute, delivered, failed FROM delivery_minutes"
            " WHERE export_id = %s AND minute >= %s ORDER BY minute"
        )
        return [DeliveryMinute(*row) for row in await self._rows(query, (export_id, since))]

    async def record_skip(self, claim: Claim, position: int, now: int) -> None:
        async with self._transaction() as conn:
            await conn.execute(_UNSYNCED)
            await _hold_lease(conn, claim)
            written = await conn.execute(_SKIP, claim_params(claim, position, now))
            if written.rowcount != 1:
                raise LeaseLost(f"its cursor is no longer split in {claim.shards}")

    async def record_error(self, export_id: str, message: str, now: int) -> None:
        await self._execute(
            "UPDATE export_cursors SET last_error_at = %s, last_error = %s, updated_at = %s"
            " WHERE export_id = %s",
            (now, message, now, export_id),
        )

    # -- work distribution -------------------------------------------------------------------
    async def heartbeat(self, owner: str, lease_ms: int) -> WorkState:
        params = {"owner": owner, "ms": lease_ms}
        async with self._transaction() as conn:
            await conn.execute(_NOTE_WORKER, params)
            await conn.execute(_RENEW_LEASES, params)
        # Apart from the renewal, and past rows that are locked: a worker stopped inside its own
        # heartbeat holds its row, and must not hold up every other worker's heartbeat with it
        # (each of them holding its own leases meanwhile, which its exporters then wait for).
        await self._execute(_FORGET_EXPIRED_WORKERS)
        workers = await self._rows(_LIVE_WORKERS)
        leases = await self._rows(_LIVE_LEASES)
        return WorkState(tuple(w for (w,) in workers), tuple(Lease(*row) for row in leases))

    async def claim_lease(self, export_id: str, shard: int, owner: str, lease_ms: int) -> bool:
        params = {"export_id": export_id, "shard": shard, "owner": owner, "ms": lease_ms}
        return await self._execute(_CLAIM_LEASE, params) == 1

    async def release_lease(self, export_id: str, shard: int, owner: str) -> None:
        await self._execute(
            "DELETE FROM export_leases WHERE export_id = %s AND shard = %s AND owner = %s",
            (export_id, shard, owner),
        )

    async def retire_worker(self, owner: str) -> None:
        async with self._transaction() as conn:
            await conn.execute(
                "DELETE FROM export_leases WHERE (export_id, shard) IN (SELECT export_id, shard"
                " FROM export_leases WHERE owner = %s ORDER BY export_id, shard FOR UPDATE)",
                (owner,),
            )
            await conn.execute("DELETE FROM export_workers WHERE owner = %s", (owner,))

    async def list_leases(self) -> list[Lease]:
        return [Lease(*row) for row in await self._rows(_LIVE_LEASES)]

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
        wanted = None if ids is None else list(ids)
        params = {"export": export_id, "state": state, "before": before_id, "ids": wanted, "limit": limit}
        return [listed_dead_letter(row) for row in await self._rows(_LIST_DEAD_LETTERS, params)]

    async def get_dead_letter(self, letter_id: int) -> DeadLetter | None:
        rows = await self._rows(f"SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE id = %s", (letter_id,))
        return dead_letter(rows[0]) if rows else None

    async def count_dead_letters(self, export_id: str, state: str = "pending") -> int:
        query = "SELECT count(*) FROM dead_letters WHERE export_id = %s AND state = %s"
        return int(await self._value(query, (export_id, state)))

    async def replayed_sessions(self, export_id: str) -> int:
        query = "SELECT coalesce(sum(session_count), 0) FROM dead_letters WHERE export_id = %s AND state = 'replayed'"
        return int(await self._value(query, (export_id,)))

    async def discard_dead_letters(
        self, export_id: str, now: int, up_to: int | None = None
    ) -> tuple[int, int]:
        rows = await self._rows(
            "DELETE FROM dead_letters WHERE export_id = %s AND state = 'pending'"
            " AND (replaying_until IS NULL OR replaying_until < %s)"
            " AND (%s::bigint IS NULL OR id <= %s::bigint) RETURNING session_count",
            (export_id, now, up_to, up_to),
        )
        return len(rows), sum(row[0] for row in rows)

    async def claim_dead_letter(
        self, letter_id: int, export_id: str, now: int, until: int
    ) -> DeadLetter | None:
        rows = await self._rows(
            "UPDATE dead_letters SET replaying_until = %s WHERE id = %s AND export_id = %s"
            " AND state = 'pending' AND (replaying_until IS NULL OR replaying_until < %s)"
            f" RETURNING {DEAD_LETTER_COLUMNS}",
            (until, letter_id, export_id, now),
        )
        return dead_letter(rows[0]) if rows else None

    async def note_replayed(self, export_id: str, now: int) -> None:
        await self._execute(
            "UPDATE export_cursors SET last_success_at = greatest(coalesce(last_success_at, 0), %s)"
            " WHERE export_id = %s",
            (now, export_id),
        )

    async def renew_replay_claim(self, letter_id: int, held_until: int, until: int) -> bool:
        rows = await self._rows(
            "UPDATE dead_letters SET replaying_until = %s WHERE id = %s AND replaying_until = %s"
            " AND state = 'pending' RETURNING id",
            (until, letter_id, held_until),
        )
        return bool(rows)

    async def finish_replay(
        self,
        letter_id: int,
        attempts: list[dict[str, object]],
        delivered: bool,
        now: int,
        reason: str | None = None,
    ) -> None:
        async with self._transaction() as conn:
            # FOR UPDATE: two replays of one letter each keep the other's attempts.
            cursor = await conn.execute(
                "SELECT attempts FROM dead_letters WHERE id = %s FOR UPDATE", (letter_id,)
            )
            row = await cursor.fetchone()
            if row is None:
                return
            await conn.execute(
                "UPDATE dead_letters SET attempts = %s, state = %s, replayed_at = %s,"
                " reason = coalesce(%s, reason), replaying_until = NULL WHERE id = %s AND state = 'pending'",
                (
                    orjson.dumps([*orjson.loads(row[0]), *attempts]).decode(),
                    "replayed" if delivered else "pending",
                    now if delivered else None,
                    None if delivered else reason,
                    letter_id,
                ),
            )

    # -- alerts ------------------------------------------------------------------------------
    async def raise_alert(self, export_id: str, kind: str, title: str, message: str, now: int) -> None:
        await self._execute(_RAISE_ALERT, (export_id, kind, title, message, now, now))

    async def close_alerts(self, export_id: str, kind: str, now: int) -> int:
        return await self._execute(_CLOSE_ALERTS, (now, export_id, kind))

    async def list_alerts(self, *, open_only: bool = False, limit: int | None = None) -> list[Alert]:
        query = (
            f"SELECT {ALERT_COLUMNS} FROM alerts WHERE (NOT %(open)s OR closed_at IS NULL)"
            " ORDER BY id DESC LIMIT %(limit)s"  # NULL: no limit
        )
        return [Alert(*row) for row in await self._rows(query, {"open": open_only, "limit": limit})]

    # -- running statements --------------------------------------------------------------------
    async def _rows(self, query: str, params: Params = (), *, binary: bool = False) -> list[tuple[Any, ...]]:
        """``binary``: results in binary form (session bodies as they are, not hex text: half the
        bytes to send and no decoding; twice the sessions read per second)."""
        async with self._connection() as conn:
            cursor = await conn.execute(query, params, binary=binary)
            return await cursor.fetchall()

    async def _row(self, query: str, params: Params = ()) -> tuple[Any, ...]:
        """The one row of a query that always has one (an aggregate)."""
        rows = await self._rows(query, params)
        return rows[0]

    async def _value(self, query: str, params: Params = ()) -> Any:
        return (await self._row(query, params))[0]

    async def _execute(self, statement: str, params: Params = ()) -> int:
        """Run one statement (atomic by itself: the connection is in autocommit); rows it changed."""
        async with self._connection() as conn:
            cursor = await conn.execute(statement, params)
            return cursor.rowcount

    def _connection(self) -> AbstractAsyncContextManager[Connection]:
        return self._db.connection()

    def _transaction(self) -> AbstractAsyncContextManager[Connection]:
        return self._db.transaction()


# An exporter's decisions: lost in a server crash (not a killed client), they are made again, the
# bulk sent again; the commit need not wait for the WAL to reach the disk.
_UNSYNCED = "SET LOCAL synchronous_commit = off"


# -- rows in, records out ---------------------------------------------------------------------------
async def append_in_transaction(
    conn: Connection, sessions: Sequence[NewSession], received_at: int
) -> AppendResult:
    """Append inside the caller's transaction, as its last statement.

    Seqs are drawn at insert time but become visible at commit, and two appenders may commit in
    the opposite order of their seqs: a reader would then see seq 12 before seq 11 and move its
    cursor past 11 for good. So seqs are drawn under a lock that is released only by the commit
    (or rollback): the next appender draws higher seqs and commits after this one, and a reader
    that sees a seq has seen every lower one that will ever commit. (PostgreSQL makes a commit
    visible before it releases the transaction's locks.) The wait is for the INSERT and commit
    of the appenders ahead, nothing else of their transactions.
    """
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))
    cursor = await conn.execute(_APPEND, _session_columns(sessions, received_at))
    accepted = cursor.rowcount
    return AppendResult(accepted=accepted, duplicates=len(sessions) - accepted)


def _session_columns(sessions: Sequence[NewSession], received_at: int) -> dict[str, Any]:
    return {
        "received_at": received_at,
        "tenant_id": [s.tenant_id for s in sessions],
        "user_session_id": [s.user_session_id for s in sessions],
        "start_time": [s.start_time for s in sessions],
        "end_time": [s.end_time for s in sessions],
        "user_id": [s.user_id for s in sessions],
        "user_type": [s.user_type for s in sessions],
        "application_type": [s.application_type for s in sessions],
        "country": [s.country for s in sessions],
        "applications": [orjson.dumps(s.applications).decode() for s in sessions],
        "body": [s.body for s in sessions],
    }


def _part_params(part: CompletedPart) -> dict[str, Any]:
    return {
        "parts": 1 if part.session is not None else 0,
        "split": part.split,
        "check_at": part.check_at,
        "until": part.completed_until,
        "start": part.start,
        "tenant": part.tenant_id,
        "session": part.session_id,
    }


async def _count_settings(conn: Connection, schema_id: str) -> int:
    cursor = await conn.execute("SELECT count(*) FROM settings_objects WHERE schema_id = %s", (schema_id,))
    row = await cursor.fetchone()
    assert row is not None  # an aggregate always yields one row
    return int(row[0])


async def _external_id_taken(conn: Connection, record: SettingsRecord) -> bool:
    if record.external_id is None:
        return False
    cursor = await conn.execute(
        "SELECT 1 FROM settings_objects WHERE schema_id = %s AND external_id = %s",
        (record.schema_id, record.external_id),
    )
    return await cursor.fetchone() is not None


async def _shard_cursors(conn: Connection, export_id: str) -> list[Cursor]:
    cursor = await conn.execute(_SHARD_CURSORS, (export_id,))
    return [Cursor(*row) for row in await cursor.fetchall()]


async def _hold_lease(conn: Connection, claim: Claim) -> None:
    """Lock the claim's lease row until the transaction ends, or raise LeaseLost."""
    cursor = await conn.execute(_HOLD_LEASE, (claim.export_id, claim.shard, claim.owner))
    if await cursor.fetchone() is None:
        raise LeaseLost(f"shard {claim.shard}: {claim.owner} no longer holds its lease")


async def _insert_dead_letter(conn: Connection, letter: NewDeadLetter) -> int:
    cursor = await conn.execute(
        _INSERT_DEAD_LETTER,
        (
            letter.export_id,
            letter.created_at,
            letter.first_seq,
            letter.last_seq,
            len(letter.sessions),
            orjson.dumps(letter.sessions).decode(),
            letter.content_type,
            letter.body,
            letter.reason,
            orjson.dumps(letter.attempts).decode(),
        ),
    )
    row = await cursor.fetchone()
    assert row is not None  # RETURNING of a one-row INSERT
    return int(row[0])


async def _count_minute(conn: Connection, export_id: str, decision: BulkDecision, now: int) -> None:
    minute = now - now % MINUTE_MS
    params = {
        "export_id": export_id,
        "minute": minute,
        "delivered": decision.delivered,
        "failed": decision.failed,
    }
    await conn.execute(_COUNT_MINUTE, params)
    await conn.execute(
        "DELETE FROM delivery_minutes WHERE export_id = %s AND minute < %s", (export_id, minute - HISTORY_MS)
    )
