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


def create_store(data_dir: Path, database_url: str | None = None, *, existing: bool = False) -> Store:
    """The store a URL names (``sqlite:///PATH``, ``postgresql://...`` or ``postgres://...``); without one,
    SQLite in the data directory (the embedded default). ``existing``: for commands that read what
    a server keeps, a database without its schema is refused on opening, not given one."""
    if not database_url or sqlite_file(database_url):
        from sessionexport.store.sqlite import SQLiteStore

        return SQLiteStore(sqlite_file(database_url) or data_dir / DATABASE_FILE, existing=existing)
    if is_postgresql(database_url):
        from sessionexport.store.postgresql import PostgresStore

        return PostgresStore(database_url, existing=existing)
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
