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


def unsupported_location(what: str, location: str) -> StoreError:
    """The error for a database URL or storage of no known kind, naming its scheme but never
    the rest: a connection string (``host=... password=...``) is not shown, as it may hold a password."""
    if scheme := _SCHEME.match(location):
        return StoreError(f"unsupported {what} scheme {scheme[1]!r}")
    if _PLAIN_WORD.fullmatch(location):
        return StoreError(f"unsupported {what} {location!r}")
    return StoreError(f"unsupported {what}: it is not a URL (not shown, as it may hold a password)")
