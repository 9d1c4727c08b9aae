"""Database URLs: which backend a URL names, and the error for one of no known kind."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TypeGuard

from sessionexport.store.base import StoreError

SQLITE_PREFIX = "sqlite:///"
POSTGRESQL_PREFIXES = ("postgresql://", "postgres://")

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_PLAIN_WORD = re.compile(r"[\w.-]{1,40}")


def is_postgresql(url: str | None) -> TypeGuard[str]:
    return url is not None and url.startswith(POSTGRESQL_PREFIXES)


def sqlite_file(url: str | None) -> Path | None:
    """The file a ``sqlite:///PATH`` URL names; None for any other location."""
    return (
        Path(url.removeprefix(SQLITE_PREFIX)) if url is not None and url.startswith(SQLITE_PREFIX) else None
    )


def shown_location(data_dir: Path, database_url: str | None) -> str:
    """Where the sessions are kept, for a start-up line: a PostgreSQL database by its host and port
    alone (its URL may carry a password), a SQLite file by its path, else the data directory."""
    if is_postgresql(database_url):
        from sessionexport.store.postgresql_database import describe  # psycopg: only when it is used

        return f"PostgreSQL at {describe(database_url)[0]}"
    return str(sqlite_file(database_url) or data_dir)


def unsupported_location(what: str, location: str) -> StoreError:
    """The error for a database URL or storage of no known kind, naming its scheme but never
    the rest: a connection string (``host=... password=...``) is not shown, as it may hold a password."""
    if scheme := _SCHEME.match(location):
        return StoreError(f"unsupported {what} scheme {scheme[1]!r}")
    if _PLAIN_WORD.fullmatch(location):
        return StoreError(f"unsupported {what} {location!r}")
    return StoreError(f"unsupported {what}: it is not a URL (not shown, as it may hold a password)")
