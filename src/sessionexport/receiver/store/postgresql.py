"""The receiver's PostgreSQL backend (``postgresql://...``): psycopg 3 behind an async connection pool.

Schema: the numbered files of ``receiver/sql/postgresql``, applied by ``open`` on a connection of
its own, each file in one transaction with its row in ``receiver_schema_migrations``. The whole migration
runs under a session advisory lock, so a second process starting at the same time waits, then
finds nothing pending (without it both would create the tables and one would fail).

A save is one transaction: the request row, one upsert per document (sent in one round trip by
psycopg's pipelined ``executemany``), then the request's counts. Each upsert returns whether its
key was new: ``ON CONFLICT DO NOTHING RETURNING`` yields no row for a kept document, and for a
replaced one ``xmax = 0`` holds only on a freshly inserted row version. Both stay exact under
concurrent saves of the same key, where a check-then-insert would not.

Errors are translated once, here, at the I/O boundary::

    StoreError
    ├── "cannot reach PostgreSQL at HOST:PORT: ..."   connecting failed (refused, DNS, auth, timeout)
    │                                                 or the connection broke mid-statement
    └── "PostgreSQL: ..."                             a statement failed (constraint, disk full...)

No message carries the password: libpq leaves it out of its messages, and every translated
message is scrubbed of it anyway (a malformed URL can be echoed back).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, PoolTimeout

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
from sessionexport.store.base import StoreError
from sessionexport.store.migrations import pending
from sessionexport.store.postgresql import checkout

MIGRATIONS = "sessionexport.receiver"
# Any constant works as long as nothing else sharing the database uses it; this one spells "SXRM".
MIGRATION_LOCK = 0x5358_524D
CONNECT_TIMEOUT_SECONDS = 10
# Class 08 is "connection exception"; 57P01-57P03 are the server shutting down or not yet up.
_CONNECTION_STATES = ("08", "57P01", "57P02", "57P03")

_INSERT = (
    "INSERT INTO documents (request_id, received_at, kind, key, user_session_id, index_name, body)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (kind, key) DO "
)
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

Connection = psycopg.AsyncConnection[tuple[Any, ...]]


class PostgresReceivedStore:
    def __init__(self, url: str, *, max_connections: int = 4) -> None:
        self.url = url
        self._address, self._secrets = _describe(url)
        self._max_connections = max_connections
        self._pool: AsyncConnectionPool[Connection] | None = None

    async def open(self) -> None:
        kwargs = _connect_options(self.url)
        async with self._translated(connecting=True):
            conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True, **kwargs)
        async with self._translated(), conn:
            await migrate(conn)
        async with self._translated(connecting=True):
            self._pool = await self._open_pool(kwargs)

    async def _open_pool(self, kwargs: dict[str, Any]) -> AsyncConnectionPool[Connection]:
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            self.url,
            kwargs=kwargs,
            min_size=1,
            max_size=self._max_connections,
            open=False,
            check=AsyncConnectionPool.check_connection,  # a restarted server costs no failed save
            timeout=CONNECT_TIMEOUT_SECONDS,
        )
        try:
            await pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS)
        except BaseException:
            await pool.close()  # else its workers keep trying to connect in the background
            raise
        return pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def save(
        self, request: RequestInfo, documents: Sequence[Document], *, overwrite: bool
    ) -> SaveResult:
        statement = _REPLACE if overwrite else _KEEP
        async with self._transaction() as conn:
            request_id = await _insert_request(conn, request, 200, None)
            created = await _save_documents(conn, statement, request_id, request.received_at, documents)
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
    ) -> list[StoredDocument]:
        where, params = _document_filter(user_session_id, request_id, kind)
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

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Connection]:
        if self._pool is None:
            raise StoreError("store is not open")
        async with self._translated():
            conn = await checkout(self._pool)  # (a cancellation always cancels: see checkout)
            try:
                async with conn.transaction():
                    yield conn
            finally:
                await self._pool.putconn(conn)

    @asynccontextmanager
    async def _translated(self, *, connecting: bool = False) -> AsyncIterator[None]:
        try:
            yield
        except PoolTimeout as exc:
            raise StoreError(self._scrub(f"cannot reach PostgreSQL at {self._address}: {exc}")) from None
        except psycopg.Error as exc:
            raise StoreError(self._scrub(self._message(exc, connecting))) from None

    def _message(self, exc: psycopg.Error, connecting: bool) -> str:
        text = " ".join(str(exc).split())  # libpq's messages span lines with tab-indented hints
        lost = isinstance(exc, psycopg.OperationalError) and (
            exc.sqlstate is None or exc.sqlstate.startswith(_CONNECTION_STATES)
        )
        if connecting or lost:
            return f"cannot reach PostgreSQL at {self._address}: {text}"
        return f"PostgreSQL: {text}"

    def _scrub(self, message: str) -> str:
        for secret in self._secrets:
            message = message.replace(secret, "***")
        return message


async def migrate(conn: Connection) -> None:
    """Apply the pending migrations; ``conn`` is in autocommit mode (each migration opens its own transaction)."""
    await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS receiver_schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        cursor = await conn.execute("SELECT version FROM receiver_schema_migrations")
        applied = {row[0] for row in await cursor.fetchall()}
        for migration in pending("postgresql", applied, MIGRATIONS):
            async with conn.transaction():
                # Without parameters psycopg sends the file as one simple query: several statements are fine.
                await conn.execute(migration.sql.encode())
                await conn.execute(
                    "INSERT INTO receiver_schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))


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


async def _save_documents(
    conn: Connection, statement: str, request_id: int, at: int, documents: Sequence[Document]
) -> list[bool]:
    """Upsert the documents in order; per document, True when its key was new."""
    if not documents:
        return []
    rows = [(request_id, at, d.kind, d.key, d.user_session_id, d.index, d.body) for d in documents]
    created: list[bool] = []
    async with conn.cursor() as cursor:
        await cursor.executemany(statement, rows, returning=True)
        while True:  # one result per document: no row means the stored one was kept
            row = await cursor.fetchone()
            created.append(bool(row and row[0]))
            if not cursor.nextset():
                break
    return created


def _document_filter(
    user_session_id: str | None, request_id: int | None, kind: str | None
) -> tuple[sql.Composable, tuple[Any, ...]]:
    clauses: list[sql.Composable] = []
    params: list[Any] = []
    for column, value in (("user_session_id", user_session_id), ("request_id", request_id), ("kind", kind)):
        if value is not None:
            clauses.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    if not clauses:
        return sql.SQL(""), ()
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses), tuple(params)


def _connect_options(url: str) -> dict[str, Any]:
    """libpq waits forever for an unresponsive host unless told otherwise; the URL's own setting wins."""
    try:
        given = conninfo_to_dict(url)
    except psycopg.Error:
        return {}  # connecting reports the malformed URL, translated
    return {} if "connect_timeout" in given else {"connect_timeout": CONNECT_TIMEOUT_SECONDS}


def _describe(url: str) -> tuple[str, list[str]]:
    """``host:port`` for messages, and the password in every form a message could echo it in."""
    parts = urlsplit(url)
    secrets = [parts.password, unquote(parts.password)] if parts.password else []
    host: object = parts.hostname
    port: object = _port(parts)
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        pass  # malformed: described as well as the URL syntax allows; connecting will say what is wrong
    else:
        host, port = params.get("host"), params.get("port")
        secrets.append(str(params.get("password") or ""))
    return f"{host or 'localhost'}:{port or 5432}", sorted({s for s in secrets if s}, key=len, reverse=True)


def _port(parts: SplitResult) -> int | None:
    try:
        return parts.port
    except ValueError:  # several hosts, or not a number
        return None
