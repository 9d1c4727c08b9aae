"""Durable storage behind one interface (``base.Store``), one module per backend."""

from __future__ import annotations

from pathlib import Path

from sessionexport.store.base import (
    ExternalIdTaken,
    LeaseLost,
    Store,
    StoreError,
    TooManyObjects,
    VersionConflict,
)
from sessionexport.store.locations import is_postgresql, sqlite_file, unsupported_location

DATABASE_FILE = "sessionexport.db"


def create_store(data_dir: Path, database_url: str | None = None) -> Store:
    """The store a URL names (``sqlite:///PATH``, ``postgresql://...`` or ``postgres://...``); without one,
    SQLite in the data directory (the embedded default)."""
    if not database_url:
        from sessionexport.store.sqlite import SQLiteStore

        return SQLiteStore(data_dir / DATABASE_FILE)
    if path := sqlite_file(database_url):
        from sessionexport.store.sqlite import SQLiteStore

        return SQLiteStore(path)
    if is_postgresql(database_url):
        from sessionexport.store.postgresql import PostgresStore

        return PostgresStore(database_url)
    refused = unsupported_location("database URL", database_url)
    raise StoreError(f"{refused}: use postgresql://..., sqlite:///PATH (or no URL for the default)")


__all__ = [
    "DATABASE_FILE",
    "ExternalIdTaken",
    "LeaseLost",
    "Store",
    "StoreError",
    "TooManyObjects",
    "VersionConflict",
    "create_store",
]
