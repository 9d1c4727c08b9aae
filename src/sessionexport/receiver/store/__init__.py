"""Where the receiver keeps what it received: SQLite (default), PostgreSQL, or rotating NDJSON files."""

from __future__ import annotations

from pathlib import Path

from sessionexport.receiver.store.base import ReceivedStore
from sessionexport.store.base import StoreError

DATABASE_FILE = "received.db"


def create_received_store(
    data_dir: Path, storage: str | None = None, *, reading: bool = False
) -> ReceivedStore:
    """``storage``: none (SQLite in the data directory), ``sqlite:///PATH``, ``postgresql://...`` or
    ``files``. ``reading``: for a reader beside a running receiver (files: opened read-only; the
    databases take any number of readers as they are)."""
    if not storage or storage.startswith("sqlite:///"):
        from sessionexport.receiver.store.sqlite import SQLiteReceivedStore

        path = Path(storage.removeprefix("sqlite:///")) if storage else data_dir / DATABASE_FILE
        return SQLiteReceivedStore(path)
    if storage == "files":
        from sessionexport.receiver.store.files import FilesReceivedStore

        return FilesReceivedStore(data_dir / "received", read_only=reading)
    if storage.startswith(("postgresql://", "postgres://")):
        from sessionexport.receiver.store.postgresql import PostgresReceivedStore

        return PostgresReceivedStore(storage)
    raise StoreError(f"unsupported storage {storage!r}: use files, sqlite:///PATH or postgresql://...")


__all__ = ["DATABASE_FILE", "ReceivedStore", "create_received_store"]
