"""The receiver's SQLite backend: ``received.db`` in the data directory (the default)."""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Sequence
from itertools import groupby
from pathlib import Path
from typing import Any

from sessionexport.clock import HOUR_MS
from sessionexport.receiver.store.records import (
    DOCUMENT,
    LEGACY,
    SESSION,
    Counts,
    Document,
    RequestInfo,
    RequestRecord,
    SaveResult,
    StoredDocument,
)
from sessionexport.store.sqlite_engine import SQLiteEngine, hours_present, insert_rows

_INSERT = (
    "INSERT INTO documents (request_id, received_at, kind, key, locality, user_session_id, index_name, body)"
)
_KEEP = "ON CONFLICT (kind, locality, key) DO NOTHING"
_REPLACE = (
    "ON CONFLICT (kind, locality, key) DO UPDATE SET request_id = excluded.request_id,"
    " received_at = excluded.received_at, user_session_id = excluded.user_session_id, body = excluded.body"
)
# A join, not "(locality, key) IN (VALUES ...)": SQLite searches the index only by kind for that.
_STORED_KEYS = (
    "SELECT d.key FROM (VALUES {wanted}) AS wanted JOIN documents AS d"
    " ON d.kind = ? AND d.locality = wanted.column1 AND d.key = wanted.column2"
)
_DOCUMENT_COLUMNS = "seq, request_id, received_at, kind, key, user_session_id, index_name, body"
_REQUEST_COLUMNS = (
    "id, received_at, method, path, content_type, size, client, principal, status, documents, stored,"
    " duplicates, error"
)


class SQLiteReceivedStore:
    def __init__(self, path: Path, *, existing: bool = False) -> None:
        self.path = path
        self._engine = SQLiteEngine(path, "sessionexport.receiver", readers=2, existing=existing)

    async def open(self) -> None:
        await self._engine.open()

    async def close(self) -> None:
        await self._engine.close()

    async def save(self, request: RequestInfo, documents: Sequence[Document]) -> SaveResult:
        def write(conn: sqlite3.Connection) -> SaveResult:
            request_id, at = _insert_request(conn, request, 200, None), request.received_at
            created = _new_keys(conn, documents)
            # In order, one insert per run of documents that keep (or replace) alike; a known key
            # that keeps writes nothing.
            pairs = zip(documents, created, strict=True)
            for replaces, run in groupby(pairs, key=lambda pair: pair[0].replaces):
                rows = [
                    (request_id, at, d.kind, d.key, key_locality(d.key), d.user_session_id, d.index, d.body)
                    for d, new in run
                    if new or replaces
                ]
                insert_rows(conn, _INSERT, rows, _REPLACE if replaces else _KEEP)
            stored = sum(created)
            conn.execute(
                "UPDATE requests SET documents = ?, stored = ?, duplicates = ? WHERE id = ?",
                (len(documents), stored, len(documents) - stored, request_id),
            )
            return SaveResult(request_id, created)

        return await self._engine.write(write)

    async def refuse(self, request: RequestInfo, status: int, error: str) -> int:
        return await self._engine.write(lambda conn: _insert_request(conn, request, status, error))

    async def counts(self) -> Counts:
        def read(conn: sqlite3.Connection) -> Counts:
            kinds = dict(conn.execute("SELECT kind, count(*) FROM documents GROUP BY kind").fetchall())
            requests, refused = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE status >= 400) FROM requests"
            ).fetchone()
            return Counts(
                kinds.get(SESSION, 0), kinds.get(LEGACY, 0), kinds.get(DOCUMENT, 0), requests, refused
            )

        return await self._engine.read(read)

    async def documents(
        self,
        *,
        user_session_id: str | None = None,
        request_id: int | None = None,
        kind: str | None = None,
        limit: int = 20,
        before_seq: int | None = None,
    ) -> list[StoredDocument]:
        if user_session_id is not None:
            return await self._engine.read(
                lambda conn: _session_documents(conn, user_session_id, request_id, kind, limit, before_seq)
            )
        where, params = _document_filter(None, request_id, kind, before_seq)
        sql = f"SELECT {_DOCUMENT_COLUMNS} FROM documents{where} ORDER BY seq DESC LIMIT ?"

        def read(conn: sqlite3.Connection) -> list[StoredDocument]:
            return [StoredDocument(*row) for row in conn.execute(sql, (*params, limit))]

        return await self._engine.read(read)

    async def requests(self, limit: int = 20) -> list[RequestRecord]:
        sql = f"SELECT {_REQUEST_COLUMNS} FROM requests ORDER BY id DESC LIMIT ?"

        def read(conn: sqlite3.Connection) -> list[RequestRecord]:
            return [RequestRecord(*row) for row in conn.execute(sql, (limit,))]

        return await self._engine.read(read)


def _insert_request(conn: sqlite3.Connection, request: RequestInfo, status: int, error: str | None) -> int:
    cursor = conn.execute(
        "INSERT INTO requests (received_at, method, path, content_type, size, client, principal, status, error)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            request.received_at,
            request.method,
            request.path,
            request.content_type,
            request.size,
            request.client,
            request.principal,
            status,
            error,
        ),
    )
    return int(cursor.lastrowid or 0)


def key_locality(key: str) -> int:
    """The number that ends a key after a "-" (1 to 18 digits; else 0): a session's startTime. The
    unique index orders keys by it first, so that new documents land in its newest pages.
    Migration 3 says the same in SQL, where length() stops at a NUL: such keys (refused since,
    but an older receiver kept them) get 0."""
    head = key.rstrip("0123456789")
    digits = len(key) - len(head)
    return int(key[len(head) :]) if head.endswith("-") and 1 <= digits <= 18 and "\0" not in key else 0


def _new_keys(conn: sqlite3.Connection, documents: Sequence[Document]) -> list[bool]:
    """Per document: is its key neither stored nor earlier in the same request? One query per 500
    keys, each a search of the unique index."""
    stored: set[tuple[str, str]] = set()
    for kind in {d.kind for d in documents}:
        keys = list({d.key: None for d in documents if d.kind == kind})
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            wanted = [value for key in chunk for value in (key_locality(key), key)]
            found = conn.execute(
                _STORED_KEYS.format(wanted=",".join(["(?, ?)"] * len(chunk))), (*wanted, kind)
            )
            stored.update((kind, key) for (key,) in found)
    created = []
    for d in documents:
        created.append((d.kind, d.key) not in stored)
        stored.add((d.kind, d.key))
    return created


def _document_filter(
    user_session_id: str | None, request_id: int | None, kind: str | None, before_seq: int | None = None
) -> tuple[str, tuple[Any, ...]]:
    clauses, params = [], []
    for column, value in (("user_session_id", user_session_id), ("request_id", request_id), ("kind", kind)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if before_seq is not None:
        clauses.append("seq < ?")
        params.append(before_seq)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


def _session_documents(
    conn: sqlite3.Connection,
    user_session_id: str,
    request_id: int | None,
    kind: str | None,
    limit: int,
    before_seq: int | None = None,
) -> list[StoredDocument]:
    """The newest ``limit`` documents of a session id: the newest of each hour present, through the
    index by hour (a replaced document moves to the hour of its new version but keeps its seq, so
    every hour is probed), and the newest of all these."""
    probe, params = session_probe(user_session_id, request_id, kind, before_seq)
    found = [
        StoredDocument(*row)
        for hour in hours_present(conn, "documents")
        for row in conn.execute(probe, (*params, hour, limit))
    ]
    return heapq.nlargest(limit, found, key=lambda d: d.seq)


def session_probe(
    user_session_id: str, request_id: int | None, kind: str | None, before_seq: int | None = None
) -> tuple[str, tuple[Any, ...]]:
    """One hour's newest documents of a session id: the query, and its parameters but the hour and
    the limit, which follow them."""
    where, params = _document_filter(user_session_id, request_id, kind, before_seq)
    probe = f"SELECT {_DOCUMENT_COLUMNS} FROM documents{where} AND received_at / {HOUR_MS} = ?"
    return probe + " ORDER BY seq DESC LIMIT ?", params
