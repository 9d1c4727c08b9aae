"""The plain records that cross the storage interface."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NewSession:
    """A validated session about to join the log, with the attributes extracted for filtering."""

    tenant_id: str
    user_session_id: str
    start_time: int
    end_time: int | None
    user_id: str | None
    user_type: str | None
    application_type: str | None
    country: str | None
    applications: tuple[str, ...]
    body: bytes


@dataclass(frozen=True, slots=True)
class StoredSession:
    seq: int
    tenant_id: str
    user_session_id: str
    start_time: int
    end_time: int | None
    received_at: int
    body: bytes


@dataclass(frozen=True, slots=True)
class AppendResult:
    accepted: int
    duplicates: int


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: str
    name: str
    scopes: frozenset[str]
    secret_hash: bytes
    created_at: int
    revoked_at: int | None = None


@dataclass(frozen=True, slots=True)
class SettingsRecord:
    """A settings object as stored: ``value`` is JSON with its secrets encrypted."""

    object_id: str
    schema_id: str
    scope: str
    external_id: str | None
    value: str
    schema_version: str
    created: int
    modified: int
    created_by: str
    modified_by: str
    version: int
