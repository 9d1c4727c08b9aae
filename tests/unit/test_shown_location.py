"""What serve and worker say about where the sessions are kept: never a password its database URL carries."""

from __future__ import annotations

from pathlib import Path

import pytest

from sessionexport.store.locations import shown_location


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://exporter:Pa55-word@db.example:5433/sessions",
        "postgresql://exporter@db.example:5433/sessions?password=Pa55-word",
        "postgresql:///sessions?host=db.example&port=5433&password=Pa55-word",
    ],
)
def test_a_database_url_is_told_by_host_and_port_without_its_password(url: str) -> None:
    assert shown_location(Path("data"), url) == "PostgreSQL at db.example:5433"  # not the unused data dir


def test_the_embedded_store_is_told_by_its_file_or_folder() -> None:
    assert shown_location(Path("data"), "sqlite:///srv/sessions.db") == "srv/sessions.db"
    assert shown_location(Path("data"), None) == "data"
