"""API tokens: creation, parsing and scopes. Pure functions; storage is the store's job.

A token reads ``se0c01.<public id, 24 chars>.<secret, 64 chars>`` (the shape of Dynatrace API
tokens). Only the public id and a SHA-256 of the whole token are stored: a token has 384 bits of
randomness, so a fast hash is safe, and the public id finds the row without scanning.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

from sessionexport.store.records import TokenRecord

PREFIX = "se0c01"
_ALPHABET = string.ascii_uppercase + string.digits
_LETTERS = frozenset(_ALPHABET)


class Scope(StrEnum):
    SETTINGS_READ = "settings.read"
    SETTINGS_WRITE = "settings.write"
    SESSIONS_INGEST = "sessions.ingest"
    SESSIONS_READ = "sessions.read"
    EXPORTS_MANAGE = "exports.manage"
    METRICS_READ = "metrics.read"


class TokenError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class NewToken:
    token: str  # shown once, never stored
    record: TokenRecord


def parse_scopes(text: str) -> frozenset[str]:
    """``a,b,c`` to a set of known scopes; unknown names are an error that lists the known ones."""
    names = {part.strip() for part in text.split(",") if part.strip()}
    if not names:
        raise TokenError("at least one scope is required")
    known = {scope.value for scope in Scope}
    unknown = sorted(names - known)
    if unknown:
        raise TokenError(f"unknown scope(s) {', '.join(unknown)}; known scopes: {', '.join(sorted(known))}")
    return frozenset(names)


# Unicode categories a name may not hold: controls, format characters (direction overrides,
# zero-width ones) and line and paragraph separators.
_UNSHOWN = frozenset({"Cc", "Cf", "Zl", "Zp"})


def new_token(name: str, scopes: frozenset[str], now_ms: int, expires_at: int | None = None) -> NewToken:
    if not name.strip():
        raise TokenError("a token needs a name")
    if any(unicodedata.category(c) in _UNSHOWN for c in name):  # listed in tables and logs, as typed
        raise TokenError(
            "a token's name may not hold control or invisible characters (line breaks, tabs, escapes,"
            " direction overrides, zero-width characters)"
        )
    if expires_at is not None and expires_at <= now_ms:
        raise TokenError("a token must expire in the future")
    public = "".join(secrets.choice(_ALPHABET) for _ in range(24))
    secret = "".join(secrets.choice(_ALPHABET) for _ in range(64))
    token = f"{PREFIX}.{public}.{secret}"
    return NewToken(token, TokenRecord(public, name.strip(), scopes, digest(token), now_ms, None, expires_at))


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def public_id(token: str) -> str | None:
    """The public part of a well-formed token, else None."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX or len(parts[1]) != 24 or len(parts[2]) != 64:
        return None
    if not set(parts[1]) | set(parts[2]) <= _LETTERS:  # never looked up: it could be no token
        return None
    return parts[1]


def matches(record: TokenRecord, token: str) -> bool:
    return record.revoked_at is None and hmac.compare_digest(record.secret_hash, digest(token))


def expired(record: TokenRecord, now_ms: int) -> bool:
    return record.expires_at is not None and now_ms >= record.expires_at


_UNITS_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}
_LIFETIME = re.compile(r"([0-9]{1,9})([mhdMHD])", re.ASCII)
_MAX_LIFETIME_MS = 100 * 365 * 86_400_000


def parse_lifetime(text: str) -> int:
    """``30m``, ``12h``, ``90d`` to milliseconds."""
    matched = _LIFETIME.fullmatch(text.strip())
    if matched is None or int(matched[1]) == 0:
        raise TokenError(f"{text!r} is no lifetime: a whole number then m, h or d (30m, 12h, 90d)")
    lifetime = int(matched[1]) * _UNITS_MS[matched[2].lower()]
    if lifetime > _MAX_LIFETIME_MS:
        raise TokenError(f"{text!r} is too long: at most 100 years (or no --expires-in)")
    return lifetime
