"""The receiver's PostgreSQL backend (``postgresql://...``), on ``store.postgresql_database``
(migrations under an advisory lock in ``receiver_schema_migrations``, pooled connections, errors
translated once to ``StoreError``, never with the password).

A save is one transaction: the request row, one upsert per document (in stretches of documents
that keep, or replace, alike, each sent in one round trip by psycopg's pipelined ``executemany``),
then the request's counts. Each upsert returns whether its key was new: ``ON CONFLICT DO NOTHING
RETURNING`` yields no row for a kept document, and for a replaced one ``xmax = 0`` holds only on a
freshly inserted row version. Both stay exact under concurrent saves of the same key, where a
check-then-insert would not.

Concurrent saves of the same keys wait for each other instead of deadlocking: every save upserts
its documents in the order of their keys, the one order all saves share, whatever mix of
documents that keep and replace it holds (each stretch of one kind in that order is one pipelined
``executemany``). The documents of one key keep their order in the request: an ``index`` then a
``create`` of an id is an update, then a conflict. Their seqs are drawn beforehand, in the
request's order, which is the order they are listed in. A deadlock PostgreSQL still reports ends
one save, which is run again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from itertools import groupby
from typing import Any

from psycopg import sql

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
from sessionexport.store.base import Deadlocked
from sessionexport.store.postgresql_database import Connection, PostgresDatabase

log = logging.getLogger(__name__)

MIGRATIONS = "sessionexport.receiver"
# Any constant works as long as nothing else sharing the database uses it; this one spells "SXRM".
MIGRATION_LOCK = 0x5358_524D
SAVE_ATTEMPTS = 3  # a save that deadlocked with others (see above) is run again, up to this

_INSERT = (
    "INSERT INTO documents (seq, request_id, received_at, kind, key, user_session_id, index_name, body)"
    " OVERRIDING SYSTEM VALUE VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (kind, key) DO "
)
_DRAW_SEQS = "SELECT nextval(pg_get_serial_sequence('documents', 'seq')) FROM generate_series(1, %s)"
_KEEP = _INSERT + "NOTHING RETURNING true"
# Same columns as the SQLite backend replaces: the key fixes kind and index, seq stays the first one's.
_REPLACE = (
    _INSERT + "UPDATE SET request_id = excluded.request_id, received_at = excluded.received_at,"
    " user_session_id = excluded.user_session_id, body = excluded.body RETURNING (xmax = 0)"
)
_INSERT_REQUEST = (
    "INSERT INTO requests (received_at, method, path, content_type, size, client, principal, status, error)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id"
)
_COUNT_REQUEST = "UPDATE requests SET documents = %s, stored = %s, duplicates = %s WHERE id = %s"
# One statement, so one snapshot: the numbers agree with each other under concurrent saves.
_COUNTS = (
    "SELECT (SELECT count(*) FROM documents WHERE kind = %s), (SELECT count(*) FROM documents WHERE kind = %s),"
    " (SELECT count(*) FROM documents WHERE kind = %s), count(*), count(*) FILTER (WHERE status >= 400)"
    " FROM requests"
)
_DOCUMENT_COLUMNS = "seq, request_id, received_at, kind, key, user_session_id, index_name, body"
_REQUEST_COLUMNS = (
    "id, received_at, method, path, content_type, size, client, principal, status, documents, stored,"
    " duplicates, error"
)


class PostgresReceivedStore:
    def __init__(self, url: str, *, max_connections: int = 4, existing: bool = False) -> None:
        self.url = url
        self._db = PostgresDatabase(
            url,
            migrations=MIGRATIONS,
            migrations_table="receiver_schema_migrations",
            migration_lock=MIGRATION_LOCK,
            max_connections=max_connections,
            existing=existing,
        )

    async def open(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def save(self, request: RequestInfo, documents: Sequence[Document]) -> SaveResult:
        for attempt in range(1, SAVE_ATTEMPTS + 1):
            try:
                return await self._save(request, documents)
            except Deadlocked:
                if attempt == SAVE_ATTEMPTS:
                    raise
                log.info("receiver: a save deadlocked with another; saving it again")
        raise AssertionError("unreachable")

    async def _save(self, request: RequestInfo, documents: Sequence[Document]) -> SaveResult:
        async with self._transaction() as conn:
            request_id = await _insert_request(conn, request, 200, None)
            cursor = await conn.execute(_DRAW_SEQS, (len(documents),))
            seqs = sorted(seq for (seq,) in await cursor.fetchall())  # the request's order
            created = [False] * len(documents)
            for replaces, stretch in groupby(_in_key_order(documents), key=lambda i: documents[i].replaces):
                statement = _REPLACE if replaces else _KEEP
                places = list(stretch)
                numbered = [(seqs[i], documents[i]) for i in places]
                found = await _save_documents(conn, statement, request_id, request.received_at, numbered)
                for i, new in zip(places, found, strict=True):
                    created[i] = new
            stored = sum(created)
            await conn.execute(_COUNT_REQUEST, (len(documents), stored, len(documents) - stored, request_id))
        return SaveResult(request_id, created)

    async def refuse(self, request: RequestInfo, status: int, error: str) -> int:
        async with self._transaction() as conn:
            return await _insert_request(conn, request, status, error)

    async def counts(self) -> Counts:
        async with self._transaction() as conn:
            cursor = await conn.execute(_COUNTS, (SESSION, LEGACY, DOCUMENT))
            row = await cursor.fetchone()
        assert row is not None  # an aggregate always yields one row
        return Counts(*row)

    async def documents(
        self,
        *,
        user_session_id: str | None = None,
        request_id: int | None = None,
        kind: str | None = None,
        limit: int = 20,
        before_seq: int | None = None,
    ) -> list[StoredDocument]:
        where, params = _document_filter(user_session_id, request_id, kind, before_seq)
        query = sql.SQL("SELECT {} FROM documents{} ORDER BY seq DESC LIMIT %s").format(
            sql.SQL(_DOCUMENT_COLUMNS), where
        )
        async with self._transaction() as conn:
            cursor = await conn.execute(query, (*params, limit))
            return [StoredDocument(*row) for row in await cursor.fetchall()]

    async def requests(self, limit: int = 20) -> list[RequestRecord]:
        query = f"SELECT {_REQUEST_COLUMNS} FROM requests ORDER BY id DESC LIMIT %s"
        async with self._transaction() as conn:
            cursor = await conn.execute(query, (limit,))
            return [RequestRecord(*row) for row in await cursor.fetchall()]

    def _transaction(self) -> AbstractAsyncContextManager[Connection]:
        return self._db.transaction()


async def _insert_request(conn: Connection, request: RequestInfo, status: int, error: str | None) -> int:
    cursor = await conn.execute(
        _INSERT_REQUEST,
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
    row = await cursor.fetchone()
    assert row is not None  # RETURNING of a one-row INSERT
    return int(row[0])


def _in_key_order(documents: Sequence[Document]) -> list[int]:
    """The documents' places by key; a stable sort: the documents of one key keep their order."""
    return sorted(range(len(documents)), key=lambda i: (documents[i].kind, documents[i].key))


async def _save_documents(
    conn: Connection, statement: str, request_id: int, at: int, documents: Sequence[tuple[int, Document]]
) -> list[bool]:
    """Upsert the (seq, document)s in the order given (their keys'); per document, True when its
    key was new."""
    rows = [(seq, request_id, at, d.kind, d.key, d.user_session_id, d.index, d.body) for seq, d in documents]
    created = []
    async with conn.cursor() as cursor:
        await cursor.executemany(statement, rows, returning=True)
        for _ in rows:  # one result per document: no row means the stored one was kept
            row = await cursor.fetchone()
            created.append(bool(row and row[0]))
            cursor.nextset()
    return created


def _document_filter(
    user_session_id: str | None, request_id: int | None, kind: str | None, before_seq: int | None
) -> tuple[sql.Composable, tuple[Any, ...]]:
    clauses: list[sql.Composable] = []
    params: list[Any] = []
    for column, value in (("user_session_id", user_session_id), ("request_id", request_id), ("kind", kind)):
        if value is not None:
            clauses.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    if before_seq is not None:
        clauses.append(sql.SQL("seq < %s"))
        params.append(before_seq)
    if not clauses:
        return sql.SQL(""), ()
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses), tuple(params)
