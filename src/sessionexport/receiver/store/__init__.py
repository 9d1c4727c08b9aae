"""Where the receiver keeps what it received: SQLite (default), PostgreSQL, or rotating NDJSON files."""

from __future__ import annotations

from pathlib import Path

from sessionexport.receiver.store.base import ReceivedStore
from sessionexport.store.base import StoreError
from sessionexport.store.locations import is_postgresql, sqlite_file, unsupported_location

DATABASE_FILE = "received.db"


def create_received_store(
    data_dir: Path, storage: str | None = None, *, reading: bool = False
) -> ReceivedStore:
    """``storage``: none (SQLite in the data directory), ``sqlite:///PATH``, ``postgresql://...`` or
    ``files``. ``reading``: for a reader of what a receiver keeps (files: opened read-only; a
    database without the receiver's schema is refused, not given one)."""
    if is_postgresql(storage):
        from sessionexport.receiver.store.postgresql import PostgresReceivedStore

        return PostgresReceivedStore(storage, existing=reading)
    path = stored_at(data_dir, storage)
    if storage == "files":
        from sessionexport.receiver.store.files import FilesReceivedStore

        return FilesReceivedStore(path, read_only=reading)
    from sessionexport.receiver.store.sqlite import SQLiteReceivedStore

    return SQLiteReceivedStore(path, existing=reading)


def stored_at(data_dir: Path, storage: str | None) -> Path:
    """Where a storage other than a database server keeps what was received (StoreError for a
    storage of no known kind)."""
    if not storage:
        return data_dir / DATABASE_FILE
    if path := sqlite_file(storage):
        return path
    if storage == "files":
        return data_dir / "received"
    refused = unsupported_location("storage", storage)
    raise StoreError(f"{refused}: use files, sqlite:///PATH or postgresql://...")


__all__ = ["DATABASE_FILE", "ReceivedStore", "create_received_store", "stored_at"]
