"""The storage interface. Every backend (SQLite embedded default, PostgreSQL) implements it.

Methods are coroutines so that no backend can block the event loop; each call is one
transaction. Times are epoch milliseconds, passed in by the caller so that rules stay testable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sessionexport.store.records import AppendResult, NewSession, StoredSession, TokenRecord


class StoreError(Exception):
    """The storage backend failed (unreachable, corrupt, full...)."""


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
