"""One PostgreSQL database as a store uses it: migrated on open, a pool of autocommit connections,
errors translated once. Both the session store and the receiver's store stand on it.

- Schema: the numbered files of ``<package>/sql/postgresql``, applied by ``open`` on a connection of
  its own, in one transaction with their rows in the store's migrations table, under a
  transaction-level advisory lock: a second process starting at the same time waits, then finds
  nothing pending. A database already up to date is only read (see ``migrate``).
- Connections run in autocommit: a one-statement call is its own transaction; ``transaction()``
  opens an explicit one. ``read`` runs a function on a connection of a small second pool in a
  worker thread: a large result (megabytes of session bodies) arrives in many socket reads, and
  on an asynchronous connection each of them is a turn of the event loop (twice the CPU per
  session read, all of it on the loop's thread).
- A call waits up to 10 s for a pooled connection; once one has found the server unreachable (the
  pool failed to connect meanwhile, or a connection broke), the calls after it wait only 1 s, until
  one gets a connection again. A pool whose connections are all busy is not unreachable.

Errors are translated once, here::

    StoreError
    ├── "cannot reach PostgreSQL at HOST:PORT: ..."   connecting failed (refused, DNS, auth, timeout),
    │                                                 the connection broke mid-statement, or no pooled
    │                                                 connection came free in time
    ├── "PostgreSQL at HOST:PORT holds ..."           the migrations table belongs to something else
    └── "PostgreSQL: ..."                             a statement failed (constraint, disk full...)

No message carries the password: libpq leaves it out of its messages, and every translated message
is scrubbed of it anyway (a malformed URL can be echoed back).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import SplitResult, unquote, urlsplit

import psycopg
import psycopg.errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from sessionexport.store.base import Deadlocked, InvalidValue, StoreError, StoreFull
from sessionexport.store.migrations import (
    NoSchema,
    SchemaTooNew,
    foreign_migrations,
    listed,
    pending,
    refuse_newer,
)
from sessionexport.throttle import Throttle, recurring

log = logging.getLogger(__name__)


class PoolWarnings(logging.Filter):
    """psycopg_pool warns of every failed attempt to reach the server, every second or two in an
    outage, in every process: each of its warnings is said once a minute at most, as ours are."""

    def __init__(self) -> None:
        super().__init__()
        self._throttles: dict[str, Throttle] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        quiet = self._throttles.setdefault(str(record.msg), Throttle()).allows()
        if quiet:
            record.msg = f"{record.msg}{recurring(quiet)}"
        return quiet is not None


logging.getLogger("psycopg.pool").addFilter(PoolWarnings())

CONNECT_TIMEOUT_SECONDS = 10
# While the server is known to be unreachable, a call waits this long for a connection rather than
# the whole timeout: in an outage every request (API, UI, health) answers at once that the store
# is unavailable, instead of each hanging for 10 s first. A server back up is found by the next call.
UNREACHABLE_WAIT_SECONDS = 1.0
# psycopg_pool tries to reach a lost server again after a delay that doubles (1, 2, 4 ... s) until
# it gives up after this long; the next call then starts again at 1 s. Its default, 5 minutes, let
# the delay grow past a minute: a server back up went unnoticed for that long, every call a 503.
RECONNECT_GIVE_UP_SECONDS = 8.0
IDLE_IN_TRANSACTION_SECONDS = 10  # under the default lease of 15 s (see _end_abandoned_transactions)
# Class 08 is "connection exception"; 57P01-57P03 are the server shutting down or not yet up.
_CONNECTION_STATES = ("08", "57P01", "57P02", "57P03")

Connection = psycopg.AsyncConnection[tuple[Any, ...]]
ReadConnection = psycopg.Connection[tuple[Any, ...]]
T = TypeVar("T")
READ_CONNECTIONS = 3  # of ``read`` (see _Reading)


class PostgresDatabase:
    def __init__(
        self,
        url: str,
        *,
        migrations: str,
        migrations_table: str,
        migration_lock: int,
        max_connections: int,
        existing: bool = False,
    ) -> None:
        """``existing``: this store's schema is expected there (commands that read what is there):
        a database or schema without it is refused, not given one."""
        self.url = url
        self._existing = existing
        self._migrations = migrations
        self._table = migrations_table
        self._lock = migration_lock
        self._address, self._secrets = describe(url)
        self._max_connections = max_connections
        self._pool: AsyncConnectionPool[Connection] | None = None
        self._reading: _Reading | None = None  # made on first use: a receiver never reads that way
        self._unreachable = False  # the last call could not get or keep a connection
        self._connect_errors = 0  # the pool's failed connection attempts, as last seen

    async def open(self) -> None:
        kwargs = connect_options(self.url)
        async with self.translated(connecting=True):
            conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True, **kwargs)
        try:
            async with self.translated(), conn:
                foreign = await migrate(conn, self._migrations, self._table, self._lock, not self._existing)
        except (NoSchema, SchemaTooNew) as exc:
            raise StoreError(f"PostgreSQL at {self._address}: {exc}") from None
        if foreign:
            raise StoreError(
                f"PostgreSQL at {self._address} holds schema migrations that are not this store's"
                f" ({listed(foreign)}): give it a database or schema of its own"
            )
        async with self.translated(connecting=True):
            self._pool = await self._open_pool(kwargs | {"autocommit": True})

    async def _open_pool(self, kwargs: dict[str, Any]) -> AsyncConnectionPool[Connection]:
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            self.url,
            kwargs=kwargs,
            configure=None if _sets_idle_timeout(self.url) else _end_abandoned_transactions,
            min_size=1,
            max_size=self._max_connections,
            open=False,
            check=AsyncConnectionPool.check_connection,  # a restarted server costs no failed call
            timeout=CONNECT_TIMEOUT_SECONDS,
            reconnect_timeout=RECONNECT_GIVE_UP_SECONDS,
        )
        try:
            await pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS)
        except BaseException:
            await pool.close()  # else its workers keep trying to connect in the background
            raise
        return pool

    async def close(self) -> None:
        if self._reading is not None:
            await asyncio.to_thread(self._reading.close)
            self._reading = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def read(self, fn: Callable[[ReadConnection], T]) -> T:
        """``fn`` on a pooled autocommit connection, in a worker thread (see the module's doc)."""
        if self._pool is None:
            raise StoreError("store is not open")
        if self._reading is None:
            self._reading = _Reading(self.url)
        reading = self._reading
        wait = UNREACHABLE_WAIT_SECONDS if self._unreachable else CONNECT_TIMEOUT_SECONDS

        def run() -> T:
            with reading.pool.connection(timeout=wait) as conn:
                return fn(conn)

        async with self.translated():
            result = await asyncio.get_running_loop().run_in_executor(reading.threads, run)
        self._unreachable = False
        return result

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A pooled connection in autocommit mode: each statement is a transaction of its own."""
        pool = self._pool
        if pool is None:
            raise StoreError("store is not open")
        async with self.translated():
            conn = await checkout(pool, UNREACHABLE_WAIT_SECONDS if self._unreachable else None)
            self._unreachable = False  # a pooled connection is checked before it is handed out
            try:
                yield conn
            finally:
                await pool.putconn(conn)  # one left mid-transaction or broken is rolled back or replaced

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self.connection() as conn, conn.transaction():
            yield conn

    @asynccontextmanager
    async def translated(self, *, connecting: bool = False) -> AsyncIterator[None]:
        try:
            yield
        except PoolTimeout as exc:
            failing = self._connecting_fails()
            self._unreachable = failing or self._unreachable
            message = f"cannot reach PostgreSQL at {self._address}: no connection within the timeout ({exc})"
            if failing and (refusal := await self._connect_refusal()):
                message += f"; a new connection fails: {refusal}"
            raise StoreError(self._scrub(message)) from None
        except (psycopg.DataError, psycopg.errors.ProgramLimitExceeded) as exc:  # e.g. a too long index entry
            raise InvalidValue(self._scrub(f"PostgreSQL cannot hold a value: {exc}")) from None
        except UnicodeEncodeError as exc:
            raise InvalidValue.not_unicode("PostgreSQL", exc) from None
        except psycopg.errors.DeadlockDetected as exc:
            raise Deadlocked(self._scrub(f"PostgreSQL: {' '.join(str(exc).split())}")) from None
        except psycopg.errors.DiskFull as exc:
            raise StoreFull(self._scrub(f"PostgreSQL: {exc}")) from None
        except psycopg.Error as exc:
            unreachable = connecting or _connection_lost(exc)
            self._unreachable = self._unreachable or unreachable
            text = " ".join(str(exc).split())  # libpq's messages span lines with tab-indented hints
            message = (
                f"cannot reach PostgreSQL at {self._address}: {text}"
                if unreachable
                else f"PostgreSQL: {text}"
            )
            raise StoreError(self._scrub(message)) from None

    async def _connect_refusal(self) -> str | None:
        """Why connecting fails now, if it does: the pool's own wait says only that no connection
        came (the server's reason, such as a role's connection limit, is in the pool's log). Asked
        once each time the pool starts failing, and soon given up on: a host that does not answer
        must not hold the call up for another whole connect timeout."""
        options = connect_options(self.url) | {"connect_timeout": 2}  # libpq's least
        try:
            conn = await psycopg.AsyncConnection.connect(self.url, **options)
        except psycopg.Error as exc:
            return " ".join(str(exc).split())
        await conn.close()
        return None

    def _connecting_fails(self) -> bool:
        """Whether the pool failed to connect since last asked: a wait that ran out while the
        server was unreachable, not one that found every connection busy (a full pool waits the
        whole timeout: its calls queue and are served)."""
        errors = sum(
            pool.get_stats().get("connections_errors", 0)
            for pool in (self._pool, self._reading.pool if self._reading else None)
            if pool
        )
        failing, self._connect_errors = errors > self._connect_errors, errors
        return failing

    def _scrub(self, message: str) -> str:
        return scrub(message, self._secrets)


async def _end_abandoned_transactions(conn: Connection) -> None:
    """A process stopped inside a transaction (frozen, its host cut off) would keep that
    transaction's locks until its connection is found dead: about two hours of TCP keepalives on
    the server's side, with every worker's leases and cursors waiting. The server ends such a
    transaction after ``IDLE_IN_TRANSACTION_SECONDS``; this store's own run their statements back
    to back. (A ``SET``, not a startup option, so that connection poolers pass it.)"""
    await conn.execute(f"SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_SECONDS * 1000}")


def _sets_idle_timeout(url: str) -> bool:
    """Whether the URL's own ``options`` set the idle-in-transaction timeout (they win)."""
    try:
        return "idle_in_transaction_session_timeout" in str(conninfo_to_dict(url).get("options", ""))
    except psycopg.Error:
        return False


class _Reading:
    """The connections of ``read`` and as many threads to use them from (reads waiting for a
    connection wait there, never in the event loop's default executor, which parses bodies)."""

    def __init__(self, url: str) -> None:
        self.pool: ConnectionPool[ReadConnection] = ConnectionPool(
            url,
            kwargs=connect_options(url) | {"autocommit": True},
            min_size=0,  # connects in the background, as reads need
            max_size=READ_CONNECTIONS,
            open=False,
            check=ConnectionPool.check_connection,
            timeout=CONNECT_TIMEOUT_SECONDS,
            reconnect_timeout=RECONNECT_GIVE_UP_SECONDS,
        )
        self.pool.open(wait=False)
        self.threads = concurrent.futures.ThreadPoolExecutor(READ_CONNECTIONS, "postgresql-reader")

    def close(self) -> None:
        self.threads.shutdown()
        self.pool.close()


def _connection_lost(exc: psycopg.Error) -> bool:
    return isinstance(exc, psycopg.OperationalError) and (
        exc.sqlstate is None or exc.sqlstate.startswith(_CONNECTION_STATES)
    )


async def checkout(pool: AsyncConnectionPool[Connection], wait: float | None = None) -> Connection:
    """``pool.getconn(wait)`` (None: the pool's timeout), except that a cancellation always cancels.

    The pool waits for a free connection with ``asyncio.wait_for``, which on Python 3.11 returns
    the connection and drops the cancellation when both happen at once (a connection comes free
    as the task is cancelled, e.g. when a shutdown cancels the tasks sharing the pool one after
    the other); the task then carries on as if never cancelled, and whoever awaits its end waits
    forever. Waiting on a shield instead, the cancellation is always raised here; a connection
    the abandoned wait still obtains goes straight back to the pool.
    """
    getting = asyncio.ensure_future(pool.getconn(wait))
    try:
        return await asyncio.shield(getting)
    except asyncio.CancelledError:
        getting.add_done_callback(functools.partial(_give_back, pool))
        getting.cancel()
        raise


_returning: set[asyncio.Task[None]] = set()  # strong references until the connections are back


def _give_back(pool: AsyncConnectionPool[Connection], getting: asyncio.Future[Connection]) -> None:
    if getting.cancelled() or getting.exception() is not None:
        return  # nothing was obtained (the exception is retrieved, so never reported as lost)
    task = asyncio.ensure_future(pool.putconn(getting.result()))
    _returning.add(task)
    task.add_done_callback(_returning.discard)


# -- migrations -------------------------------------------------------------------------------------
async def migrate(conn: Connection, package: str, table: str, lock: int, create: bool = True) -> list[str]:
    """Apply the pending migrations of ``package``; ``conn`` is in autocommit mode. Returns the
    applied migrations that are not this package's (then applies nothing): another component's
    history in the same table must not pass for this one's. Without ``create``, a database without
    any is refused (NoSchema), and nothing is made there.

    A database already up to date is only read: no lock, nothing written, so that reading commands
    work on a hot standby or as a role that may only read. Else all of it is one transaction under
    a transaction-level advisory lock (a second process starting at the same time waits, then finds
    nothing pending): a session-level lock and its unlock could go to two server connections
    through a pooler, and the one left holding it would hang every later start."""
    applied = await _applied(conn, table)
    if applied is None and not create:
        raise NoSchema
    if applied is not None and not pending("postgresql", set(applied), package):
        if foreign := foreign_migrations("postgresql", applied, package):
            return foreign
        refuse_newer("postgresql", set(applied), package)
        return []
    name = sql.Identifier(table)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
        await conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            ).format(name)
        )
        applied = await _applied(conn, table) or {}  # as it is now that the lock is held
        if foreign := foreign_migrations("postgresql", applied, package):
            return foreign
        refuse_newer("postgresql", set(applied), package)
        for migration in pending("postgresql", set(applied), package):
            if applied:  # an upgrade, which may take long: said, so that a slow start is understood
                log.info(
                    "postgresql: upgrading the database to version %d (%s)", migration.version, migration.name
                )
            # Without parameters psycopg sends the file as one simple query: several statements are fine.
            await conn.execute(migration.sql.encode())
            await conn.execute(
                sql.SQL("INSERT INTO {} (version, name) VALUES (%s, %s)").format(name),
                (migration.version, migration.name),
            )
    return []


async def _applied(conn: Connection, table: str) -> dict[int, str] | None:
    """The migrations recorded in ``table`` (version: name); None without any."""
    if not await _has_migrations(conn, table):
        return None
    cursor = await conn.execute(
        sql.SQL("SELECT version, name FROM {} ORDER BY version").format(sql.Identifier(table))
    )
    return {version: label for version, label in await cursor.fetchall()}


async def _has_migrations(conn: Connection, table: str) -> bool:
    """Whether ``table`` holds migrations in the schema tables are created in (the first of the
    search path): one found further along the path is another schema's, and every statement that
    follows would create and read this store's tables in the first."""
    cursor = await conn.execute(  # no schema of the path exists: current_schema() is NULL, and so is this
        "SELECT to_regclass(quote_ident(current_schema()) || '.' || quote_ident(%s::text)) IS NOT NULL",
        (table,),
    )
    row = await cursor.fetchone()
    if not row or not row[0]:
        return False
    cursor = await conn.execute(sql.SQL("SELECT EXISTS (SELECT FROM {})").format(sql.Identifier(table)))
    row = await cursor.fetchone()
    return bool(row and row[0])


# -- the URL ----------------------------------------------------------------------------------------
def connect_options(url: str) -> dict[str, Any]:
    """How long libpq waits for a host that does not answer: forever, unless told. Connecting
    gives up after 10 s; a connection whose server stopped answering (a cut network, a host that
    lost power) is found broken within about 30 s, by keepalives while it waits for an answer and
    by the TCP user timeout while what it sent is unacknowledged. The URL's own settings win."""
    try:
        given = conninfo_to_dict(url)
    except psycopg.Error:
        return {}  # connecting reports the malformed URL, translated
    defaults = {
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "tcp_user_timeout": 30_000,  # ms
    }
    return {name: value for name, value in defaults.items() if name not in given}


def describe(url: str) -> tuple[str, list[str]]:
    """``host:port`` for messages, and the password in every form a message could echo it in."""
    meant = _meant_password(url)
    secrets = _fragments(meant)
    parts = _split(url)
    if parts is not None and parts.password:
        secrets += [parts.password, unquote(parts.password)]
    host: object = parts.hostname if parts is not None else None
    port: object = _port(parts) if parts is not None else None
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        pass  # malformed: described as well as the URL syntax allows; connecting will say what is wrong
    else:
        host, port = params.get("host"), params.get("port")
        secrets.append(str(params.get("password") or ""))
    address = f"{host or 'localhost'}:{port or 5432}"
    if _UNENCODED.search(meant):  # libpq reads another host than meant: say the one meant
        host_part = _split(f"postgresql://{url.rpartition('@')[2]}")
        where = f"{host_part.hostname or 'localhost'}:{_port(host_part) or 5432}" if host_part else "its host"
        address = (
            f"{where} (the URL's password must be percent-encoded: @ as %40, / as %2F, ? as %3F,"
            " # as %23, % as %25, [ as %5B, ] as %5D, a space as %20)"
        )
    return address, sorted({s for s in secrets if s}, key=len, reverse=True)


def _split(url: str) -> SplitResult | None:
    """``url`` split, or None where Python cannot split it (brackets that hold no IPv6 address:
    its error would quote what they hold, a piece of the password)."""
    try:
        return urlsplit(url)
    except ValueError:
        return None


def _meant_password(url: str) -> str:
    """The password as its writer meant it: from the ":" after the user name to the URL's last "@"."""
    userinfo, at, _ = url.partition("://")[2].rpartition("@")
    return userinfo.partition(":")[2] if at else ""


# Characters of a password that a URL needs percent-encoded: libpq splits the URL at them.
_UNENCODED = re.compile(r"[@/?#\[\]\s]|%(?![0-9A-Fa-f]{2})")


def _fragments(password: str) -> list[str]:
    """The parts of ``password`` that libpq may echo when it holds a character the URL needed
    percent-encoded: it splits the URL there (or at a ":" or "%") and names what it could not
    read, a host, a port or a token. Every run of whole pieces between such characters, of two
    characters or more."""
    parts = re.split(r"([@/?#:%\[\]\s])", password)  # pieces, and the characters between them
    runs = {"".join(parts[i : j + 1]) for i in range(0, len(parts), 2) for j in range(i, len(parts), 2)}
    return [run.strip() for run in runs if len(run.strip()) > 1]


def scrub(message: str, secrets: list[str]) -> str:
    """``message`` with each of ``secrets`` masked where it stands whole (in a URL's ``:...@``,
    after ``password=``), not inside words: a password ``p`` must not turn "port" into "***ort",
    which garbles the message and tells the password."""
    if not secrets:
        return message
    whole = "|".join(re.escape(secret) for secret in secrets)  # longest first: see describe
    return re.sub(rf"(?<!\w)(?:{whole})(?!\w)", "***", message)


def _port(parts: SplitResult) -> int | None:
    try:
        return parts.port
    except ValueError:  # several hosts, or not a number
        return None
