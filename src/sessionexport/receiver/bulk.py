"""Elasticsearch's ``_bulk`` API, as far as a session export needs it. No I/O.

    body ─▶ parse_bulk ─▶ [Operation ...] ─▶ (store) ─▶ item_result / failed_item ─▶ bulk_response

A body is action/metadata lines, each ``index`` or ``create`` followed by its document line, the
last line ending with ``\\n`` (a ``\\r`` before it is dropped). Whole-request problems (no final
newline, a broken action line, an unknown parameter in one, ``_type`` on Elasticsearch 8, an
``_id`` over 512 bytes) raise ``BulkRequestError`` (ES answers 400 for those); a broken document,
an empty ``_id`` or an invalid index name only fail their item, as in Elasticsearch, which answers
200 with ``errors: true``.
``FaultPlan`` makes chosen items fail on purpose, so senders can test partial failures.
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import msgspec

from sessionexport.model.elasticsearch_names import index_name_problem
from sessionexport.model.validation import NOT_JSON, not_json

ACTIONS = ("index", "create", "update", "delete")
ES_VERSION_NUMBERS = {7: "7.17.25", 8: "8.15.3"}  # what the receiver says it is, by --es-version
TYPES_DEPRECATED = "[types removal] Specifying types in bulk requests is deprecated."
# What an action/metadata line may hold besides ``_type`` (Elasticsearch 7 only); ES refuses the
# whole request for anything else.
METADATA = frozenset(
    {
        "_index",
        "_id",
        "routing",
        "op_type",
        "version",
        "version_type",
        "retry_on_conflict",
        "pipeline",
        "_source",
        "if_seq_no",
        "if_primary_term",
        "require_alias",
        "require_data_stream",
        "dynamic_templates",
        "list_executed_pipelines",
    }
)
MAX_ID_BYTES = 512
ERROR_TYPES = {
    400: "document_parsing_exception",
    404: "index_not_found_exception",
    409: "version_conflict_engine_exception",
    429: "es_rejected_execution_exception",
}


@dataclass(frozen=True)
class BulkTarget:
    """The index (and, on Elasticsearch 7, the type) a ``_bulk`` URL names, if any."""

    index: str | None = None
    doc_type: str | None = None


def bulk_target(raw_path: str, es_version: int) -> BulkTarget | None:
    """What ``/_bulk``, ``/<index>/_bulk`` or (ES 7) ``/<index>/<type>/_bulk`` names, read from the
    path as sent: a segment may hold an encoded ``/`` (``%3Csessions-%7Bnow%2Fd%7D%3E``, how
    Elasticsearch writes a date-math index in a URL). None: no such route (Elasticsearch answers
    "no handler found")."""
    segments = raw_path.removesuffix("/_bulk").split("/")[1:]
    if not raw_path.endswith("/_bulk") or "" in segments or len(segments) > (2 if es_version < 8 else 1):
        return None
    names = [unquote(segment, errors="replace") for segment in segments]
    return BulkTarget(*names)


class BulkRequestError(ValueError):
    """The whole request is refused: ES's ``{"error": {...}, "status": 400}``."""

    def __init__(self, error_type: str, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.error_type, self.reason, self.status = error_type, reason, status

    def as_json(self) -> dict[str, Any]:
        cause = {"type": self.error_type, "reason": self.reason}
        return {"error": {"root_cause": [cause], **cause}, "status": self.status}


@dataclass(frozen=True, slots=True)
class ItemFailure:
    status: int
    error_type: str
    reason: str
    in_shard: bool = False  # failed in the index's shard (a version conflict): the error names them


@dataclass(frozen=True, slots=True)
class Operation:
    action: str
    index: str
    doc_id: str
    doc_type: str | None
    source: bytes | None  # the document line as sent
    problem: ItemFailure | None = None  # why this item fails on its own (its document or its names)


def parse_bulk(
    body: bytes, path_index: str | None, es_version: int, path_type: str | None = None
) -> list[Operation]:
    """The operations of a body; ``path_index`` and (Elasticsearch 7) ``path_type`` from the URL
    (``/<index>/_bulk``, ``/<index>/<type>/_bulk``) for the lines that name none."""
    if not body.strip():
        raise BulkRequestError(
            "action_request_validation_exception", "Validation Failed: 1: no requests added;"
        )
    if not body.endswith(b"\n"):
        raise BulkRequestError(
            "illegal_argument_exception", "The bulk request must be terminated by a newline [\\n]"
        )
    lines = body.split(b"\n")[:-1]
    operations: list[Operation] = []
    too_long: list[str] = []
    number = 0
    while number < len(lines):
        if not lines[number].strip():
            number += 1
            continue
        action, meta = _action(lines[number], number + 1, es_version)
        action = _op_type(action, meta, number + 1)
        index = _meta_text(meta, "_index", action, number + 1) or path_index
        if not index:
            raise BulkRequestError(
                "action_request_validation_exception", "Validation Failed: 1: index is missing;"
            )
        doc_id = _meta_text(meta, "_id", action, number + 1)
        doc_type = _meta_text(meta, "_type", action, number + 1) or path_type
        if doc_id is not None and len(doc_id.encode()) > MAX_ID_BYTES:
            too_long.append(
                f"id [{doc_id}] is too long, must be no longer than {MAX_ID_BYTES} bytes"
                f" but was: {len(doc_id.encode())}"
            )
        source = None
        if action != "delete":
            number += 1
            if number >= len(lines):
                raise BulkRequestError(
                    "illegal_argument_exception", f"The {action} action at line [{number}] has no document"
                )
            source = lines[number].removesuffix(b"\r")
        problem = _names_problem(index, doc_id) or _document_problem(action, source)
        doc_id = uuid.uuid4().hex if doc_id is None else doc_id
        operations.append(Operation(action, index, doc_id, doc_type, source, problem))
        number += 1
    if too_long:
        failed = " ".join(f"{n}: {reason};" for n, reason in enumerate(too_long, start=1))
        raise BulkRequestError("action_request_validation_exception", f"Validation Failed: {failed}")
    return operations


def _meta_text(meta: dict[str, msgspec.Raw], key: str, action: str, number: int) -> str | None:
    """``_index``, ``_id`` or ``_type`` as Elasticsearch reads them: text, a number as it is
    written (``12345678901234567890123`` and ``...124`` stay two ids; read as floats, they
    would be one), or absent."""
    raw = bytes(meta[key]) if key in meta else b"null"
    first = raw[:1]
    if raw == b"null":
        return None
    if first == b'"':
        text: str = msgspec.json.decode(raw)
        return text
    if first == b"-" or first.isdigit():
        return raw.decode()
    kind = {b"[": "START_ARRAY", b"{": "START_OBJECT"}.get(first, "VALUE_BOOLEAN")
    raise BulkRequestError(
        "x_content_parse_exception", f"[{number}:1] [{action}] {key} doesn't support values of type: {kind}"
    )


def _op_type(action: str, meta: dict[str, msgspec.Raw], number: int) -> str:
    """``{"index": {"op_type": "create"}}`` is a ``create``, as Elasticsearch reads it."""
    if action != "index" or "op_type" not in meta:
        return action
    op_type = _meta_text(meta, "op_type", action, number)
    if op_type not in ("index", "create"):
        raise BulkRequestError(
            "illegal_argument_exception", f"opType must be 'create' or 'index', found: [{op_type}]"
        )
    return op_type


def _names_problem(index: str, doc_id: str | None) -> ItemFailure | None:
    """Why ``index`` or ``doc_id`` fail their item, as Elasticsearch says it; None when they do not.
    Names are kept as text: NUL has no place there either (PostgreSQL refuses it)."""
    if "\x00" in index or "\x00" in (doc_id or ""):
        return ItemFailure(
            400, ERROR_TYPES[400], "_index and _id must not contain the NUL character (\\u0000)"
        )
    if doc_id == "":
        return ItemFailure(400, "illegal_argument_exception", "if _id is specified it must not be empty")
    if reason := index_name_problem(index):
        return ItemFailure(400, "invalid_index_name_exception", f"Invalid index name [{index}], {reason}")
    return None


_action_line = msgspec.json.Decoder(dict[str, msgspec.Raw])
_metadata = msgspec.json.Decoder(dict[str, msgspec.Raw])  # values as written: see _meta_text


def _action(line: bytes, number: int, es_version: int) -> tuple[str, dict[str, msgspec.Raw]]:
    try:
        line.decode()  # once, here: every name and value read from the line below is then text
    except UnicodeDecodeError as exc:
        raise BulkRequestError(
            "x_content_parse_exception",
            f"[{number}:{exc.start + 1}] Malformed action/metadata line: invalid UTF-8 byte 0x{line[exc.start]:02x}",
        ) from None
    try:
        value = _action_line.decode(line)
    except RecursionError:  # msgspec's own limit of nesting, far above any action line's
        raise BulkRequestError(
            "x_content_parse_exception", f"[{number}:1] Malformed action/metadata line: nested too deeply"
        ) from None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BulkRequestError(
            "x_content_parse_exception", f"[{number}:1] Malformed action/metadata line: {exc}"
        ) from None
    if len(value) != 1 or next(iter(value)) not in ACTIONS:
        raise BulkRequestError(
            "illegal_argument_exception",
            f"Malformed action/metadata line [{number}], expected one of {list(ACTIONS)}",
        )
    action, raw = next(iter(value.items()))
    try:
        meta = _metadata.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise BulkRequestError(
            "illegal_argument_exception", f"Malformed action/metadata line [{number}]"
        ) from None
    known = METADATA if es_version >= 8 else METADATA | {"_type"}
    if unknown := next((name for name in meta if name not in known), None):
        raise BulkRequestError(
            "illegal_argument_exception",
            f"Action/metadata line [{number}] contains an unknown parameter [{unknown}]",
        )
    return action, meta


def _document_problem(action: str, source: bytes | None) -> ItemFailure | None:
    if action in ("update", "delete"):
        reason = f"the {action} action is not supported by this receiver (session exports only index)"
        return ItemFailure(400, "action_request_validation_exception", reason)
    try:
        value = msgspec.json.decode(source or b"")
    except NOT_JSON as exc:
        return ItemFailure(400, ERROR_TYPES[400], f"failed to parse: {not_json(source or b'', exc).message}")
    if not isinstance(value, dict):
        return ItemFailure(400, ERROR_TYPES[400], "failed to parse: the document is not a JSON object")
    return None


@dataclass
class FaultPlan:
    """Items made to fail on purpose: ``STATUS:ID_REGEX[:TIMES]`` rules (``--bulk-fail``).

    A rule fails every item whose ``_id`` matches, or only its first TIMES deliveries (a transient
    failure that a retry gets past, like 429).
    """

    rules: list[tuple[int, re.Pattern[str], int | None]] = field(default_factory=list)
    _seen: Counter[tuple[int, str]] = field(default_factory=Counter)

    @classmethod
    def parse(cls, specs: list[str]) -> FaultPlan:
        return cls([_parse_rule(spec) for spec in specs])

    def failure(self, op: Operation) -> ItemFailure | None:
        for number, (status, pattern, times) in enumerate(self.rules):
            if not pattern.search(op.doc_id):
                continue
            self._seen[(number, op.doc_id)] += 1
            if times is None or self._seen[(number, op.doc_id)] <= times:
                error_type = ERROR_TYPES.get(status, "exception" if status < 500 else "internal_server_error")
                return ItemFailure(
                    status, error_type, f"planted failure for [{op.doc_id}] (rule {number + 1})"
                )
        return None


def _parse_rule(spec: str) -> tuple[int, re.Pattern[str], int | None]:
    parts = spec.split(":", 2)
    try:
        status = int(parts[0])
        pattern = re.compile(parts[1] if len(parts) > 1 else "")
        times = int(parts[2]) if len(parts) > 2 else None
    except (ValueError, re.error) as exc:
        raise ValueError(f"bad --bulk-fail rule {spec!r} (STATUS:ID_REGEX[:TIMES]): {exc}") from None
    if not 400 <= status <= 599:
        raise ValueError(f"bad --bulk-fail rule {spec!r}: the status must be 4xx or 5xx")
    return status, pattern, times


def item_result(op: Operation, created: bool, seq_no: int, es_version: int) -> dict[str, Any]:
    result = _item_names(op, es_version) | {
        "_version": 1 if created else 2,
        "result": "created" if created else "updated",
        "_shards": {"total": 2, "successful": 1, "failed": 0},
        "_seq_no": seq_no,
        "_primary_term": 1,
        "status": 201 if created else 200,
    }
    return {op.action: result}


def failed_item(op: Operation, failure: ItemFailure, es_version: int) -> dict[str, Any]:
    result = _item_names(op, es_version) | {
        "status": failure.status,
        "error": {"type": failure.error_type, "reason": failure.reason},
    }
    if failure.in_shard:
        result["error"] |= {"index": op.index, "shard": "0", "index_uuid": index_uuid(op.index)}
    return {op.action: result}


def index_uuid(index: str) -> str:
    """A stable stand-in for the UUID Elasticsearch gives an index: 22 base64url characters."""
    digest = hashlib.blake2b(index.encode(), digest_size=16).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def type_warning(operations: Sequence[Operation], es_version: int) -> str | None:
    """The ``Warning`` header Elasticsearch 7 sends when a bulk names a type (in the path or an
    action line): its clients raise it as a deprecation warning."""
    if es_version != 7 or not any(op.doc_type for op in operations):
        return None
    return f'299 Elasticsearch-{ES_VERSION_NUMBERS[7]}-unknown "{TYPES_DEPRECATED}"'


def _item_names(op: Operation, es_version: int) -> dict[str, Any]:
    """What an item is about: Elasticsearch 7 names its type too, whatever became of the item."""
    if es_version < 8:
        return {"_index": op.index, "_type": op.doc_type or "_doc", "_id": op.doc_id}
    return {"_index": op.index, "_id": op.doc_id}


def bulk_response(items: list[dict[str, Any]], took_ms: int) -> dict[str, Any]:
    errors = any("error" in next(iter(item.values())) for item in items)
    return {"took": took_ms, "errors": errors, "items": items}
