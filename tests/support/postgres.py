"""PostgreSQL for tests: the server of ``SESSIONEXPORT_TEST_DATABASE_URL`` (or the local one that
``scripts/postgres`` sets up), and a fresh schema per test so runs never see each other's rows.
Without a server the tests that need one fail, never skip."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

DATABASE_URL_VARIABLE = "SESSIONEXPORT_TEST_DATABASE_URL"
# What scripts/postgres prints on this machine; used when the variable is unset.
LOCAL_DATABASE_URL = "postgresql://sessionexport_test:sessionexport_test@127.0.0.1:5432/sessionexport_test"


# -- PostgreSQL: one server per run, one schema per test ------------------------------------------
def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


def reachable_postgres_url() -> str:
    url = os.environ.get(DATABASE_URL_VARIABLE) or LOCAL_DATABASE_URL
    problem = _connection_problem(url)
    if problem is not None:
        source = DATABASE_URL_VARIABLE if os.environ.get(DATABASE_URL_VARIABLE) else "the default local URL"
        pytest.fail(
            f"PostgreSQL tests need a server, and {_redacted(url)} ({source}) is not reachable: {problem}\n"
            f"Start one with scripts/postgres and export {DATABASE_URL_VARIABLE}=<the URL it prints>.",
            pytrace=False,
        )
    return url


def _connection_problem(url: str) -> str | None:
    try:
        with psycopg.connect(url, connect_timeout=5):
            return None
    except psycopg.Error as exc:
        return " ".join(str(exc).split())


@contextmanager
def fresh_schema(url: str) -> Iterator[str]:
    """A new empty schema; yields a URL whose connections create and find their tables in it."""
    schema = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        separator = "&" if "?" in url else "?"
        yield f"{url}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
