"""The receiver's storage interface; one module per backend (SQLite, PostgreSQL, NDJSON files).

A request is stored all-or-nothing: its documents and its request record in one transaction (or
one fsync'd append), and the receiver answers 200 only after ``save`` returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sessionexport.receiver.store.records import (
    Counts,
    Document,
    RequestInfo,
    RequestRecord,
    SaveResult,
    StoredDocument,
)


class ReceivedStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def save(self, request: RequestInfo, documents: Sequence[Document]) -> SaveResult:
        """Store the documents of one request, with one request record, all or nothing.

        Documents are applied in order, as Elasticsearch applies a bulk's operations: a document
        whose key is already stored, or came earlier in the request, is kept as it was
        (``Document.replaces`` false) or replaced (true); either way it is reported as not created.
        """

    async def refuse(self, request: RequestInfo, status: int, error: str) -> int:
        """Record a refused request (nothing of it stored); return its id."""

    async def counts(self) -> Counts: ...

    async def documents(
        self,
        *,
        user_session_id: str | None = None,
        request_id: int | None = None,
        kind: str | None = None,
        limit: int = 20,
        before_seq: int | None = None,
    ) -> list[StoredDocument]:
        """Stored documents, newest first, optionally of one session id, one request or one kind;
        with ``before_seq``, those older than that document (the next page)."""

    async def requests(self, limit: int = 20) -> list[RequestRecord]:
        """Requests, newest first."""
