"""Request bodies of ``/export/events`` to documents: one JSON session per line, all or nothing.

Each line must be a session of the export format (validated against the session model, every
problem reported with its line and field path) or a document of the legacy format, which is kept
as it is (see ``legacy_document``). Blank lines and a trailing newline are tolerated; a body that
is a JSON array is read as its items.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from sessionexport.ingest.documents import DocumentProblem, RejectedBody, ndjson_lines
from sessionexport.model.validation import InvalidSession, decode_session, single_line
from sessionexport.receiver.store.records import LEGACY, SESSION, Document


class _LegacyIdentity(msgspec.Struct):
    """The identity of a pre-2022 export document, as in the original documentation's check command."""

    visitId: str
    startTime: int
    visitorId: str | None = None


_legacy = msgspec.json.Decoder(_LegacyIdentity)


def parse_events_body(body: bytes) -> list[Document]:
    if body.lstrip()[:1] == b"[":
        return _parse_all(_array_items(body))
    return _parse_all((f"line {n}", line) for n, line in ndjson_lines(body))


def session_key(tenant_id: str, user_session_id: str, start_time: int) -> str:
    """Elasticsearch's ``_id`` rule, so one identity means one stored document everywhere."""
    return f"{tenant_id}-{user_session_id}-{start_time}"


def parse_line(raw: bytes) -> Document:
    """A session, else a legacy document; raise InvalidSession with the session's problems."""
    try:
        session = decode_session(raw)
    except InvalidSession:
        legacy = legacy_document(raw)
        if legacy is None:
            raise
        return legacy
    key = session_key(session.tenantId, session.userSessionId, session.startTime)
    return Document(SESSION, key, single_line(raw), session.userSessionId)


def legacy_document(raw: bytes) -> Document | None:
    """A document of the old export format (``visitId``, ``visitorId``, ``startTime``), kept as sent.

    The original documentation verifies a configuration by PUTting such a document; answering
    400 would make a working endpoint look broken, and discarding it would lose data that
    pre-2022 exports really sent. It is stored apart (kind ``legacy``) and never counted as a session.
    """
    try:
        identity = _legacy.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    key = f"legacy-{identity.visitorId or ''}-{identity.visitId}-{identity.startTime}"
    return Document(LEGACY, key, single_line(raw), identity.visitId)


def _array_items(body: bytes) -> list[tuple[str, bytes]]:
    try:
        items = msgspec.json.decode(body, type=list[msgspec.Raw])
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise RejectedBody([DocumentProblem("body", "", f"not a JSON array of sessions: {exc}")]) from None
    return [(f"index {i}", bytes(item)) for i, item in enumerate(items)]


def _parse_all(lines: Iterable[tuple[str, bytes]]) -> list[Document]:
    documents: list[Document] = []
    problems: list[DocumentProblem] = []
    for location, raw in lines:
        try:
            documents.append(parse_line(raw))
        except InvalidSession as exc:
            problems.extend(DocumentProblem(location, p.path, p.message) for p in exc.problems)
    if problems:
        raise RejectedBody(problems)
    if not documents:
        raise RejectedBody([DocumentProblem("body", "", "no sessions in the request body")])
    return documents
