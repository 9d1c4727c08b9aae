"""Request bodies of ``/export/events`` to documents: one JSON session per line, all or nothing.

Each line must be a session of the export format (validated against the session model, every
problem reported with its line and field path) or a document of the legacy format, which is kept
as it is (see ``legacy_document``). Blank lines and a trailing newline are tolerated; a body that
is a JSON array is read as its items.
"""

from __future__ import annotations

import msgspec

from sessionexport.ingest.documents import UTF8_BOM, array_items, ndjson_lines, parse_all
from sessionexport.model.elasticsearch_names import document_id, escaped
from sessionexport.model.session import Identifier
from sessionexport.model.validation import NOT_JSON, InvalidSession, decode_session, not_utf8, single_line
from sessionexport.receiver.store.records import LEGACY, SESSION, Document


class _LegacyIdentity(msgspec.Struct):
    """The identity of a pre-2022 export document, as in the original documentation's check command."""

    visitId: Identifier
    startTime: int
    visitorId: Identifier | None = None


_legacy = msgspec.json.Decoder(_LegacyIdentity)


def parse_events_body(body: bytes) -> list[Document]:
    if body.removeprefix(UTF8_BOM).lstrip()[:1] == b"[":
        return parse_all(array_items(body), parse_line)
    return parse_all(((f"line {n}", line) for n, line in ndjson_lines(body)), parse_line)


def parse_line(raw: bytes) -> Document:
    """A session, else a legacy document; raise InvalidSession with the session's problems."""
    try:
        session = decode_session(raw)
    except InvalidSession:
        legacy = legacy_document(raw)
        if legacy is None:
            raise
        return legacy
    key = document_id(session.tenantId, session.userSessionId, session.startTime)
    return Document(SESSION, key, single_line(raw), session.userSessionId)


def legacy_document(raw: bytes) -> Document | None:
    """A document of the old export format (``visitId``, ``visitorId``, ``startTime``), kept as sent
    (InvalidSession when it is not UTF-8); None when it is not one.

    The original documentation verifies a configuration by PUTting such a document; answering
    400 would make a working endpoint look broken, and discarding it would lose data that
    pre-2022 exports really sent. It is stored apart (kind ``legacy``) and never counted as a session.
    """
    try:
        identity = _legacy.decode(raw)
    except (msgspec.ValidationError, *NOT_JSON):
        return None
    if "\x00" in f"{identity.visitId}{identity.visitorId or ''}":  # kept as text: never NUL
        return None
    if bad := not_utf8(raw):  # kept as sent: its other fields were not read
        raise InvalidSession([bad])
    # escaped: visitor a-b of visit c and visitor a of visit b-c are two documents, not one
    key = f"legacy-{escaped(identity.visitorId or '')}-{escaped(identity.visitId)}-{identity.startTime}"
    return Document(LEGACY, key, single_line(raw), identity.visitId)
