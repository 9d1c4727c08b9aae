"""Which backend the store-backed tests run on: SQLite (the default) or, with
``SESSIONEXPORT_TEST_BACKEND=postgresql``, a fresh PostgreSQL schema per test (``scripts/test``
runs the store-backed tests a second time so). Tests marked ``store`` are those."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from tests.support.postgres import fresh_schema, reachable_postgres_url

BACKEND_VARIABLE = "SESSIONEXPORT_TEST_BACKEND"
BACKENDS = ("sqlite", "postgresql")


def current_backend() -> str:
    backend = os.environ.get(BACKEND_VARIABLE) or "sqlite"
    if backend not in BACKENDS:
        raise RuntimeError(f"{BACKEND_VARIABLE}={backend!r}: expected one of {', '.join(BACKENDS)}")
    return backend


@contextmanager
def backend_database() -> Iterator[str | None]:
    """The database URL of a test's store: None (SQLite in its data directory) or a fresh schema's."""
    if current_backend() == "sqlite":
        yield None
        return
    with fresh_schema(reachable_postgres_url()) as url:
        yield url


def stored_text(url: str, table: str) -> bytes:
    """Every row of a PostgreSQL table as text, for checks of what is at rest."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(sql.SQL("SELECT t::text FROM {} t").format(sql.Identifier(table))).fetchall()
    return "\n".join(row for (row,) in rows).encode()
