"""The storage interface. Every backend (SQLite embedded default, PostgreSQL) implements it.

Methods are coroutines so that no backend can block the event loop; each call is one
transaction. Times are epoch milliseconds, passed in by the caller so that rules stay testable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sessionexport.store.records import AppendResult, NewSession, SettingsRecord, StoredSession, TokenRecord


class StoreError(Exception):
    """The storage backend failed (unreachable, corrupt, full...)."""


class VersionConflict(Exception):
    """The object changed (or vanished) since the version the caller read."""


class TooManyObjects(Exception):
    """The schema already holds its maximum number of objects."""


class Store(Protocol):
    async def open(self) -> None:
        """Connect and bring the schema up to date."""

    async def close(self) -> None:
        """Finish pending writes and release connections."""

    # -- session log -------------------------------------------------------------------------
    async def append_sessions(self, sessions: Sequence[NewSession], received_at: int) -> AppendResult:
        """Append all sessions in one transaction; a known identity counts as a duplicate."""

    async def recent_sessions(
        self, *, user_session_id: str | None = None, before_seq: int | None = None, limit: int = 100
    ) -> list[StoredSession]:
        """Sessions newest first, optionally one user session id only, below a seq."""

    async def count_sessions(self) -> int: ...

    async def purge_sessions(self, received_before: int) -> int:
        """Delete sessions that joined the log before the given time; return how many."""

    # -- API tokens --------------------------------------------------------------------------
    async def add_token(self, token: TokenRecord) -> None: ...

    async def get_token(self, token_id: str) -> TokenRecord | None: ...

    async def list_tokens(self) -> list[TokenRecord]: ...

    async def revoke_token(self, token_id: str, revoked_at: int) -> bool:
        """Revoke a token; False when there is no such active token."""

    # -- settings objects --------------------------------------------------------------------
    async def list_settings(self, schema_id: str | None = None) -> list[SettingsRecord]:
        """Objects (of one schema, or all), oldest first."""

    async def get_setting(self, object_id: str) -> SettingsRecord | None: ...

    async def insert_setting(self, record: SettingsRecord, max_objects: int) -> None:
        """Insert, atomically refusing with TooManyObjects when the schema is full."""

    async def update_setting(self, record: SettingsRecord, expected_version: int) -> None:
        """Replace the object if it is still at ``expected_version``, else VersionConflict."""

    async def delete_setting(self, object_id: str, expected_version: int | None) -> bool:
        """Delete (if at ``expected_version`` when given, else VersionConflict); False if absent."""
