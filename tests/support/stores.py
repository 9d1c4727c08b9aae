"""Opening and closing a store (of either kind) around a test; a database as an older release left it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol, TypeVar

import psycopg

from sessionexport.store.migrations import migrations_for
from sessionexport.store.sqlite_engine import _statements, connect


class _Openable(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...


S = TypeVar("S", bound=_Openable)


@asynccontextmanager
async def opened(new: Callable[[], S]) -> AsyncIterator[S]:
    store = new()
    await store.open()
    try:
        yield store
    finally:
        await store.close()


_RECORD = "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL)"


def sqlite_at_version(path: Path, up_to: int, package: str = "sessionexport.store") -> None:
    """An SQLite database (made as the store makes one) with migrations 1 to ``up_to`` (of the
    store, or of the receiver's with ``package`` "sessionexport.receiver") applied."""
    with contextlib.closing(connect(path)) as conn:
        conn.execute(_RECORD)
        for m in migrations_for("sqlite", package)[:up_to]:
            for statement in _statements(m.sql):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (m.version, m.name))


def postgresql_at_version(url: str, up_to: int) -> None:
    """A PostgreSQL schema with migrations 1 to ``up_to`` applied."""
    with psycopg.connect(url, autocommit=True) as pg:
        pg.execute(_RECORD)
        for m in migrations_for("postgresql")[:up_to]:
            pg.execute(m.sql.encode())
            pg.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (m.version, m.name))
