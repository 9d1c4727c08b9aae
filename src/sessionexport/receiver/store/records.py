"""What the receiver keeps: documents (sessions, legacy documents, Elasticsearch documents) and requests."""

from __future__ import annotations

from dataclasses import dataclass

SESSION, LEGACY, DOCUMENT = "session", "legacy", "document"


@dataclass(frozen=True, slots=True)
class Document:
    """One received document. ``key`` is its identity: a re-delivery with the same key is the same document.

    Sessions: ``<tenantId>-<userSessionId>-<startTime>`` (Elasticsearch's ``_id`` rule); legacy
    documents: ``legacy-<visitorId>-<visitId>-<startTime>``; Elasticsearch documents: their ``_id``
    within ``index``.

    ``replaces`` is what a save does when a document with the same key is already stored (or came
    earlier in the same request): False keeps the stored one as it was (sessions, legacy documents
    and Elasticsearch ``create``: idempotent), True replaces it (Elasticsearch ``index``).
    """

    kind: str
    key: str
    body: bytes
    user_session_id: str | None = None
    index: str | None = None
    replaces: bool = False


@dataclass(frozen=True, slots=True)
class RequestInfo:
    received_at: int
    method: str
    path: str
    content_type: str
    size: int
    client: str
    principal: str | None = None  # who authenticated: a user name, a client id or a JWT subject


@dataclass(frozen=True, slots=True)
class SaveResult:
    request_id: int
    created: list[bool]  # per document, in order: False = already there (kept or replaced)

    @property
    def stored(self) -> int:
        return sum(self.created)

    @property
    def duplicates(self) -> int:
        return len(self.created) - self.stored


@dataclass(frozen=True, slots=True)
class StoredDocument:
    seq: int
    request_id: int
    received_at: int
    kind: str
    key: str
    user_session_id: str | None
    index: str | None
    body: bytes


@dataclass(frozen=True, slots=True)
class RequestRecord:
    id: int
    received_at: int
    method: str
    path: str
    content_type: str
    size: int
    client: str
    principal: str | None
    status: int
    documents: int
    stored: int
    duplicates: int
    error: str | None


@dataclass(frozen=True, slots=True)
class Counts:
    sessions: int
    legacy: int
    documents: int
    requests: int
    refused_requests: int

    def as_json(self) -> dict[str, int]:
        return {
            "sessions": self.sessions,
            "legacy": self.legacy,
            "documents": self.documents,
            "requests": self.requests,
            "refusedRequests": self.refused_requests,
        }
