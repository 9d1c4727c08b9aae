"""Request bodies: the stored session bytes joined by newlines, never re-serialised.

Plain endpoints get one session per line. Elasticsearch (``sendDirect``) gets an ``index`` action
line before each session, ``_id`` = ``<tenantId>-<userSessionId>-<startTime>`` so that a re-sent
session overwrites rather than duplicates, and ``_type`` only when a document type is set
(Elasticsearch 8 rejects it). Every line, the last included, ends with ``\\n`` (``_bulk`` requires it).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import orjson

from sessionexport.export.config import SendDirect
from sessionexport.model.elasticsearch_names import document_id
from sessionexport.store.records import LogEntry


def action_line(entry: LogEntry, direct: SendDirect) -> bytes:
    _id = document_id(entry.tenant_id, entry.user_session_id, entry.start_time)
    return _action_prefix(direct.index, direct.doc_type) + orjson.dumps(_id) + b"}}"


@functools.cache
def _action_prefix(index: str, doc_type: str | None) -> bytes:
    """``{"index":{"_index":...,"_type":...,"_id":`` once per export, not once per session."""
    meta: dict[str, str] = {"_index": index}
    if doc_type:
        meta["_type"] = doc_type
    meta["_id"] = ""
    whole = orjson.dumps({"index": meta})
    return whole[: -len(b'""}}')]


def encoded_size(entry: LogEntry, direct: SendDirect | None) -> int:
    """The bytes this session adds to a body."""
    size = len(entry.body) + 1
    return size + len(action_line(entry, direct)) + 1 if direct else size


def bulk_body(entries: Sequence[LogEntry], direct: SendDirect | None) -> bytes:
    if direct is None:
        bodies = [e.body for e in entries]
        bodies.append(b"")  # the last line ends with a newline too
        return b"\n".join(bodies)
    return b"".join(part for e in entries for part in (action_line(e, direct), b"\n", e.body, b"\n"))
