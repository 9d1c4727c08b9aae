"""What a PostgreSQL failure says: the address, never the password, and nothing else garbled."""

from __future__ import annotations

from sessionexport.store.postgresql_database import describe, scrub


def test_a_short_password_is_masked_where_it_stands_not_inside_words() -> None:
    address, secrets = describe("postgresql://u:p@127.0.0.1:1/db")
    said = 'connection to server at "127.0.0.1", port 1 failed: is the server accepting TCP/IP connections?'
    assert address == "127.0.0.1:1"
    assert scrub(said, secrets) == said  # "port", "accepting": untouched, and the password not told
    assert scrub("postgresql://u:p@127.0.0.1:1/db password=p", secrets) == (
        "postgresql://u:***@127.0.0.1:1/db password=***"
    )


def test_a_password_is_masked_as_sent_and_decoded() -> None:
    _, secrets = describe("postgresql://u:p%C3%A4%3Ass@h/db")
    assert scrub("postgresql://u:p%C3%A4%3Ass@h/db; pä:ss", secrets) == "postgresql://u:***@h/db; ***"
