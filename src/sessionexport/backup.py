"""``sessionexport backup``: a consistent copy of the embedded store, taken while it runs.

SQLite's online backup copies the database in one read transaction: a snapshot of one moment,
taken while the server goes on ingesting and exporting (in WAL mode the writer and readers do not
wait for each other). The copy is written beside its final name and renamed only once it is
complete and passes SQLite's quick check; a backup that fails or is interrupted removes what it
wrote, and the leftovers of one that was killed (``*.partial*``) do not make its folder taken.
With the data directory's secret key beside it, the backup folder is a data directory:
``serve --data-dir BACKUP`` runs on it.

PostgreSQL is backed up with its own tools (``pg_dump``).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sessionexport.folders import make_private_dir
from sessionexport.settings.objects import plain_value
from sessionexport.settings.schemas import EXPORT_SCHEMA
from sessionexport.settings.secrets import KEY_FILE, SecretKeyError, create_private_file, load_secret_box
from sessionexport.store import DATABASE_FILE
from sessionexport.store.sqlite_engine import connect_read_only, writable

BACKUP_STEP_PAGES = 64  # 4 MiB of 64 KiB pages: a step takes a few milliseconds
PARTIAL = ".partial"


class BackupError(Exception):
    """The copy failed: nothing was left that looks like a backup."""


class BackupRefused(BackupError):
    """Nothing was tried: no database there, or the target is taken."""


@dataclass(frozen=True, slots=True)
class BackupResult:
    target: Path
    bytes: int
    sessions: int
    exports: int
    key_copied: bool
    seconds: float
    key_problem: str = ""  # why the key copied does not decrypt every secret stored in the copy


def backup(
    database: Path, key_file: Path | None, target: Path, on_progress: Callable[[int, int], None] | None = None
) -> BackupResult:
    """Copy the SQLite ``database`` (and ``key_file``, the secret key, when there is one) into
    ``target``, a folder that must not exist yet or be empty. ``on_progress(bytes_written, total)``."""
    check_backup(database, target)
    started = time.monotonic()
    created = not target.exists()
    make_private_dir(target)
    _remove_partial(target)  # a killed backup's leftovers
    final, partial = target / DATABASE_FILE, target / (DATABASE_FILE + PARTIAL)
    try:
        _copy_database(database, partial, on_progress)
        sessions, exports = _check(partial)
        key_copied = key_file is not None and _copy_key(key_file, target / KEY_FILE)
        key_problem = _key_problem(partial, target) if key_copied else ""
        partial.rename(final)
    except BaseException:  # failed or interrupted (Ctrl-C, SIGTERM): nothing that looks like a backup
        (target / KEY_FILE).unlink(missing_ok=True)
        _remove_partial(target)
        if created:  # nor an empty folder that would look like one begun
            with contextlib.suppress(OSError):
                target.rmdir()
        raise
    _remove_partial(target)
    return BackupResult(
        target, final.stat().st_size, sessions, exports, key_copied, time.monotonic() - started, key_problem
    )


def check_backup(database: Path, target: Path) -> None:
    """BackupRefused unless there is a database to copy and ``target`` is new or an empty folder
    (but for a killed backup's leftovers)."""
    if not database.is_file():
        raise BackupRefused(f"no database at {database}: give the server's --data-dir")
    if target.exists() and (
        not target.is_dir() or any(not p.name.startswith(DATABASE_FILE + PARTIAL) for p in target.iterdir())
    ):
        raise BackupRefused(f"{target} exists and is not an empty folder: back up into a new one")


def _remove_partial(target: Path) -> None:
    for leftover in target.glob(DATABASE_FILE + PARTIAL + "*"):  # the copy and its journal
        leftover.unlink(missing_ok=True)


def _copy_key(key_file: Path, copy: Path) -> bool:
    """The secret key, created 0600 from the start (never readable by others, even for a moment)."""
    if not key_file.is_file():
        return False
    if not create_private_file(copy, key_file.read_bytes()):
        raise FileExistsError(f"{copy} exists already")
    return True


def _key_problem(database: Path, data_dir: Path) -> str:
    """Why the key file copied into ``data_dir`` does not open the copy's secrets, or "": it is no
    key at all, or one the server no longer runs with (it was rotated, the server takes its key
    from SESSIONEXPORT_SECRET_KEY)."""
    try:
        box = load_secret_box(data_dir, None, create=False)
    except SecretKeyError as exc:
        return f"it holds no key the server could run with ({exc})"
    try:
        with contextlib.closing(sqlite3.connect(database)) as conn:
            for schema_id, value in conn.execute("SELECT schema_id, value FROM settings_objects"):
                plain_value(schema_id, value, box)
    except SecretKeyError:
        return (
            "it cannot decrypt the stored passwords and client secrets (the server runs with another"
            " key: from SESSIONEXPORT_SECRET_KEY, or rotated since)"
        )
    return ""


def _copy_database(source: Path, target: Path, on_progress: Callable[[int, int], None] | None) -> None:
    # A plain connection where it may be: like any other, it leaves no -wal or -shm file behind
    # when it is the last to close (a read-only one cannot remove them). A database that may not
    # be written here (a snapshot on a read-only mount) is read as the reading commands read it.
    src = sqlite3.connect(source, isolation_level=None) if writable(source) else connect_read_only(source)
    src.isolation_level = None  # the transactions below are its own
    with contextlib.closing(src):
        page_size = src.execute("PRAGMA page_size").fetchone()[0]
        # One read transaction held through every step: the copy is a snapshot of its start
        # (in WAL mode, what others write meanwhile is not seen, so no step starts the copy
        # over), and between steps Ctrl-C is heard, which one single step would not let it be.
        src.execute("BEGIN")
        src.execute("SELECT count(*) FROM sqlite_master").fetchone()

        def report(_status: int, remaining: int, total: int) -> None:
            if on_progress is not None:
                on_progress((total - remaining) * page_size, total * page_size)

        with contextlib.closing(sqlite3.connect(target)) as dst:
            src.backup(dst, pages=BACKUP_STEP_PAGES, progress=report)
        src.execute("COMMIT")


def _check(path: Path) -> tuple[int, int]:
    """SQLite's quick check of the copy; the sessions and export configurations it holds."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
        if verdict != "ok":
            raise BackupError(f"the copy failed SQLite's quick check: {verdict}")
        sessions = conn.execute("SELECT count(*) FROM sessions").fetchone()[0]
        exports = conn.execute(
            "SELECT count(*) FROM settings_objects WHERE schema_id = ?", (EXPORT_SCHEMA,)
        ).fetchone()[0]
    return int(sessions), int(exports)
