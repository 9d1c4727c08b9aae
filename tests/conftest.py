"""Shared fixtures: a real store in a temporary directory (SQLite; or a fresh PostgreSQL schema
with SESSIONEXPORT_TEST_BACKEND=postgresql, see tests/support/backend.py), the real app in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from sessionexport import tokens
from sessionexport.api.app import create_app
from sessionexport.clock import now_ms
from sessionexport.config import ServerConfig
from sessionexport.model.samples import doc_sample
from sessionexport.store import Store, create_store
from tests.support.backend import BACKEND_VARIABLE, backend_database
from tests.support.postgres import reachable_postgres_url
from tests.support.receiver import Tls

ALL_SCOPES = frozenset(s.value for s in tokens.Scope)


def sample(name: str) -> bytes:
    """A documentation sample session, exactly as published (one compact JSON line)."""
    return doc_sample(name)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"store: store-backed; scripts/test runs these on PostgreSQL too ({BACKEND_VARIABLE})"
    )


@pytest.fixture
def database_url() -> Iterator[str | None]:
    """The test's database: None (SQLite in its data directory) or a fresh PostgreSQL schema's URL."""
    with backend_database() as url:
        yield url


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A reachable PostgreSQL server (the test fails with how to start one when there is none)."""
    return reachable_postgres_url()


@dataclass
class Api:
    """The real app, in-process, over httpx; ``token(...)`` creates API tokens in its store."""

    client: httpx.AsyncClient
    store: Store
    token: Callable[..., Awaitable[str]]

    def auth(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Api-Token {token}"}


@pytest.fixture
async def store(tmp_path: Path, database_url: str | None) -> AsyncIterator[Store]:
    s = create_store(tmp_path, database_url)
    await s.open()
    yield s
    await s.close()


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    """A test CA and a certificate for loopback signed by it (for real HTTPS receivers)."""
    folder = tmp_path / "tls"
    folder.mkdir()
    return Tls.create(folder)


async def make_token(store: Store, scopes: frozenset[str] = ALL_SCOPES, name: str = "test") -> str:
    new = tokens.new_token(name, scopes, now_ms())
    await store.add_token(new.record)
    return new.token


@pytest.fixture
def server_config(tmp_path: Path, database_url: str | None) -> ServerConfig:
    # No exporters: these tests configure endpoints that do not exist (their DNS lookups would
    # outlive the test); the export engine has its own tests against real receivers.
    return ServerConfig(
        data_dir=tmp_path, database_url=database_url, max_body_bytes=256 * 1024, run_exporters=False
    )


@pytest.fixture
async def api(server_config: ServerConfig) -> AsyncIterator[Api]:
    app = create_app(server_config)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sessionexport.test") as client:
            store = app.state.store

            async def token(*scopes: str) -> str:
                return await make_token(store, frozenset(scopes) if scopes else ALL_SCOPES)

            yield Api(client, store, token)
