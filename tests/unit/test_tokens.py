"""API tokens: scopes, the token format, public ids and matching."""

from __future__ import annotations

import dataclasses
import hashlib
import re

import pytest

from sessionexport.tokens import (
    PREFIX,
    Scope,
    TokenError,
    digest,
    expired,
    matches,
    new_token,
    parse_lifetime,
    parse_scopes,
    public_id,
)

TOKEN_SHAPE = re.compile(r"se0c01\.[A-Z0-9]{24}\.[A-Z0-9]{64}")
KNOWN = (
    "exports.manage",
    "metrics.read",
    "sessions.ingest",
    "sessions.read",
    "settings.read",
    "settings.write",
)
READ = frozenset({"sessions.read"})


# --- scopes ----------------------------------------------------------------------------------


def test_parse_scopes_known_names() -> None:
    assert parse_scopes("sessions.read") == frozenset({"sessions.read"})
    assert parse_scopes(" sessions.read , sessions.ingest,,sessions.read ") == frozenset(
        {"sessions.read", "sessions.ingest"}
    )
    assert parse_scopes(",".join(KNOWN)) == frozenset(s.value for s in Scope)


def test_parse_scopes_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(TokenError) as info:
        parse_scopes("sessions.read,sessions.delete,admin")
    message = str(info.value)
    assert "admin, sessions.delete" in message  # the unknown ones, sorted
    assert "known scopes: " + ", ".join(KNOWN) in message


def test_parse_scopes_is_case_sensitive() -> None:
    with pytest.raises(TokenError, match=r"SESSIONS\.READ"):
        parse_scopes("SESSIONS.READ")


@pytest.mark.parametrize("text", ["", " ", ",", " , ,, "])
def test_parse_scopes_empty_is_an_error(text: str) -> None:
    with pytest.raises(TokenError, match="at least one scope"):
        parse_scopes(text)


# --- new tokens ------------------------------------------------------------------------------


def test_new_token_format_and_record() -> None:
    new = new_token("  ci pipeline ", READ, now_ms=1_700_000_000_123)
    assert TOKEN_SHAPE.fullmatch(new.token)
    assert new.token.startswith(PREFIX + ".")
    record = new.record
    assert record.id == new.token.split(".")[1]
    assert record.name == "ci pipeline"
    assert record.scopes == READ
    assert record.created_at == 1_700_000_000_123
    assert record.revoked_at is None
    assert record.secret_hash == hashlib.sha256(new.token.encode()).digest() == digest(new.token)
    assert new.token not in repr(record)  # only the hash is kept


@pytest.mark.parametrize("name", ["", "   "])
def test_new_token_needs_a_name(name: str) -> None:
    with pytest.raises(TokenError, match="name"):
        new_token(name, READ, 0)


@pytest.mark.parametrize("name", ["a\x1b[31mb", "ci\nroot", "tab\there", "a\u2028b", "\u202eabc", "\u200b"])
def test_a_token_name_holds_no_control_or_invisible_characters(name: str) -> None:
    # listed in a table and in logs: an escape would colour them, a line break split them, an
    # override reverse the row, a zero-width character hide the name
    with pytest.raises(TokenError, match="control or invisible characters"):
        new_token(name, READ, 0)


def test_a_token_name_may_be_any_visible_text() -> None:
    assert new_token("Zürich CI 🚀", READ, 0).record.name == "Zürich CI 🚀"


def test_two_tokens_differ() -> None:
    a = new_token("a", READ, 0)
    b = new_token("a", READ, 0)
    assert a.token != b.token
    assert a.record.id != b.record.id
    assert a.record.secret_hash != b.record.secret_hash
    assert a.token.split(".")[2] != b.token.split(".")[2]


# --- public id -------------------------------------------------------------------------------


def test_public_id_round_trip() -> None:
    new = new_token("x", READ, 0)
    assert public_id(new.token) == new.record.id


@pytest.mark.parametrize(
    "token",
    [
        "",
        "se0c01",
        "se0c01..",
        "se0c01." + "A" * 24,
        "se0c02." + "A" * 24 + "." + "B" * 64,
        "SE0C01." + "A" * 24 + "." + "B" * 64,
        "dt0c01." + "A" * 24 + "." + "B" * 64,
        "se0c01." + "A" * 23 + "." + "B" * 64,
        "se0c01." + "A" * 25 + "." + "B" * 64,
        "se0c01." + "A" * 24 + "." + "B" * 63,
        "se0c01." + "A" * 24 + "." + "B" * 65,
        "se0c01." + "A" * 24 + "." + "B" * 64 + ".",
        "se0c01." + "A" * 24 + "." + "B" * 32 + "." + "B" * 31,
        " se0c01." + "A" * 24 + "." + "B" * 64,
        "se0c01." + "\x00" * 24 + "." + "B" * 64,
        "se0c01." + "A" * 24 + "." + "b" * 64,
        "se0c01." + "Ä" * 24 + "." + "B" * 64,
    ],
)
def test_public_id_of_a_malformed_token_is_none(token: str) -> None:
    assert public_id(token) is None


def test_public_id_of_a_well_formed_token() -> None:
    assert public_id("se0c01." + "A" * 24 + "." + "B" * 64) == "A" * 24


# --- matching --------------------------------------------------------------------------------


def test_matches_only_its_own_token() -> None:
    new = new_token("x", READ, 0)
    other = new_token("y", READ, 0)
    assert matches(new.record, new.token)
    assert not matches(new.record, other.token)
    assert not matches(other.record, new.token)


def test_matches_refuses_a_token_with_the_same_public_id_but_another_secret() -> None:
    new = new_token("x", READ, 0)
    head, _, secret = new.token.rpartition(".")
    forged = head + "." + ("A" if secret[0] != "A" else "B") + secret[1:]
    assert public_id(forged) == new.record.id
    assert not matches(new.record, forged)
    assert not matches(new.record, new.token + "A")
    assert not matches(new.record, "")


def test_revoked_record_matches_nothing() -> None:
    new = new_token("x", READ, 0)
    revoked = dataclasses.replace(new.record, revoked_at=1)
    assert not matches(revoked, new.token)
    assert matches(new.record, new.token)


@pytest.mark.parametrize(
    ("text", "ms"), [("30m", 1_800_000), ("12h", 43_200_000), ("90d", 7_776_000_000), (" 1D ", 86_400_000)]
)
def test_lifetimes(text: str, ms: int) -> None:
    assert parse_lifetime(text) == ms


@pytest.mark.parametrize(
    "text", ["", "d", "0d", "-1d", "1.5h", "10", "10s", "1w", "36501d", "²m", "٣d", "1" * 5000 + "d", "1 d"]
)
def test_what_is_no_lifetime_is_refused(text: str) -> None:
    with pytest.raises(TokenError):
        parse_lifetime(text)


def test_a_token_expires_at_its_time_and_never_without_one() -> None:
    forever = new_token("ci", frozenset({"sessions.read"}), 1_000).record
    assert not expired(forever, 10**15)
    soon = new_token("ci", frozenset({"sessions.read"}), 1_000, expires_at=2_000).record
    assert soon.expires_at == 2_000
    assert not expired(soon, 1_999) and expired(soon, 2_000)


@pytest.mark.parametrize("expires_at", [999, 1_000])
def test_a_token_cannot_be_made_expired(expires_at: int) -> None:
    with pytest.raises(TokenError, match="expire in the future"):
        new_token("ci", frozenset({"sessions.read"}), 1_000, expires_at=expires_at)
