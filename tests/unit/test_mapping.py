"""The Elasticsearch mapping: generated from the session model, covering both documentation samples.

Facts from the spec: §4.5 (the epoch-millisecond date fields) and §6 (the downloaded mapping's
dynamic template, the index creation body, the inferred field types).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import msgspec
import msgspec.inspect as mi
import orjson
import pytest

from sessionexport.model import mapping as mapping_module
from sessionexport.model import session as session_module
from sessionexport.model.mapping import index_creation, mapping, session_properties
from sessionexport.model.samples import MOBILE, WEB_SYNTHETIC, doc_sample
from sessionexport.model.session import EPOCH_MS_MIN, EpochMillis, UserSession

EPOCH_MS = {"type": "date", "format": "epoch_millis"}

# §4.5: confirmed as UTC-ms timestamps by the reference, and nothing else.
EPOCH_MS_FIELDS = (
    "startTime",
    "endTime",
    "replayStart",
    "replayEnd",
    "userActions.startTime",
    "userActions.endTime",
    "userActions.navigationStart",
    "events.startTime",
    "errors.startTime",
    "syntheticEvents.timestamp",
)

# §6 "Download mapping", exactly as Dynatrace shows it.
DYNATRACE_DYNAMIC_TEMPLATES = [
    {
        "string_fields": {
            "match": "*",
            "match_mapping_type": "string",
            "mapping": {"norms": "false", "type": "keyword"},
        }
    }
]

PROPERTY_CONTAINERS = ("stringProperties", "longProperties", "doubleProperties", "dateProperties")
SESSION_PARTS = ("userActions", "events", "errors", "syntheticEvents")

LONG_FIELDS = (
    "duration",
    "userActionCount",
    "totalErrorCount",
    "totalLicenseCreditCount",
    "matchingConversionGoalsCount",
    "screenHeight",
    "screenWidth",
    "clientTimeOffset",
    "numberOfRageClicks",
    "numberOfRageTaps",
    "partNumber",
    "longProperties.value",
    "userActions.duration",
    "userActions.speedIndex",
    "userActions.networkTime",
    "userActions.serverTime",
    "userActions.frontendTime",
    "userActions.documentInteractiveTime",
    "userActions.domCompleteTime",
    "userActions.domContentLoadedTime",
    "userActions.loadEventStart",
    "userActions.loadEventEnd",
    "userActions.requestStart",
    "userActions.responseStart",
    "userActions.responseEnd",
    "userActions.visuallyCompleteTime",
    "userActions.thirdPartyResources",
    "userActions.thirdPartyBusyTime",
    "userActions.cdnResources",
    "userActions.cdnBusyTime",
    "userActions.firstPartyResources",
    "userActions.firstPartyBusyTime",
    "userActions.userActionPropertyCount",
    "userActions.customErrorCount",
    "userActions.javascriptErrorCount",
    "userActions.requestErrorCount",
    "userActions.largestContentfulPaint",
    "userActions.firstInputDelay",
    "userActions.totalBlockingTime",
    "userActions.errorCount",
    "userActions.failedImages",
    "userActions.failedXhrRequests",
    "userActions.httpRequestsWithErrors",
    "userActions.longProperties.value",
    "syntheticEvents.sequenceNumber",
    "syntheticEvents.errorCode",
)
DOUBLE_FIELDS = (
    "userActions.cumulativeLayoutShift",
    "doubleProperties.value",
    "userActions.doubleProperties.value",
)
BOOLEAN_FIELDS = (
    "bounce",
    "newUser",
    "hasCrash",
    "hasError",
    "hasSessionReplay",
    "rootedOrJailbroken",
    "userActions.keyUserAction",
    "userActions.hasCrash",
)
ENUM_FIELDS = (
    "userType",
    "applicationType",
    "screenOrientation",
    "displayResolution",
    "reasonForNoSessionReplay",
    "reasonForNoSessionReplayMobile",
    "connectionType",
    "endReason",
    "userExperienceScore",
    "userActions.type",
    "userActions.apdexCategory",
    "events.type",
    "errors.type",
)
STRING_FIELDS = (
    "tenantId",
    "userSessionId",
    "internalUserId",
    "userId",
    "matchingConversionGoals",
    "ip",
    "continent",
    "country",
    "region",
    "city",
    "isp",
    "browserType",
    "browserFamily",
    "browserMajorVersion",
    "osFamily",
    "osVersion",
    "manufacturer",
    "device",
    "clientType",
    "browserMonitorId",
    "browserMonitorName",
    "crashGroupId",
    "appVersion",
    "carrier",
    "networkTechnology",
    "geolocationContinentName",
    "geolocationCountryName",
    "geolocationRegionName",
    "geolocationCityName",
    "osFamilyName",
    "osVersionName",
    "stringProperties.key",
    "stringProperties.value",
    "longProperties.key",
    "doubleProperties.key",
    "dateProperties.key",
    "userActions.name",
    "userActions.domain",
    "userActions.targetUrl",
    "userActions.application",
    "userActions.internalApplicationId",
    "userActions.internalKeyUserActionId",
    "userActions.matchingConversionGoals",
    "userActions.syntheticEvent",
    "userActions.syntheticEventId",
    "userActions.stringProperties.value",
    "events.name",
    "events.domain",
    "events.application",
    "events.internalApplicationId",
    "events.metadata",
    "events.page",
    "events.pageGroup",
    "events.pageReferrer",
    "events.pageReferrerGroup",
    "errors.name",
    "errors.domain",
    "errors.application",
    "errors.internalApplicationId",
    "syntheticEvents.name",
    "syntheticEvents.syntheticEventId",
    "syntheticEvents.type",
    "syntheticEvents.errorName",
)


# ---------------------------------------------------------------------------------------------
# helpers


def properties() -> dict[str, Any]:
    body = mapping()["mappings"]
    assert isinstance(body, dict)
    props = body["properties"]
    assert isinstance(props, dict)
    return props


def find(path: str, props: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The mapping entry of a dotted path (``userActions.startTime``), None when there is none.

    Every step but the last must be an ``object`` with its own ``properties``.
    """
    current = properties() if props is None else props
    *parents, leaf = path.split(".")
    for name in parents:
        parent = current.get(name)
        if parent is None or parent.get("type") != "object" or "properties" not in parent:
            return None
        current = parent["properties"]
    entry = current.get(leaf)
    assert entry is None or isinstance(entry, dict)
    return entry


def sample_document(name: str) -> dict[str, Any]:
    document = orjson.loads(doc_sample(name))
    assert isinstance(document, dict)
    return document


def sample_paths(value: Any, prefix: str = "") -> set[str]:
    """Every field path of a JSON value; lists are walked through (mapped by their items)."""
    paths: set[str] = set()
    if isinstance(value, dict):
        for key, child in value.items():
            path = f"{prefix}.{key}" if prefix else key
            paths.add(path)
            paths |= sample_paths(child, path)
    elif isinstance(value, list):
        for item in value:
            paths |= sample_paths(item, prefix)
    return paths


def sample_leaves(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(path, value) for every non-null scalar of a JSON value, lists walked through."""
    leaves: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        for key, child in value.items():
            leaves += sample_leaves(child, f"{prefix}.{key}" if prefix else key)
    elif isinstance(value, list):
        for item in value:
            leaves += sample_leaves(item, prefix)
    elif value is not None:
        leaves.append((prefix, value))
    return leaves


def mapping_leaves(props: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """Every mapping entry without sub-properties, by dotted path."""
    leaves: dict[str, dict[str, Any]] = {}
    for name, entry in props.items():
        path = f"{prefix}.{name}" if prefix else name
        if "properties" in entry:
            leaves |= mapping_leaves(entry["properties"], path)
        else:
            leaves[path] = entry
    return leaves


def _parts(kind: mi.Type) -> list[mi.Type]:
    """A type without None, Metadata kept."""
    if isinstance(kind, mi.UnionType):
        return [t for t in kind.types if not isinstance(t, mi.NoneType)]
    return [kind]


def _struct_inside(kind: mi.Type) -> mi.StructType | None:
    for part in _parts(kind):
        while isinstance(part, mi.Metadata | mi.ListType):
            part = part.type if isinstance(part, mi.Metadata) else part.item_type
        if isinstance(part, mi.StructType):
            return part
    return None


def model_fields(struct: mi.StructType, prefix: str = "") -> dict[str, mi.Type]:
    """Every field of the model, nested Structs walked, by dotted path."""
    fields: dict[str, mi.Type] = {}
    for field in struct.fields:
        path = f"{prefix}.{field.encode_name}" if prefix else field.encode_name
        fields[path] = field.type
        inner = _struct_inside(field.type)
        if inner is not None:
            fields |= model_fields(inner, path)
    return fields


def model_structs(struct: mi.StructType) -> set[type]:
    found: set[type] = {struct.cls}
    for field in struct.fields:
        inner = _struct_inside(field.type)
        if inner is not None:
            found |= model_structs(inner)
    return found


def is_epoch_ms(kind: mi.Type) -> bool:
    return any(
        isinstance(part, mi.Metadata) and (part.extra or {}).get("kind") == "epoch_ms"
        for part in _parts(kind)
    )


def user_session_info() -> mi.StructType:
    info = mi.type_info(UserSession)
    assert isinstance(info, mi.StructType)
    return info


MODEL_FIELDS = model_fields(user_session_info())


# ---------------------------------------------------------------------------------------------
# (a) every field of both documentation samples is mapped


@pytest.mark.parametrize("name", [MOBILE, WEB_SYNTHETIC])
def test_every_field_of_the_documentation_samples_is_mapped(name: str) -> None:
    paths = sample_paths(sample_document(name))
    unmapped = sorted(path for path in paths if find(path) is None)
    assert unmapped == []


def test_the_sample_walk_reaches_nested_and_legacy_fields() -> None:
    """The walk above is only as good as the paths it finds: nested lists and legacy fields included."""
    mobile = sample_paths(sample_document(MOBILE))
    web = sample_paths(sample_document(WEB_SYNTHETIC))
    assert {"stringTags", "geolocationCityName", "userActions.failedImages", "events.startTime"} <= mobile
    assert {"errors.type", "userActions.navigationStart", "osVersionName"} <= mobile
    assert {"syntheticEvents.timestamp", "userActions.cumulativeLayoutShift", "dateProperties"} <= web
    assert {"userActions.stringProperties", "userActions.matchingConversionGoals", "userActions.type"} <= web
    assert len(mobile) > 50 and len(web) > 70


def test_find_rejects_paths_the_mapping_does_not_have() -> None:
    assert find("noSuchField") is None
    assert find("userActions.noSuchField") is None
    assert find("tenantId.sub") is None  # a keyword has no sub-properties
    assert find("userActions.startTime") == EPOCH_MS


@pytest.mark.parametrize("name", [MOBILE, WEB_SYNTHETIC])
def test_every_sample_value_fits_its_mapped_type(name: str) -> None:
    """Elasticsearch would accept each value: no string in a long, no float in a boolean ..."""
    misfits = []
    for path, value in sample_leaves(sample_document(name)):
        entry = find(path)
        assert entry is not None, path
        es_type = entry["type"]
        if isinstance(value, bool):
            fits = es_type == "boolean"
        elif isinstance(value, int):
            fits = es_type in {"long", "double"} or entry == EPOCH_MS
        elif isinstance(value, float):
            fits = es_type == "double"
        else:
            fits = es_type == "keyword"
        if not fits:
            misfits.append((path, value, entry))
    assert misfits == []


# ---------------------------------------------------------------------------------------------
# (b) epoch-ms date fields


@pytest.mark.parametrize("path", EPOCH_MS_FIELDS)
def test_the_epoch_ms_fields_of_the_spec_are_epoch_millis_dates(path: str) -> None:
    assert path in MODEL_FIELDS  # every §4.5 field is in the model
    assert find(path) == EPOCH_MS


def test_exactly_the_epoch_ms_fields_of_the_spec_are_epoch_millis_dates() -> None:
    dates = sorted(path for path, entry in mapping_leaves(properties()).items() if entry == EPOCH_MS)
    assert dates == sorted(EPOCH_MS_FIELDS)


def test_the_models_epoch_ms_fields_are_those_of_the_spec_and_none_is_long() -> None:
    epoch_fields = sorted(path for path, kind in MODEL_FIELDS.items() if is_epoch_ms(kind))
    assert epoch_fields == sorted(EPOCH_MS_FIELDS)
    longs = {path for path, entry in mapping_leaves(properties()).items() if entry["type"] == "long"}
    assert longs.isdisjoint(EPOCH_MS_FIELDS)


@pytest.mark.parametrize("name", [MOBILE, WEB_SYNTHETIC])
def test_no_timestamp_value_of_the_samples_lands_in_a_long(name: str) -> None:
    """Converse, from the data: any integer in the epoch-ms range is a date, never a long."""
    timestamps = [
        (path, value)
        for path, value in sample_leaves(sample_document(name))
        if isinstance(value, int) and not isinstance(value, bool) and value >= EPOCH_MS_MIN
    ]
    assert timestamps  # both samples have them
    assert [(path, find(path)) for path, _ in timestamps if find(path) != EPOCH_MS] == []


def test_date_properties_accept_iso_text_or_epoch_millis() -> None:
    for prefix in ("", "userActions."):
        entry = find(f"{prefix}dateProperties.value")
        assert entry is not None
        assert entry["type"] == "date"
        assert set(entry["format"].split("||")) == {"strict_date_optional_time", "epoch_millis"}


# ---------------------------------------------------------------------------------------------
# (c) the other field types


@pytest.mark.parametrize("path", LONG_FIELDS)
def test_counts_and_durations_are_long(path: str) -> None:
    assert find(path) == {"type": "long"}


@pytest.mark.parametrize("path", DOUBLE_FIELDS)
def test_ratios_are_double(path: str) -> None:
    assert find(path) == {"type": "double"}


@pytest.mark.parametrize("path", BOOLEAN_FIELDS)
def test_booleans_are_boolean(path: str) -> None:
    assert find(path) == {"type": "boolean"}


@pytest.mark.parametrize("path", ENUM_FIELDS + STRING_FIELDS)
def test_enums_and_strings_are_keyword(path: str) -> None:
    assert find(path) == {"type": "keyword"}


@pytest.mark.parametrize("path", ENUM_FIELDS)
def test_the_enum_fields_are_enums_in_the_model(path: str) -> None:
    """The enum list above is the model's (a renamed or retyped enum would be noticed)."""
    assert any(isinstance(part, mi.EnumType) for part in _parts(MODEL_FIELDS[path]))


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("userActions", {"name", "type", "startTime", "navigationStart", "cumulativeLayoutShift"}),
        ("events", {"type", "name", "startTime", "metadata", "page", "pageReferrerGroup"}),
        ("errors", {"type", "name", "domain", "startTime", "application", "internalApplicationId"}),
        ("syntheticEvents", {"name", "syntheticEventId", "sequenceNumber", "timestamp", "type"}),
    ],
)
def test_the_parts_of_a_session_are_objects_with_their_fields(path: str, fields: set[str]) -> None:
    entry = find(path)
    assert entry is not None
    assert entry["type"] == "object"
    assert fields <= set(entry["properties"])


def test_errors_have_no_event_only_fields() -> None:
    error = find("errors")
    assert error is not None
    assert {"metadata", "page", "pageGroup"}.isdisjoint(error["properties"])


@pytest.mark.parametrize("prefix", ["", "userActions."])
@pytest.mark.parametrize("container", PROPERTY_CONTAINERS)
def test_custom_property_containers_are_objects_of_key_and_value(prefix: str, container: str) -> None:
    entry = find(prefix + container)
    assert entry is not None
    assert entry["type"] == "object"
    assert set(entry["properties"]) == {"key", "value"}
    assert entry["properties"]["key"] == {"type": "keyword"}


@pytest.mark.parametrize("legacy", ["stringTags", "numTags", "dateTags"])
def test_legacy_tag_maps_are_free_form_objects(legacy: str) -> None:
    assert find(legacy) == {"type": "object"}


def test_every_mapped_leaf_has_a_known_type() -> None:
    allowed = [{"type": t} for t in ("keyword", "long", "double", "boolean", "object")]
    allowed += [EPOCH_MS, {"type": "date", "format": "strict_date_optional_time||epoch_millis"}]
    odd = {path: entry for path, entry in mapping_leaves(properties()).items() if entry not in allowed}
    assert odd == {}


def test_objects_with_properties_carry_nothing_else() -> None:
    def check(props: dict[str, Any]) -> None:
        for entry in props.values():
            if "properties" in entry:
                assert set(entry) == {"type", "properties"}
                assert entry["type"] == "object"
                check(entry["properties"])

    check(properties())


# ---------------------------------------------------------------------------------------------
# (d) the dynamic template


def test_the_dynamic_template_is_exactly_dynatraces() -> None:
    assert mapping()["mappings"]["dynamic_templates"] == DYNATRACE_DYNAMIC_TEMPLATES


def test_the_dynamic_template_turns_norms_off_with_the_string_false() -> None:
    template = mapping()["mappings"]["dynamic_templates"][0]["string_fields"]
    assert template["mapping"]["norms"] == "false"  # as Dynatrace writes it: text, not a boolean
    assert orjson.dumps(template["mapping"]) == b'{"norms":"false","type":"keyword"}'


# ---------------------------------------------------------------------------------------------
# (e) document type wrapping and index creation


def test_without_a_document_type_the_body_is_not_wrapped() -> None:
    unwrapped = mapping(None)
    assert list(unwrapped) == ["mappings"]
    assert set(unwrapped["mappings"]) == {"dynamic_templates", "properties"}
    assert mapping() == unwrapped


def test_a_document_type_wraps_the_body() -> None:
    wrapped = mapping("_doc")
    assert list(wrapped) == ["mappings"]
    assert list(wrapped["mappings"]) == ["_doc"]
    assert wrapped["mappings"]["_doc"] == mapping(None)["mappings"]


def test_any_document_type_name_is_used_as_given() -> None:
    assert list(mapping("session")["mappings"]) == ["session"]


def test_an_empty_document_type_means_none() -> None:
    """§7: the type is omitted when docType is empty or null (Elasticsearch 8)."""
    assert mapping("") == mapping(None)


def test_index_creation_has_dynatraces_settings_and_the_same_mappings() -> None:
    body = index_creation()
    assert set(body) == {"settings", "mappings"}
    assert body["settings"] == {"index": {"number_of_shards": 3, "number_of_replicas": 1}}
    assert body["mappings"] == mapping()["mappings"]
    assert "_doc" not in body["mappings"]


def test_index_creation_with_a_document_type_wraps_only_the_mappings() -> None:
    body = index_creation("session")
    assert body["settings"] == {"index": {"number_of_shards": 3, "number_of_replicas": 1}}
    assert body["mappings"] == {"session": mapping()["mappings"]}


def test_index_creation_for_doc_is_typeless() -> None:
    """Elasticsearch 7 and 8 refuse a mapping nested under ``_doc`` when an index is created
    ("The mapping definition cannot be nested under a type [_doc] unless include_type_name is
    set to true"); a typeless index's documents are of type ``_doc``, so bulks naming it work."""
    assert index_creation("_doc") == index_creation()


def test_session_properties_are_the_mappings_properties() -> None:
    assert session_properties() == mapping()["mappings"]["properties"]


# ---------------------------------------------------------------------------------------------
# (f) generated from the model, not hand-kept


def test_the_top_level_properties_are_exactly_the_session_fields() -> None:
    assert set(properties()) == {field.encode_name for field in user_session_info().fields}


def test_every_struct_of_the_model_is_reached() -> None:
    public = {
        value
        for value in vars(session_module).values()
        if isinstance(value, type)
        and issubclass(value, msgspec.Struct)
        and value.__module__ == session_module.__name__
        and not value.__name__.startswith("_")
    }
    assert model_structs(user_session_info()) == public


def test_every_field_of_every_model_struct_is_mapped() -> None:
    assert len(MODEL_FIELDS) > 150  # the walk went into the nested structs
    unmapped = sorted(path for path in MODEL_FIELDS if find(path) is None)
    assert unmapped == []


def test_every_struct_field_maps_to_an_object_with_exactly_its_fields() -> None:
    for path, kind in MODEL_FIELDS.items():
        inner = _struct_inside(kind)
        if inner is None:
            continue
        entry = find(path)
        assert entry is not None, path
        assert entry["type"] == "object", path
        assert set(entry["properties"]) == {f.encode_name for f in inner.fields}, path


_SCALAR_TYPES: list[tuple[type[mi.Type], str]] = [
    (mi.EnumType, "keyword"),
    (mi.StrType, "keyword"),
    (mi.BoolType, "boolean"),
    (mi.IntType, "long"),
    (mi.FloatType, "double"),
]


def _es_type_for(kind: mi.Type) -> str | None:
    """The type a scalar model field calls for (None for structs, unions and maps)."""
    parts = _parts(kind)
    if len(parts) != 1:
        return None
    part = parts[0]
    if is_epoch_ms(part):
        return "date"
    while isinstance(part, mi.Metadata | mi.ListType):
        part = part.type if isinstance(part, mi.Metadata) else part.item_type
    for cls, es_type in _SCALAR_TYPES:
        if isinstance(part, cls):
            return es_type
    return None


def test_every_scalar_model_field_has_the_type_its_model_type_calls_for() -> None:
    checked = 0
    wrong = {}
    for path, kind in MODEL_FIELDS.items():
        expected = _es_type_for(kind)
        if expected is None:
            continue
        checked += 1
        entry = find(path)
        assert entry is not None, path
        if entry["type"] != expected:
            wrong[path] = (expected, entry)
    assert wrong == {}
    assert checked > 140


class _AddedPart(msgspec.Struct, kw_only=True):
    note: str | None = None
    at: EpochMillis | None = None
    ratio: float | None = None


class _SessionWithAddedFields(UserSession, kw_only=True):
    addedCount: int | None = None
    addedFlag: bool | None = None
    addedParts: list[_AddedPart] | None = None


class _SessionWithUnmappableField(UserSession, kw_only=True):
    seenAt: datetime.datetime | None = None


def test_a_field_added_to_the_model_is_mapped(monkeypatch: pytest.MonkeyPatch) -> None:
    assert find("addedCount") is None
    monkeypatch.setattr(mapping_module, "UserSession", _SessionWithAddedFields)
    props = mapping()["mappings"]["properties"]
    assert find("addedCount", props) == {"type": "long"}
    assert find("addedFlag", props) == {"type": "boolean"}
    assert find("addedParts", props) == {
        "type": "object",
        "properties": {"note": {"type": "keyword"}, "at": EPOCH_MS, "ratio": {"type": "double"}},
    }
    assert find("startTime", props) == EPOCH_MS  # the inherited fields stay mapped


def test_a_model_field_without_an_elasticsearch_type_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mapping_module, "UserSession", _SessionWithUnmappableField)
    with pytest.raises(TypeError, match=r"no Elasticsearch type for .*model/mapping\.py"):
        mapping()


# ---------------------------------------------------------------------------------------------
# (g) JSON


@pytest.mark.parametrize("build", [mapping, index_creation], ids=["mapping", "index"])
@pytest.mark.parametrize("doc_type", [None, "_doc"])
def test_the_mapping_is_json_serialisable_and_round_trips(
    build: Callable[[str | None], dict[str, Any]], doc_type: str | None
) -> None:
    document = build(doc_type)
    encoded = orjson.dumps(document)
    assert orjson.loads(encoded) == document  # a tuple or an enum would not come back equal


def test_repeated_calls_give_equal_mappings() -> None:
    assert orjson.dumps(mapping()) == orjson.dumps(mapping())
