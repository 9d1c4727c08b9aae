"""What serve, worker and receive say when they start: where the sessions are kept (never a
password its database URL carries), and the URL they listen at."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from sessionexport.listening import url_of
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


def test_a_listening_url_has_the_bound_port_and_an_ipv6_host_in_brackets() -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
        assert url_of("http", "127.0.0.1", sock) == f"http://127.0.0.1:{port}"
        assert url_of("https", "::1", sock) == f"https://[::1]:{port}"  # as check-endpoint takes it
