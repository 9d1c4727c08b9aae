"""The SQLite backend of the storage interface, on a real database file."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from sessionexport.generate.sessions import GeneratorOptions, generate_lines
from sessionexport.ingest.documents import parse_ndjson
from sessionexport.receiver.store import create_received_store
from sessionexport.retention import purge_expired
from sessionexport.settings.schemas import EXPORT_SCHEMA
from sessionexport.store import Store, StoreError, create_store, sqlite_engine
from sessionexport.store.migrations import migrations_for
from sessionexport.store.records import BulkDecision, Claim, NewSession, SettingsRecord
from sessionexport.store.sqlite import SQLiteStore
from sessionexport.store.sqlite_engine import SQLiteEngine
from sessionexport.tokens import new_token
from tests.support.folders import read_only_view
from tests.support.stores import opened, sqlite_at_version


def records(count: int, seed: int = 1) -> list[NewSession]:
    return parse_ndjson(b"\n".join(generate_lines(count, seed, GeneratorOptions(end_ms=1_760_000_000_000))))


async def test_append_counts_duplicates_and_keeps_bytes(store: Store) -> None:
    batch = records(5)
    first = await store.append_sessions(batch, received_at=1000)
    again = await store.append_sessions([*batch[:2], *records(1, seed=9)], received_at=2000)
    assert (first.accepted, first.duplicates) == (5, 0)
    assert (again.accepted, again.duplicates) == (1, 2)
    stored = await store.recent_sessions(limit=10)
    assert len(stored) == 6
    assert {s.body for s in stored} == {r.body for r in batch} | {records(1, seed=9)[0].body}


async def test_duplicates_within_one_batch_are_stored_once(store: Store) -> None:
    one = records(1)[0]
    result = await store.append_sessions([one, one, one], received_at=1)
    assert (result.accepted, result.duplicates) == (1, 2)
    assert await store.count_sessions() == 1


async def test_recent_sessions_newest_first_with_paging_and_filter(store: Store) -> None:
    batch = records(7)
    await store.append_sessions(batch, received_at=1)
    page1 = await store.recent_sessions(limit=3)
    page2 = await store.recent_sessions(limit=3, before_seq=page1[-1].seq)
    seqs = [s.seq for s in page1 + page2]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == 6
    assert [s.user_session_id for s in page1] == [r.user_session_id for r in reversed(batch)][:3]
    wanted = batch[3].user_session_id
    only = await store.recent_sessions(user_session_id=wanted)
    assert [s.user_session_id for s in only] == [wanted]


async def test_data_survives_reopen_and_migrations_run_once(tmp_path: Path) -> None:
    first = create_store(tmp_path)
    await first.open()
    await first.append_sessions(records(4), received_at=1)
    await first.close()
    second = create_store(tmp_path)
    await second.open()
    assert await second.count_sessions() == 4
    await second.close()
    with sqlite3.connect(tmp_path / "sessionexport.db") as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert versions == [m.version for m in migrations_for("sqlite")]
    assert mode == "wal"


async def test_tokens_store_hash_only_and_revoke(store: Store, tmp_path: Path) -> None:
    new = new_token("ci", frozenset({"sessions.read"}), 123)
    await store.add_token(new.record)
    loaded = await store.get_token(new.record.id)
    assert loaded == new.record
    assert [t.id for t in await store.list_tokens()] == [new.record.id]
    assert await store.revoke_token(new.record.id, 456) is True
    assert await store.revoke_token(new.record.id, 789) is False
    revoked = await store.get_token(new.record.id)
    assert revoked is not None and revoked.revoked_at == 456
    assert new.token.encode() not in (tmp_path / "sessionexport.db").read_bytes()


async def test_unsupported_database_url_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="unsupported database URL scheme 'mysql'"):
        create_store(tmp_path, "mysql://localhost/db")


@pytest.mark.parametrize("location", ["host=db user=u password=s3cret-pw dbname=x", "u:s3cret-pw@db/x"])
async def test_a_connection_string_that_is_no_url_is_refused_without_showing_it(
    tmp_path: Path, location: str
) -> None:
    with pytest.raises(StoreError, match="it is not a URL") as refused:
        create_store(tmp_path, location)
    assert "s3cret-pw" not in str(refused.value)
    with pytest.raises(StoreError, match="it is not a URL") as refused:
        create_received_store(tmp_path, location)
    assert "s3cret-pw" not in str(refused.value)
    with pytest.raises(StoreError, match="unsupported storage 'filez'"):  # a plain word is shown
        create_received_store(tmp_path, "filez")


async def test_unwritable_location_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = create_store(tmp_path, f"sqlite:///{blocker}/sub/db.sqlite")
    with pytest.raises(StoreError, match="cannot create"):
        await store.open()


async def test_retention_purges_sessions_older_than_the_window(store: Store) -> None:
    day = 86_400_000
    await store.append_sessions(records(2, seed=1), received_at=10 * day)
    await store.append_sessions(records(3, seed=2), received_at=16 * day)
    assert await purge_expired(store, retention_ms=7 * day, now=17 * day + 1) == 2
    assert await store.count_sessions() == 3
    assert await purge_expired(store, retention_ms=7 * day, now=17 * day + 2) == 0


async def test_retention_moves_no_cursor_past_a_session_it_keeps(store: Store) -> None:
    """A host whose clock is behind appends sessions that look older than the newer ones before
    them: the cursor of a paused export moves only past what was purged, and the sessions kept
    are still exported after it (before, it moved past them: skipped for good)."""
    day = 86_400_000
    await store.append_sessions(records(2, seed=1), received_at=1 * day)
    await store.append_sessions(records(2, seed=2), received_at=9 * day)
    await store.append_sessions(records(2, seed=3), received_at=2 * day)  # a clock 7 days behind
    await store.ensure_cursor("paused", 0, now=0)
    assert await purge_expired(store, retention_ms=7 * day, now=9 * day) == 2
    cursor = await store.get_cursor("paused")
    assert cursor is not None and cursor.position == 2
    assert [e.seq for e in await store.read_log(cursor.position, 10)] == [3, 4, 5, 6]
    [alert] = await store.list_alerts(open_only=True)
    assert alert.title == "2 session(s) expired before they were exported"


async def test_retention_never_drops_unexported_sessions_silently(store: Store) -> None:
    day = 86_400_000
    await store.append_sessions(records(3, seed=1), received_at=1 * day)
    await store.append_sessions(records(2, seed=2), received_at=9 * day)
    await store.ensure_cursor("behind", 1, now=0)  # decided seq 1 only
    await store.ensure_cursor("ahead", 3, now=0)
    assert await purge_expired(store, retention_ms=7 * day, now=9 * day) == 3
    alerts = await store.list_alerts(open_only=True)
    assert [(a.export_id, a.kind, a.title) for a in alerts] == [
        ("behind", "retention", "2 session(s) expired before they were exported")
    ]
    behind = await store.get_cursor("behind")
    assert behind is not None and behind.position == 3


async def test_an_open_retention_alert_counts_every_purge_s_loss(store: Store) -> None:
    day = 86_400_000
    await store.ensure_cursor("down", 0, now=0)
    await store.append_sessions(records(3, seed=1), received_at=1 * day)
    await purge_expired(store, retention_ms=7 * day, now=9 * day)
    await store.append_sessions(records(2, seed=2), received_at=10 * day)
    await purge_expired(store, retention_ms=7 * day, now=18 * day)
    [alert] = await store.list_alerts(open_only=True)
    assert alert.title == "5 session(s) expired before they were exported" and alert.occurrences == 2
    assert alert.message.endswith("2 this time, 5 since the alert opened.")
    await store.close_alerts("down", "retention", now=18 * day)  # it delivers again
    await store.append_sessions(records(1, seed=3), received_at=19 * day)
    await purge_expired(store, retention_ms=7 * day, now=27 * day)
    [again] = await store.list_alerts(open_only=True)
    assert again.title == "1 session(s) expired before they were exported"


async def test_retention_counts_what_an_export_no_exporter_ran_for_yet_loses(store: Store) -> None:
    """An export created while only processes without exporters ran has no cursor yet; it is owed
    the sessions that joined the log after it was created, and loses them to retention loudly."""
    day = 86_400_000
    await store.append_sessions(records(2, seed=1), received_at=1 * day)
    export = SettingsRecord(
        "new-export", EXPORT_SCHEMA, "environment", None, "{}", "1", 1 * day + 1, 1 * day + 1, "t", "t", 1
    )
    await store.insert_setting(export, max_objects=3)
    await store.append_sessions(records(3, seed=2), received_at=2 * day)
    assert await purge_expired(store, retention_ms=7 * day, now=10 * day) == 5
    alerts = await store.list_alerts(open_only=True)
    assert [(a.export_id, a.title) for a in alerts] == [
        ("new-export", "3 session(s) expired before they were exported")
    ]
    cursor = await store.get_cursor("new-export")
    assert cursor is not None and cursor.position == 5


def test_a_migration_the_disk_cannot_hold_says_why(tmp_path: Path) -> None:
    """Out of room while migrating (a full disk, a file size limit), SQLite rolls the transaction
    back itself: the error said is SQLite's, not that of a second rollback (there is none to do)."""
    code = (
        "import resource, signal, sqlite3, sys\n"
        "from sessionexport.store.sqlite_engine import migrate\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "conn.execute('PRAGMA journal_mode = WAL')\n"
        "conn.execute('PRAGMA cache_size = 20')\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))\n"
        "migrate(conn)\n"
    )
    failed = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "small.db")], capture_output=True, text=True, timeout=60
    )
    assert failed.returncode == 1
    assert failed.stderr.strip().endswith("sqlite3.OperationalError: disk I/O error"), failed.stderr


def test_processes_starting_together_on_a_new_database_migrate_once(tmp_path: Path) -> None:
    code = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from sessionexport.store.sqlite import SQLiteStore\n"
        "async def main():\n"
        "    store = SQLiteStore(Path(sys.argv[1]))\n"
        "    await store.open()\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
    )
    for attempt in range(3):
        path = tmp_path / f"new-{attempt}.db"
        starts = [
            subprocess.Popen([sys.executable, "-c", code, str(path)], stderr=subprocess.PIPE)
            for _ in range(4)
        ]
        errors = [p.communicate()[1].decode() for p in starts]
        assert all(p.returncode == 0 for p in starts), errors
        versions = (
            sqlite3.connect(path).execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
        )
        assert [v for (v,) in versions] == list(range(1, len(versions) + 1))


async def test_a_write_lock_held_elsewhere_fails_that_write_not_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_connect = sqlite_engine.connect

    def impatient(path: Path) -> sqlite3.Connection:
        conn = real_connect(path)
        conn.execute("PRAGMA busy_timeout = 200")
        return conn

    monkeypatch.setattr(sqlite_engine, "connect", impatient)
    engine = sqlite_engine.SQLiteEngine(tmp_path / "x.db")
    await engine.open()
    try:
        other = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with pytest.raises(StoreError, match="locked"):
            await asyncio.wait_for(engine.write(lambda c: c.execute("CREATE TABLE t (x)")), 10)
        other.execute("ROLLBACK")
        await asyncio.wait_for(
            engine.write(lambda c: c.execute("CREATE TABLE t (x)")), 10
        )  # the writer lives on
        assert await engine.read(lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0]) == 0
    finally:
        await engine.close()


@pytest.fixture
async def small_wal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SQLiteEngine]:
    """An engine whose WAL is restarted past 1 MiB, checkpointed every 10 ms, with a table t (x)."""
    monkeypatch.setattr(sqlite_engine, "WAL_RESTART_BYTES", 1 << 20)
    monkeypatch.setattr(sqlite_engine, "CHECKPOINT_EVERY_SECONDS", 0.01)
    engine = SQLiteEngine(tmp_path / "x.db")
    await engine.open()
    await engine.write(lambda c: c.execute("CREATE TABLE t (x BLOB)"))
    yield engine
    await engine.close()


async def test_sustained_writes_keep_the_wal_bounded(small_wal: SQLiteEngine, tmp_path: Path) -> None:
    """Writes queued back to back never give a passive checkpoint the chance to finish: the WAL
    must still be started over once past its limit instead of growing with everything written."""
    blob = bytes(range(256)) * 256  # 64 KiB

    def insert(c: sqlite3.Connection) -> None:
        c.executemany("INSERT INTO t VALUES (?)", [(blob,)] * 4)

    # Up to 8 writes always waiting: 800 x 256 KiB, 200 MiB through the WAL.
    pending: set[asyncio.Future[None]] = set()
    for _ in range(800):
        await asyncio.sleep(0.001)  # leaves the checkpoint thread its turns
        if len(pending) >= 8:
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        pending.add(asyncio.ensure_future(small_wal.write(insert)))
    await asyncio.gather(*pending)
    wal = tmp_path / "x.db-wal"
    assert wal.stat().st_size < 32 << 20, f"WAL grew to {wal.stat().st_size >> 20} MiB"
    assert await small_wal.read(lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0]) == 3200


async def test_lookups_by_user_use_the_indexes_by_hour(tmp_path: Path) -> None:
    """Each probe of a lookup is one index search, in seq order (no sort), never a scan of the log."""
    from sessionexport.store.sqlite import hour_probe

    store = create_store(tmp_path)
    await store.open()
    await store.append_sessions(records(3), received_at=1_700_000_000_000)
    await store.close()
    params = {"hour": 1, "user_session_id": "s", "user_id": "u", "before": 9, "limit": 5}
    with sqlite3.connect(tmp_path / "sessionexport.db") as conn:
        for columns, before, index in [
            (
                ["user_session_id"],
                False,
                "sessions_by_hour_and_user_session_id (<expr>=? AND user_session_id=?)",
            ),
            (
                ["user_session_id"],
                True,
                "sessions_by_hour_and_user_session_id (<expr>=? AND user_session_id=? AND rowid<?)",
            ),
            (["user_id"], True, "sessions_by_hour_and_user_id (<expr>=? AND user_id=? AND rowid<?)"),
        ]:
            plan = [
                row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + hour_probe(columns, before), params)
            ]
            assert plan == [f"SEARCH sessions USING INDEX {index}"], plan


async def test_opening_waits_while_another_process_holds_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An upgrade copying a large log holds the write lock for minutes: a second process opening
    the database meanwhile waits for it, past the busy timeout, instead of failing as "locked"."""
    caplog.set_level("INFO")
    async with opened(lambda: create_store(tmp_path)):
        pass
    monkeypatch.setattr(sqlite_engine, "BUSY_TIMEOUT_SECONDS", 0.2)
    other = sqlite3.connect(tmp_path / "sessionexport.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # as a migrating process does
    release = threading.Timer(1.0, other.rollback)
    release.start()
    try:
        async with opened(lambda: create_store(tmp_path)) as store:
            assert await store.count_sessions() == 0
    finally:
        release.join()
        other.close()
    assert any("waiting for another process" in r.getMessage() for r in caplog.records)


async def test_counting_sessions_reads_the_index_of_seqs_not_the_log(tmp_path: Path) -> None:
    """An export's backlog is counted on every /metrics scrape: through an index of seqs alone, not
    through the log's rows, which hold the bodies (gigabytes for a large backlog)."""
    from sessionexport.store.sqlite import _BACKLOG, _COUNT_BETWEEN

    store = create_store(tmp_path)
    await store.open()
    await store.append_sessions(records(3), received_at=1_700_000_000_000)
    await store.close()
    counts: list[tuple[str, dict[str, int] | tuple[int, ...]]] = [
        (_BACKLOG, {"after": 1, "shard": 0, "shards": 2}),
        (_COUNT_BETWEEN, (1, 9, 2, 0)),
        ("SELECT count(*) FROM sessions", ()),
    ]
    with sqlite3.connect(tmp_path / "sessionexport.db") as conn:
        for query, params in counts:
            plan = [row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + query, params)]
            assert plan[0].startswith("SEARCH sessions USING COVERING INDEX sessions_by_seq") or plan[0] == (
                "SCAN sessions USING COVERING INDEX sessions_by_seq"
            ), plan


async def test_purging_walks_the_log_from_its_start_by_seq(tmp_path: Path) -> None:
    """The expired prefix is found by reading the log in order only as far as it goes (no sort of
    the whole log), and deleted through the narrow index of seqs."""
    from sessionexport.store.sqlite import _FIRST_RECEIVED_AT_OR_AFTER, _PURGE_UP_TO

    store = create_store(tmp_path)
    await store.open()
    await store.close()
    with sqlite3.connect(tmp_path / "sessionexport.db") as conn:
        purge = [row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + _PURGE_UP_TO, (1, 5000))]
        first_one = [
            row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + _FIRST_RECEIVED_AT_OR_AFTER, (1,))
        ]
    assert purge == [
        "SEARCH sessions USING INTEGER PRIMARY KEY (rowid=?)",
        "LIST SUBQUERY 1",
        "SEARCH sessions USING COVERING INDEX sessions_by_seq (seq<?)",
    ]
    assert first_one == ["SCAN sessions"]  # in rowid order: no "USE TEMP B-TREE FOR ORDER BY"


async def test_a_wal_restart_is_not_starved_by_many_writers(small_wal: SQLiteEngine, tmp_path: Path) -> None:
    """With hundreds of writes always waiting, the restart still runs right after the transaction
    in progress, not behind every write queued meanwhile."""
    wal, blob, largest = tmp_path / "x.db-wal", bytes(16384), 0
    until = asyncio.get_running_loop().time() + 1.5

    async def write_on() -> None:
        nonlocal largest
        while asyncio.get_running_loop().time() < until:
            await small_wal.write(lambda c: c.execute("INSERT INTO t VALUES (?)", (blob,)))
            largest = max(largest, wal.stat().st_size)

    await asyncio.gather(*(write_on() for _ in range(200)))
    assert largest < 32 << 20, f"WAL grew to {largest >> 20} MiB"


async def test_a_restart_held_back_by_a_reader_is_not_asked_for_again_at_once(
    small_wal: SQLiteEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader of an old snapshot makes a restart wait and give up; the writer, which waits with
    it, is not made to wait again and again, nor while nothing is written."""
    restarts: list[bool] = []
    real_restart = sqlite_engine._restart_wal

    def counted(conn: sqlite3.Connection) -> bool:
        restarts.append(real_restart(conn))
        return restarts[-1]

    monkeypatch.setattr(sqlite_engine, "_restart_wal", counted)
    reader = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM t").fetchone()  # holds its snapshot
    for _ in range(40):
        await small_wal.write(lambda c: c.execute("INSERT INTO t VALUES (?)", (bytes(65536),)))
    until = asyncio.get_running_loop().time() + 1.5
    while asyncio.get_running_loop().time() < until:
        await small_wal.write(lambda c: c.execute("INSERT INTO t VALUES (x'00')"))
        await asyncio.sleep(0.005)
    assert restarts == [False]  # tried once, held back, not tried again within the retry delay
    reader.execute("COMMIT")
    reader.close()

    monkeypatch.setattr(sqlite_engine, "RESTART_RETRY_SECONDS", 0.0)
    await asyncio.sleep(1)  # nothing written: the WAL has not grown since it was asked for
    assert restarts == [False]
    # With the reader gone the passive checkpoints catch up, and the next write starts the WAL
    # over by itself.
    await small_wal.write(lambda c: c.execute("INSERT INTO t VALUES (x'00')"))
    with sqlite3.connect(tmp_path / "x.db") as conn:
        _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert frames <= 2


async def test_a_log_from_before_the_indexes_by_hour_is_found_after_the_migration(tmp_path: Path) -> None:
    """A database at version 10, with sessions, opened by this version: migration 0011 builds the
    indexes by hour over what is there, and lookups find it."""
    from sessionexport.clock import HOUR_MS
    from sessionexport.store.sqlite import _INSERT_SESSIONS, _session_rows
    from sessionexport.store.sqlite_engine import connect, insert_rows

    stored = records(3)
    sqlite_at_version(tmp_path / "sessionexport.db", up_to=10)
    with contextlib.closing(connect(tmp_path / "sessionexport.db")) as conn:
        for n, session in enumerate(stored):  # hours apart
            insert_rows(conn, _INSERT_SESSIONS, _session_rows([session], 1_700_000_000_000 + n * 5 * HOUR_MS))

    store = create_store(tmp_path)
    await store.open()
    try:
        for session in stored:
            found = await store.recent_sessions(user_session_id=session.user_session_id)
            assert [s.body for s in found] == [session.body]
        with_user = [s for s in stored if s.user_id]
        assert with_user, "the generated sessions have user ids"
        found = await store.recent_sessions(user_id=with_user[0].user_id)
        assert with_user[0].body in [s.body for s in found]
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "sessionexport.db") as conn:
        indexes = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"sessions_by_hour_and_user_session_id", "sessions_by_hour_and_user_id"} <= indexes
    assert not {"sessions_by_user_session_id", "sessions_user_id"} & indexes


async def test_a_failing_write_is_undone_alone_whether_grouped_or_not(tmp_path: Path) -> None:
    """Group commit: writes queued together share a transaction, and one that fails leaves the
    others whole; a write alone (no savepoint) is undone whole. Each caller gets its own answer."""
    engine = SQLiteEngine(tmp_path / "x.db")
    await engine.open()
    try:
        await engine.write(lambda c: c.execute("CREATE TABLE t (v INTEGER NOT NULL)"))

        def insert(value: int, fail: bool = False) -> Callable[[sqlite3.Connection], None]:
            def run(conn: sqlite3.Connection) -> None:
                conn.execute("INSERT INTO t VALUES (?)", (value,))
                if fail:
                    raise ValueError(f"write {value} failed after inserting")

            return run

        with pytest.raises(ValueError, match="write 1 failed"):
            await engine.write(insert(1, fail=True))  # alone

        running = threading.Event()

        def hold(conn: sqlite3.Connection) -> None:
            running.set()
            time.sleep(0.3)  # the writer is busy: the writes below queue, and go as one group

        held = asyncio.ensure_future(engine.write(hold))
        await asyncio.to_thread(running.wait, 10)
        grouped = [engine.write(insert(v, fail=v == 3)) for v in (2, 3, 4)]
        outcomes = await asyncio.gather(held, *grouped, return_exceptions=True)
        assert [type(o).__name__ for o in outcomes] == ["NoneType", "NoneType", "ValueError", "NoneType"]
        values = await engine.read(lambda c: [v for (v,) in c.execute("SELECT v FROM t ORDER BY v")])
        assert values == [2, 4]
    finally:
        await engine.close()


async def test_only_durable_writes_wait_for_the_disk(tmp_path: Path) -> None:
    """A write is synced to disk (synchronous=FULL, 2) unless it says it need not be (NORMAL, 1);
    a group holding a durable write is synced whole, and a durable write after others is synced."""
    engine = SQLiteEngine(tmp_path / "x.db")
    await engine.open()

    def level(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA synchronous").fetchone()[0])

    try:
        assert await engine.write(level) == 2
        assert await engine.write(level, durable=False) == 1
        assert await engine.write(level, durable=False) == 1
        assert await engine.write(level) == 2

        running = threading.Event()

        def hold(conn: sqlite3.Connection) -> int:
            running.set()
            time.sleep(0.3)  # the writes below queue meanwhile, and go as one group
            return level(conn)

        held = asyncio.ensure_future(engine.write(hold, durable=False))
        await asyncio.to_thread(running.wait, 10)
        grouped = await asyncio.gather(engine.write(level, durable=False), engine.write(level))
        assert (await held, list(grouped)) == (1, [2, 2])
    finally:
        await engine.close()


class _RollbackFailsOnce(sqlite3.Connection):
    """A connection whose next ROLLBACK fails, leaving its transaction open (as an I/O error may)."""

    armed = False

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "ROLLBACK" and _RollbackFailsOnce.armed:
            _RollbackFailsOnce.armed = False
            raise sqlite3.OperationalError("disk I/O error")
        return super().execute(sql, *args)


async def test_a_write_that_cannot_switch_syncing_fails_without_stopping_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a failed write whose rollback failed too, the connection is still in a transaction,
    where SQLite refuses to change synchronous: the next write that needs to is answered with the
    error (it used to stop the writer thread, leaving every caller waiting forever)."""
    real = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: real(*a, factory=_RollbackFailsOnce, **k))
    engine = SQLiteEngine(tmp_path / "x.db")
    await engine.open()

    def fail(conn: sqlite3.Connection) -> None:
        raise ValueError("the write failed")

    try:
        _RollbackFailsOnce.armed = True
        with pytest.raises(ValueError, match="the write failed"):
            await asyncio.wait_for(engine.write(fail), 10)
        with pytest.raises(StoreError, match="transaction"):
            await asyncio.wait_for(engine.write(lambda c: None, durable=False), 10)
        assert engine._writer is not None and engine._writer.is_alive()
    finally:
        await engine.close()


async def test_exporter_decisions_are_not_synced_and_ingest_is(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The transactions an exporter commits per bulk skip the sync (losing one in a machine crash
    sends its bulk again); an ingest's never does."""
    synced: list[bool] = []
    real = sqlite_engine._set_synced

    def seen(conn: sqlite3.Connection, now: bool, durable: bool) -> bool:
        synced.append(durable)
        return real(conn, now, durable)

    monkeypatch.setattr(sqlite_engine, "_set_synced", seen)
    await store.append_sessions(records(3), received_at=1)
    await store.ensure_cursor("e1", 0, now=1)
    assert await store.claim_lease("e1", 0, "w1", lease_ms=60_000)
    claim = Claim("e1", 0, 1, "w1")
    before = len(synced)
    await store.record_bulk(claim, 2, BulkDecision(delivered=2), now=2)
    await store.record_skip(claim, 3, now=3)
    assert synced[before:] == [False, False]
    await store.append_sessions(records(1, seed=5), received_at=4)
    assert synced[-1] is True and all(synced[:before])
    cursor = await store.get_cursor("e1")
    assert cursor is not None and (cursor.position, cursor.delivered) == (3, 2)


async def test_a_new_data_directory_is_private_and_an_existing_one_keeps_its_mode(tmp_path: Path) -> None:
    """The database holds sessions, token hashes and encrypted secrets, in files made with the
    umask: the folder sessionexport creates for it is its user's alone, whatever the umask."""
    permissive = os.umask(0o022)
    try:
        async with opened(lambda: create_store(tmp_path / "new" / "data")):
            pass
    finally:
        os.umask(permissive)
    assert (tmp_path / "new" / "data").stat().st_mode & 0o777 == 0o700
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    async with opened(lambda: create_store(shared)):
        pass
    assert shared.stat().st_mode & 0o777 == 0o755


async def test_what_migrations_wrote_is_checkpointed_before_the_first_write(tmp_path: Path) -> None:
    """A new (or upgraded) database starts with an empty WAL: what the migrations wrote is in the
    database file, not holding room in the WAL until it grows past its limit (with a file-size
    limit of a few MB, ingest then failed at its first batch)."""
    async with opened(lambda: create_store(tmp_path)):
        assert (tmp_path / "sessionexport.db-wal").stat().st_size == 0
    (tmp_path / "old").mkdir()
    sqlite_at_version(tmp_path / "old" / "sessionexport.db", 13)
    async with opened(lambda: create_store(tmp_path / "old")):
        assert (tmp_path / "old" / "sessionexport.db-wal").stat().st_size == 0


def _schema(path: Path) -> list[tuple[str, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        tables = conn.execute("SELECT type, name FROM sqlite_master ORDER BY name").fetchall()
        return [*tables, *conn.execute("SELECT version, name FROM schema_migrations ORDER BY version")]


async def test_the_server_and_the_receiver_refuse_each_others_database(tmp_path: Path) -> None:
    """Their migrations share a table and its numbers: a database of the other must be refused
    by name, before anything is applied to it, not upgraded into a mix of both."""
    received, served = tmp_path / "received.db", tmp_path / "sessionexport.db"
    receiver = create_received_store(tmp_path, f"sqlite:///{received}")
    await receiver.open()
    await receiver.close()
    async with opened(lambda: create_store(tmp_path, f"sqlite:///{served}")):
        pass
    before = {path: _schema(path) for path in (received, served)}

    server_on_received = create_store(tmp_path, f"sqlite:///{received}")
    with pytest.raises(StoreError) as refused:
        await server_on_received.open()
    assert "not this store's (1_received, 2_hourly_session_lookup, 3_identity_by_locality and 1 more)" in str(
        refused.value
    )
    receiver_on_served = create_received_store(tmp_path, f"sqlite:///{served}")
    with pytest.raises(StoreError, match=r"not this store's \(1_session_log_and_tokens, .* and \d+ more\)"):
        await receiver_on_served.open()
    assert {path: _schema(path) for path in (received, served)} == before  # neither was touched
    receiver = create_received_store(tmp_path, f"sqlite:///{received}")
    await receiver.open()  # and each still opens its own
    await receiver.close()


async def test_a_database_that_may_not_be_written_is_read_as_it_is_never_changed(tmp_path: Path) -> None:
    """Opened to read what is there (``existing``) where it may not be written: reads answer,
    a write fails saying why, a migration it would need and a write-ahead log that only a writer
    could read are refused by name, rather than read wrongly."""
    current, old, crashed = tmp_path / "current", tmp_path / "old", tmp_path / "crashed"
    for folder in (current, old, crashed):
        folder.mkdir()
    async with opened(lambda: SQLiteStore(current / "s.db")) as store:
        await store.append_sessions(records(3), received_at=1)
    sqlite_at_version(old / "s.db", len(migrations_for("sqlite")) - 1)
    (crashed / "copy").mkdir()
    with contextlib.closing(sqlite_engine.connect(crashed / "s.db")) as conn:  # a WAL no one checkpointed
        conn.execute("PRAGMA wal_autocheckpoint=0")
        assert sqlite_engine.migrate(conn) > 0
        for name in ("s.db", "s.db-wal"):  # as a crashed machine's snapshot holds them, no -shm
            (crashed / "copy" / name).write_bytes((crashed / name).read_bytes())
    with read_only_view(current, tmp_path / "v1") as view:
        async with opened(lambda: SQLiteStore(view / "s.db", existing=True)) as store:
            assert await store.count_sessions() == 3
            with pytest.raises(StoreError, match=r"is read-only here .*: nothing was changed"):
                await store.append_sessions(records(1, seed=7), received_at=2)
    with (
        read_only_view(old, tmp_path / "v2") as view,
        pytest.raises(StoreError, match="needs upgrading to version"),
    ):
        await SQLiteStore(view / "s.db", existing=True).open()
    with (
        read_only_view(crashed / "copy", tmp_path / "v3") as view,
        pytest.raises(StoreError, match=r"its write-ahead log s\.db-wal holds changes"),
    ):
        await SQLiteStore(view / "s.db", existing=True).open()
    assert sorted(path.name for path in current.iterdir()) == ["s.db"]
