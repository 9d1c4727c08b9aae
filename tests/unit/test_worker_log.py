"""What a worker says about where it exports from: never a password its database URL carries."""

from __future__ import annotations

from pathlib import Path

import pytest

from sessionexport.config import ServerConfig
from sessionexport.worker import _where


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://exporter:Pa55-word@db.example:5433/sessions",
        "postgresql://exporter@db.example:5433/sessions?password=Pa55-word",
        "postgresql:///sessions?host=db.example&port=5433&password=Pa55-word",
    ],
)
def test_a_database_url_is_told_by_host_and_port_without_its_password(url: str) -> None:
    where = _where(ServerConfig(Path("data"), database_url=url))
    assert where == "PostgreSQL at db.example:5433"


def test_the_embedded_store_is_told_by_its_folder() -> None:
    assert _where(ServerConfig(Path("data"))) == "data"
