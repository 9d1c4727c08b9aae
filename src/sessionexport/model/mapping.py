"""The Elasticsearch mapping of exported sessions, generated from the session model. No I/O.

Every field of the model gets its type: strings and enums ``keyword``; epoch-millisecond times
(``EpochMillis``) ``date`` with ``epoch_millis``; other integers (counts, durations) ``long``;
ratios and other floats ``double``; booleans ``boolean``; lists and parts of a session (user
actions, events, errors, properties) ``object`` with their own properties. Any string field the
model does not know is mapped by the dynamic template Dynatrace's download has: ``keyword``
without norms. Nothing here is a hand-kept copy: a field added to the model is mapped.
"""

from __future__ import annotations

import copy
from typing import Any

import msgspec.inspect as mi

from sessionexport.model.session import UserSession

DYNAMIC_TEMPLATES = [
    {
        "string_fields": {
            "match": "*",
            "match_mapping_type": "string",
            "mapping": {"norms": "false", "type": "keyword"},
        }
    }
]
INDEX_SETTINGS = {"index": {"number_of_shards": 3, "number_of_replicas": 1}}
# A date property's value is ISO-8601 text or epoch milliseconds (both are seen in real exports).
_DATE_TEXT_OR_MS = {"type": "date", "format": "strict_date_optional_time||epoch_millis"}


def session_properties() -> dict[str, Any]:
    info = mi.type_info(UserSession)
    assert isinstance(info, mi.StructType)
    return _properties(info)


def mapping(doc_type: str | None = None) -> dict[str, Any]:
    """The download: ``{"mappings": ...}``, wrapped in the type name when a document type is set
    (Elasticsearch 6, or 7 with ``include_type_name=true``)."""
    body = {"dynamic_templates": copy.deepcopy(DYNAMIC_TEMPLATES), "properties": session_properties()}
    return {"mappings": {doc_type: body} if doc_type else body}


def index_creation(doc_type: str | None = None) -> dict[str, Any]:
    """The body of ``PUT /<index>`` that creates the index with this mapping: typeless for
    ``_doc`` (the type Dynatrace recommends for Elasticsearch 7, whose typeless indexes hold
    ``_doc``: 7 and 8 refuse a body nested under it, 6.7+ takes it with
    ``include_type_name=false``); nested under any other type (Elasticsearch 6, or 7 with
    ``include_type_name=true``)."""
    return {"settings": copy.deepcopy(INDEX_SETTINGS), **mapping(None if doc_type == TYPELESS else doc_type)}


TYPELESS = "_doc"  # the type of every document of an index created without one


def _properties(struct: mi.StructType) -> dict[str, Any]:
    return {field.encode_name: _field_mapping(field.type) for field in struct.fields}


def _field_mapping(kind: mi.Type) -> dict[str, Any]:
    kind = _without_none(kind)
    if isinstance(kind, mi.Metadata):
        if (kind.extra or {}).get("kind") == "epoch_ms":
            return {"type": "date", "format": "epoch_millis"}
        return _field_mapping(kind.type)
    if isinstance(kind, mi.ListType):
        return _field_mapping(kind.item_type)  # Elasticsearch maps a list by its items
    if isinstance(kind, mi.StructType):
        return {"type": "object", "properties": _properties(kind)}
    if isinstance(kind, mi.UnionType):
        return dict(_DATE_TEXT_OR_MS)  # text or epoch ms: the only union of the model (date properties)
    return _scalar(kind)


def _scalar(kind: mi.Type) -> dict[str, Any]:
    if isinstance(kind, mi.StrType | mi.EnumType | mi.LiteralType):
        return {"type": "keyword"}
    if isinstance(kind, mi.BoolType):
        return {"type": "boolean"}
    if isinstance(kind, mi.IntType):
        return {"type": "long"}
    if isinstance(kind, mi.FloatType):
        return {"type": "double"}
    if isinstance(kind, mi.DictType | mi.AnyType):
        return {"type": "object"}  # free-form (legacy tag maps): fields mapped as they come
    raise TypeError(f"no Elasticsearch type for {kind!r}: map it in model/mapping.py")


def _without_none(kind: mi.Type) -> mi.Type:
    if isinstance(kind, mi.UnionType):
        rest = [t for t in kind.types if not isinstance(t, mi.NoneType)]
        if len(rest) == 1:
            return rest[0]
        return mi.UnionType(tuple(rest))
    return kind
