"""The threads behind every SQLite database of sessionexport: one writer, a pool of readers.

All writes go through one writer thread (SQLite allows one writer at a time; queuing them in
process avoids lock contention and ``database is locked`` errors), reads run on a small pool of
reader threads, each with its own connection (WAL lets them read while the writer writes). The
event loop only awaits futures, so it never blocks on the database.

Durability: WAL with ``synchronous=FULL``, so a commit that returned survives a power cut, not
only a crash; callers acknowledge only after their write returned. A write may say it need not
(``durable=False``): its commit survives the process being killed, not the machine crashing.

Read-only: a command that only reads what is there (``existing``) and may not write the database
(a read-only mount, a snapshot, another user's files) opens it read-only, with no writer thread;
a write then fails saying why, and nothing is changed or created there.

Throughput: rows here are blobs of a few KB, so pages are 64 KiB (a blob rarely spills into
overflow pages), and WAL checkpoints (copying the log into the database file, the costliest part
of a write) run on their own thread instead of inside the writer's commits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from sessionexport.clock import HOUR_MS  # the buckets of the lookup indexes by hour (received_at / HOUR_MS)
from sessionexport.folders import make_private_dir
from sessionexport.store.base import InvalidValue, StoreError, StoreFull
from sessionexport.store.migrations import (
    NoSchema,
    SchemaTooNew,
    foreign_migrations,
    listed,
    pending,
    refuse_newer,
)
from sessionexport.throttle import Throttle, recurring

T = TypeVar("T")
_STOP = object()
log = logging.getLogger(__name__)

PAGE_SIZE = 65536
BUSY_TIMEOUT_SECONDS = 30  # how long a statement waits for another process's write lock
# How long opening waits for another process that holds the database to migrate it: an upgrade
# that copies a large log holds it for minutes, not the few seconds of any other write.
MIGRATION_WAIT_SECONDS = 3600
CHECKPOINT_EVERY_SECONDS = 0.25
# Past this size the WAL is checkpointed whole and then written again from its start. Without it,
# passive checkpoints never catch up with sustained writes and the WAL grows without bound; every
# write then goes to newly allocated blocks, which costs the kernel many times more than
# overwriting blocks the file already has.
WAL_RESTART_BYTES = 32 << 20
RESTART_WAIT_MS = 200
RESTART_RETRY_SECONDS = 5.0  # after a restart that readers of older snapshots held back
GROUP_COMMIT_MAX = 64  # writes that may share one transaction


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_SECONDS)
    conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # takes effect only when the file is created
    _retry_while_locked(lambda: conn.execute("PRAGMA journal_mode=WAL"))
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    # Statement journals (one per multi-row write inside a savepoint, i.e. per queued write) in
    # memory: on disk, each is a temporary file created, unlinked and written once per write.
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute(f"PRAGMA journal_size_limit={WAL_RESTART_BYTES}")  # what a restarted WAL keeps
    return conn


def writable(path: Path) -> bool:
    """Whether this process may write the database, and its -wal and -shm files beside it: create
    them, or write them where they are (false on a read-only filesystem, even for root)."""
    if not os.access(path, os.W_OK):
        return False
    beside = [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")]
    return os.access(path.parent, os.W_OK) or all(os.access(file, os.W_OK) for file in beside)


def read_only_refusal(path: Path) -> str:
    """What a write to a database this process may not write says."""
    return (
        f"{path} is read-only here (a read-only filesystem, or no permission to write it or its"
        " folder): nothing was changed"
    )


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that writes nothing. It reads a database in use through the -shm file of its
    writer. When there is none and none can be made beside it (a read-only mount), the database
    is read as it is in its file, which holds everything once its WAL is gone: the last
    connection to close checkpoints the WAL into it and removes it."""
    uri = path.resolve().as_uri()
    conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, check_same_thread=False, timeout=BUSY_TIMEOUT_SECONDS)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master")  # a connection opens its files lazily
        return conn
    except sqlite3.OperationalError:
        conn.close()
        wal = path.with_name(path.name + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise StoreError(
                f"cannot read {path}: it may not be written here, and its write-ahead log {wal.name}"
                " holds changes that only a process allowed to write it can read (open it once where"
                " it may be written)"
            ) from None
        return sqlite3.connect(f"{uri}?immutable=1", uri=True, check_same_thread=False)


def _retry_while_locked(statement: Callable[[], object], within: float = 30.0, waiting: str = "") -> None:
    """Run ``statement``, trying again for ``within`` seconds while another process holds the
    database (``waiting``, when given, is logged once it has to wait). Switching to WAL needs the
    database to itself, and SQLite answers "locked" at once rather than waiting when another
    process is opening the same new file; a migration may hold the write lock for minutes."""
    deadline = time.monotonic() + within
    while True:
        try:
            statement()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            if waiting:
                log.info("%s", waiting)
                waiting = ""
            time.sleep(0.02)


class SQLiteEngine:
    """Runs functions of a connection: ``write`` in one transaction on the writer thread, ``read`` on a reader."""

    def __init__(
        self, path: Path, migrations: str = "sessionexport.store", *, readers: int = 3, existing: bool = False
    ) -> None:
        """``existing``: a database with this store's schema is expected (commands that read what is
        there): an empty one is refused, not given a schema."""
        self.path = path
        self._migrations = migrations
        self._existing = existing
        self.read_only = False  # known once open
        self._reader_count = readers
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._checkpointer: threading.Thread | None = None
        self._stopping = threading.Event()
        self._readers: concurrent.futures.ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    async def open(self) -> None:
        self.read_only = self.path.exists() and not writable(self.path)
        if self.read_only and not self._existing:  # a command that writes, or may create the schema
            raise StoreError(read_only_refusal(self.path))
        if self.read_only:
            self._start_readers()
            try:
                await self._check_schema()
            except BaseException:
                await self.close()
                raise
            return
        try:
            make_private_dir(self.path.parent)
        except OSError as exc:
            raise StoreError(f"cannot create {self.path.parent}: {exc}") from exc
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._writer = threading.Thread(
            target=self._write_loop, args=(ready,), name="sqlite-writer", daemon=True
        )
        self._writer.start()
        await asyncio.wrap_future(ready)
        self._stopping.clear()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, name="sqlite-checkpoint", daemon=True
        )
        self._checkpointer.start()
        self._start_readers()

    def _start_readers(self) -> None:
        self._readers = concurrent.futures.ThreadPoolExecutor(
            self._reader_count, thread_name_prefix="sqlite-reader"
        )

    async def _check_schema(self) -> None:
        """That a database opened read-only holds this store's schema, as it is now: a migration
        it still needs cannot be made."""
        if self.path.stat().st_size == 0:
            raise StoreError(f"cannot open {self.path}: {NoSchema()}")

        def check(conn: sqlite3.Connection) -> None:
            check_schema(conn, self._migrations, self.path)

        try:
            await self.read(check)
        except (NoSchema, ForeignSchema, SchemaTooNew) as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from None

    async def close(self) -> None:
        if self._checkpointer is not None:
            self._stopping.set()
            await asyncio.to_thread(self._checkpointer.join)
            self._checkpointer = None
        if self._writer is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(self._writer.join)
            self._writer = None
        if self._readers is not None:
            self._readers.shutdown(wait=True)
            self._readers = None
        with self._lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()

    async def write(self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        """Run ``fn`` in a transaction of the writer; answered once it is committed. Without
        ``durable``, the commit is not synced to disk (``synchronous=NORMAL``): it survives the
        process being killed, not the machine crashing; for writes whose loss only repeats work
        (an exporter's cursor: what it passed is sent again). A later durable commit syncs it too."""
        if self.read_only:
            raise StoreError(read_only_refusal(self.path))
        if self._writer is None or not self._writer.is_alive():
            raise StoreError("store is not open")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put(_Write(fn, future, durable))
        return await asyncio.wrap_future(future)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._readers is None:
            raise StoreError("store is not open")

        def run() -> T:
            try:
                return fn(self._reader_conn())
            except (sqlite3.Error, UnicodeEncodeError) as exc:
                raise translate(exc) from exc

        return await asyncio.wrap_future(self._readers.submit(run))

    def _write_loop(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            if self._existing and self.path.stat().st_size == 0:
                raise NoSchema  # before connecting, which would write a header into it
            conn = connect(self.path)
            conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpoint thread does it
            if migrate(conn, self._migrations, create=not self._existing):
                _empty_wal(conn)
        except BaseException as exc:
            kind = StoreFull if _full(exc) else StoreError
            ready.set_exception(kind(f"cannot open {self.path}: {said(exc)}"))
            return
        ready.set_result(None)
        synced = True  # connect sets synchronous=FULL
        try:
            item = self._queue.get()
            while item is not _STOP:
                if isinstance(item, _WalRestart):
                    item.run(conn)
                    ended_by = None
                else:
                    batch, ended_by = self._group_after(item)
                    synced = _commit_group(conn, batch, synced)
                item = ended_by if ended_by is not None else self._queue.get()
        finally:
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:  # the WAL stays; the next start reads it
                log.warning("sqlite: the last checkpoint failed (%s)", exc)
            conn.close()

    def _group_after(self, first: Any) -> tuple[list[Any], Any]:
        """The writes queued after ``first`` that share its transaction, and the control item
        (stop, WAL restart) that ended the group, handled right after it, or None."""
        batch = [first]
        while len(batch) < GROUP_COMMIT_MAX:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP or isinstance(item, _WalRestart):
                return batch, item
            batch.append(item)
        return batch, None

    def _checkpoint_loop(self) -> None:
        """Passive checkpoints, off the writer's path. When the WAL has grown past its limit
        anyway, the writer restarts it between two transactions (from any other thread, a restart
        would wait for a moment without writes, which sustained load never gives), and no passive
        checkpoint runs meanwhile: two checkpoints at once make one of them fail."""
        conn = connect(self.path)
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        asked_at_frames, not_before = 0, 0.0
        failures = Throttle()  # a full disk, a quota: tried again every 0.25 s, said now and then
        try:
            while not self._stopping.wait(CHECKPOINT_EVERY_SECONDS):
                try:
                    _, wal_frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:
                    if (quiet := failures.allows()) is not None:
                        log.error(
                            "sqlite: checkpoints fail (%s)%s; the WAL grows until they succeed again",
                            exc,
                            recurring(quiet),
                        )
                    continue
                if failures.reset():
                    log.warning("sqlite: checkpoints succeed again")
                # A restarted WAL keeps its frame count until the next write: ask again only once
                # it has grown since, and not at once after a restart that readers held back.
                if (
                    wal_frames * page_size <= WAL_RESTART_BYTES
                    or wal_frames == asked_at_frames
                    or time.monotonic() < not_before
                ):
                    continue
                restart = _WalRestart()
                self._queue.put(restart)
                while not restart.done.wait(0.1) and not self._stopping.is_set():
                    pass
                asked_at_frames = wal_frames
                if not restart.finished:
                    not_before = time.monotonic() + RESTART_RETRY_SECONDS
        finally:
            conn.close()

    def _reader_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect_read_only(self.path) if self.read_only else connect(self.path)
            self._local.conn = conn
            with self._lock:
                self._reader_conns.append(conn)
        return conn


class _WalRestart:
    """A request to the writer thread, queued among the writes: restart the WAL now."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.finished = False

    def run(self, conn: sqlite3.Connection) -> None:
        try:
            self.finished = _restart_wal(conn)
        finally:
            self.done.set()


def _empty_wal(conn: sqlite3.Connection) -> None:
    """Move what migrations wrote (a new schema, or a copied table) into the database file and
    empty the WAL before the first write: the WAL would otherwise hold it, and take that room on
    disk, until it grew past its limit. One that fails (a full disk) is left to the checkpoints."""
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error as exc:
        log.warning("sqlite: the checkpoint after upgrading failed (%s); checkpoints go on as usual", exc)


def _restart_wal(conn: sqlite3.Connection) -> bool:
    """Checkpoint what the passive checkpoints left so that the next write starts the WAL over.
    A restart waits for readers of older snapshots, here briefly (writes queue meanwhile); one
    that could not finish is asked for again later. True when it finished."""
    usual = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    conn.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        return not busy
    except sqlite3.Error:
        return False
    finally:
        conn.execute(f"PRAGMA busy_timeout={usual}")


class _Write(NamedTuple):
    fn: Callable[[sqlite3.Connection], Any]
    future: concurrent.futures.Future[Any]
    durable: bool


def _set_synced(conn: sqlite3.Connection, synced: bool, durable: bool) -> bool:
    """Sync the next commit to disk or not (between transactions: SQLite refuses it within one)."""
    if durable != synced:
        conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
    return durable


def _commit_group(conn: sqlite3.Connection, batch: list[_Write], synced: bool) -> bool:
    """Run queued writes in one transaction (group commit: one sync to disk for all of them,
    none when no write of the group is ``durable``), each of several in its own savepoint so that
    one failing write is undone alone; a write alone needs none (the whole transaction, its own,
    is undone: two statements fewer per cursor update, the commonest write). Results are handed
    out only after the commit, so nobody is told "done" before their write is committed (and
    synced, when durable). ``synced``: whether commits are synced now; returned as it is after."""
    outcomes: list[tuple[Any, bool, Any]] = []  # (future, ok, result or exception)
    alone = len(batch) == 1
    try:
        synced = _set_synced(conn, synced, any(write.durable for write in batch))
        conn.execute("BEGIN IMMEDIATE")  # may fail too (locked by another process): answered below
        for fn, future, _ in batch:
            if not future.set_running_or_notify_cancel():
                continue
            if alone:
                outcomes.append((future, True, fn(conn)))
                continue
            conn.execute("SAVEPOINT job")
            try:
                outcomes.append((future, True, fn(conn)))
            except BaseException as exc:
                conn.execute("ROLLBACK TO job")
                outcomes.append((future, False, translate(exc)))
            conn.execute("RELEASE job")
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # every waiting writer still gets its answer
                conn.execute("ROLLBACK")
        failure = translate(exc)
        for _, future, _ in batch:
            if not future.done():  # pending or running: each waiting writer gets the error
                future.set_exception(failure)
        return synced
    for future, ok, value in outcomes:
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
    return synced


ROWS_PER_STATEMENT = 1000
_PARAMETER_LIMIT = 32766  # SQLite's default SQLITE_MAX_VARIABLE_NUMBER


def insert_rows(conn: sqlite3.Connection, head: str, rows: Sequence[tuple[Any, ...]], tail: str = "") -> int:
    """``{head} VALUES (…), (…), … {tail}`` for every row, many rows per statement; the number of
    rows the statements changed. Not ``executemany``: sqlite3 releases and re-takes the GIL around
    every step, so one step per row would make the writer queue behind the event loop once per row."""
    if not rows:
        return 0
    width = len(rows[0])
    per_statement = min(ROWS_PER_STATEMENT, _PARAMETER_LIMIT // width)
    changed = 0
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        sql = f"{head} VALUES {_placeholders(width, len(chunk))} {tail}"
        changed += conn.execute(sql, [value for row in chunk for value in row]).rowcount
    return changed


def hours_present(conn: sqlite3.Connection, table: str) -> Iterator[int]:
    """Every hour that holds rows of ``table``, newest first: one step down its index led by
    ``received_at / HOUR_MS`` each (the expression its lookups probe with)."""
    hour_of = f"received_at / {HOUR_MS}"
    (hour,) = conn.execute(f"SELECT max({hour_of}) FROM {table}").fetchone()
    while hour is not None:
        yield hour
        (hour,) = conn.execute(f"SELECT max({hour_of}) FROM {table} WHERE {hour_of} < ?", (hour,)).fetchone()


@functools.lru_cache(maxsize=32)  # a full chunk's, and the last ones': each up to ~40 KB
def _placeholders(width: int, rows: int) -> str:
    return ", ".join(["(" + ", ".join("?" * width) + ")"] * rows)


def migrate(conn: sqlite3.Connection, package: str = "sessionexport.store", *, create: bool = True) -> int:
    """Apply pending migrations, each with its version in one transaction; how many. The write
    lock is taken first and the applied versions read under it, so processes starting together
    migrate once. Without ``create``, a database without any is refused (NoSchema)."""
    upgrade: bool | None = None  # whether the database had a schema already (None: not read yet)
    done = 0
    while True:
        _retry_while_locked(
            lambda: conn.execute("BEGIN IMMEDIATE"),
            MIGRATION_WAIT_SECONDS,
            "sqlite: waiting for another process that holds the database (upgrading it?)",
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
        )
        names = dict(conn.execute("SELECT version, name FROM schema_migrations").fetchall())
        applied = set(names)
        try:
            if not names and not create:
                raise NoSchema
            if foreign := foreign_migrations("sqlite", names, package):
                raise ForeignSchema(foreign)
            refuse_newer("sqlite", applied, package)
        except (ForeignSchema, NoSchema, SchemaTooNew):
            _roll_back(conn)
            raise
        todo = pending("sqlite", applied, package)
        if not todo:
            conn.execute("COMMIT")
            return done
        migration = todo[0]
        upgrade = bool(applied) if upgrade is None else upgrade
        if upgrade:  # which may copy much: said, so that a slow start is understood
            log.info("sqlite: upgrading the database to version %d (%s)", migration.version, migration.name)
        try:
            for statement in _statements(migration.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                (migration.version, migration.name),
            )
            conn.execute("COMMIT")
            done += 1
        except sqlite3.Error:
            _roll_back(conn)
            raise


def check_schema(conn: sqlite3.Connection, package: str, path: Path) -> None:
    """Refuse a database that ``migrate`` would refuse, or would still have to migrate."""
    try:
        names = dict(conn.execute("SELECT version, name FROM schema_migrations").fetchall())
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            raise NoSchema from None
        raise
    if not names:
        raise NoSchema
    if foreign := foreign_migrations("sqlite", names, package):
        raise ForeignSchema(foreign)
    refuse_newer("sqlite", set(names), package)
    if todo := pending("sqlite", set(names), package):
        raise StoreError(
            f"cannot open {path}: it needs upgrading to version {todo[-1].version} first, and it is"
            " read-only here (the server or receiver that keeps it upgrades it when it starts where it"
            " may write it)"
        )


class ForeignSchema(Exception):
    def __init__(self, foreign: list[str]) -> None:
        super().__init__(
            f"it holds schema migrations that are not this store's ({listed(foreign)}): another"
            " component's database (the server's and the receiver's are apart); give it a file of its own"
        )


def _roll_back(conn: sqlite3.Connection) -> None:
    """Roll back what is still open: SQLite has rolled back already on some errors (a full disk),
    and a failing ROLLBACK must not hide the error that said why."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _statements(script: str) -> list[str]:
    """The statements of a migration file (``execute`` takes one at a time, inside our transaction)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip() and not current.strip().startswith("--"):
        statements.append(current.strip())
    return [s for s in statements if s]


def translate(exc: BaseException) -> BaseException:
    if isinstance(exc, UnicodeEncodeError):
        return InvalidValue.not_unicode("SQLite", exc)
    if isinstance(exc, sqlite3.Error):
        return (StoreFull if _full(exc) else StoreError)(f"sqlite: {said(exc)}")
    return exc


def _full(exc: BaseException) -> bool:
    """The disk (or a quota) is full: SQLITE_FULL, or a -shm file that cannot grow, which SQLite
    reports as a mere I/O error (a connection needs it to read a database in WAL mode at all)."""
    return getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR_SHMSIZE)


def said(exc: BaseException) -> str:
    """What went wrong, in words that name a full disk as such."""
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_IOERR_SHMSIZE:
        return f"the disk is full: the database's -shm file cannot grow ({exc})"
    return str(exc)
