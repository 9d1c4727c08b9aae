"""Checking a settings value against its schema definition (``schemas``), with precise violations.

The result is the value as it will be stored: defaults filled in, enum values in their documented
spelling (matched case-insensitively, since older tools send ``Basic`` for ``basic``), and
properties whose precondition does not hold dropped. No I/O: what the custom validators need to
know about the world (existing management zones, whether http to loopback is allowed) comes in
a ``Context``.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from sessionexport.export.tuning import TuningError, parse_tuning
from sessionexport.export.zones import regex_problem
from sessionexport.media_types import NDJSON, media_type
from sessionexport.model.elasticsearch_names import index_name_problem
from sessionexport.settings.schemas import EXPORT_SCHEMA


@dataclass(frozen=True, slots=True)
class Violation:
    path: str
    message: str


@dataclass(frozen=True)
class Context:
    zone_ids: frozenset[str] = frozenset()
    allow_http_loopback: bool = False


@dataclass
class _Walk:
    schema: dict[str, Any]
    context: Context
    violations: list[Violation] = field(default_factory=list)

    def add(self, path: str, message: str) -> None:
        self.violations.append(Violation(path, message))


def validate_value(
    schema: dict[str, Any], value: Any, context: Context
) -> tuple[dict[str, Any], list[Violation]]:
    """The normalized value and every violation (an empty list means valid)."""
    walk = _Walk(schema, context)
    normalized = _object(walk, schema["properties"], value, "")
    if not walk.violations:
        for check in _SCHEMA_CHECKS.get(schema["schemaId"], ()):
            check(walk, normalized)
    return normalized, walk.violations


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _object(walk: _Walk, properties: dict[str, Any], value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        walk.add(path, f"expected an object, got {_kind(value)}")
        return {}
    for name in value:
        if name not in properties:
            walk.add(_join(path, name), f"unknown property; known: {', '.join(properties)}")
    result: dict[str, Any] = {}
    for name, prop in properties.items():
        precondition = prop.get("precondition")
        if precondition and not _holds(precondition, result):
            continue  # not applicable: not validated, not stored
        prop_path = _join(path, name)
        given = value.get(name)
        if given is None or _blank_optional_text(prop, given):
            result[name] = _absent(walk, prop, prop_path, name in value)
        else:
            result[name] = _typed(walk, prop, prop["type"], given, prop_path, result)
    return result


def _blank_optional_text(prop: dict[str, Any], given: Any) -> bool:
    """An empty or all-space optional text means "not set": Dynatrace's tools send ``""`` for an
    unset ``docType`` or ``customConfiguration``, and a blank ``_type`` would break every bulk."""
    return bool(prop.get("nullable")) and isinstance(given, str) and not given.strip()


def _absent(walk: _Walk, prop: dict[str, Any], path: str, explicit_null: bool) -> Any:
    kind = prop["type"]
    if "default" in prop:
        return prop["default"]
    if prop.get("nullable"):
        return None
    if isinstance(kind, dict) and kind["$ref"].startswith("#/types/"):
        # An omitted object is its defaults; what it cannot default is reported inside it.
        return _object(walk, _type_properties(walk.schema, kind), {}, path)
    walk.add(path, "must not be null" if explicit_null else "required property is missing")
    return None


def _typed(
    walk: _Walk, prop: dict[str, Any], kind: Any, given: Any, path: str, siblings: dict[str, Any]
) -> Any:
    if isinstance(kind, dict):
        section, _, name = kind["$ref"].removeprefix("#/").partition("/")
        if section == "types":
            return _object(walk, walk.schema["types"][name]["properties"], given, path)
        return _enum_value(walk, walk.schema["enums"][name], given, path)
    if kind == "boolean":
        if not isinstance(given, bool):
            walk.add(path, f"expected a boolean, got {_kind(given)}")
        return given
    if kind == "integer":
        if not isinstance(given, int) or isinstance(given, bool):
            walk.add(path, f"expected an integer, got {_kind(given)}")
        return given
    if kind == "list":
        return _list(walk, prop, given, path, siblings)
    if kind in ("text", "secret", "setting"):
        if not isinstance(given, str):
            walk.add(path, f"expected a string, got {_kind(given)}")
            return given
        if not _is_unicode(given):
            walk.add(path, "contains an unpaired surrogate escape (not valid Unicode text)")
            return given
        if _is_url(prop):  # stored as the exporter uses it, not shown and compared as typed
            given = given.strip()
        _constraints(walk, prop, given, path, siblings)
        return given
    raise AssertionError(f"schema property type {kind!r} has no validator")


def _list(walk: _Walk, prop: dict[str, Any], given: Any, path: str, siblings: dict[str, Any]) -> list[Any]:
    if not isinstance(given, list):
        walk.add(path, f"expected a list, got {_kind(given)}")
        return []
    low, high = prop.get("minObjects", 0), prop.get("maxObjects", 1_000_000)
    if not low <= len(given) <= high:
        walk.add(path, f"must hold {low} to {high} item(s), got {len(given)}")
    item_prop = prop["items"]
    return [
        _typed(walk, item_prop, item_prop["type"], item, f"{path}[{i}]", siblings)
        for i, item in enumerate(given)
    ]


def _enum_value(walk: _Walk, enum: dict[str, Any], given: Any, path: str) -> Any:
    allowed = [item["value"] for item in enum["items"]]
    if isinstance(given, str):
        for value in allowed:
            if value.lower() == given.lower():
                return value
    shown = f"invalid value {given!r}" if isinstance(given, str) else f"expected a string, got {_kind(given)}"
    walk.add(path, f"{shown}; expected one of: {', '.join(allowed)}")
    return given


def _constraints(walk: _Walk, prop: dict[str, Any], given: str, path: str, siblings: dict[str, Any]) -> None:
    for constraint in prop.get("constraints", ()):
        kind = constraint["type"]
        if kind == "NOT_BLANK" and not given.strip():
            walk.add(path, "must not be blank")
            return
        if kind == "LENGTH" and not constraint.get("minLength", 0) <= len(given) <= constraint["maxLength"]:
            walk.add(path, f"length must be {constraint.get('minLength', 0)} to {constraint['maxLength']}")
        if kind == "CUSTOM_VALIDATOR_REF":
            message = _CUSTOM[constraint["customValidatorId"]](walk.context, given, siblings)
            if message:
                walk.add(path, message)


def _is_url(prop: dict[str, Any]) -> bool:
    return any(c.get("customValidatorId") == "https-url" for c in prop.get("constraints", ()))


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _holds(precondition: dict[str, Any], siblings: dict[str, Any]) -> bool:
    kind = precondition["type"]
    if kind == "EQUALS":
        return bool(siblings.get(precondition["property"]) == precondition["expectedValue"])
    if kind == "AND":
        return all(_holds(p, siblings) for p in precondition["preconditions"])
    raise AssertionError(f"precondition type {kind!r} has no evaluator")


def _type_properties(schema: dict[str, Any], kind: dict[str, str]) -> dict[str, Any]:
    properties: dict[str, Any] = schema["types"][kind["$ref"].removeprefix("#/types/")]["properties"]
    return properties


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


# -- custom validators: (context, value, siblings) -> message or None ------------------------------


def check_https_url(context: Context, url: str, _: dict[str, Any] | None = None) -> str | None:
    """Only https (certificates verified); http only to loopback, and only when the server allows it."""
    url = url.strip()
    if any(unicodedata.category(c) == "Cc" for c in url):
        # urlsplit drops tabs and newlines silently; the HTTP client would refuse the URL later
        return "must not contain control characters (tab, newline, DEL...)"
    try:
        parts = urlsplit(url)
        host, _port = parts.hostname, parts.port  # port: raises ValueError when out of range
        client_host = httpx.URL(url).host  # as the exporter's client reads it (IDNA must decode)
    except (ValueError, httpx.InvalidURL) as exc:
        return f"is not a valid URL: {exc}"
    if parts.scheme not in ("https", "http") or not host or not client_host:
        return "must be an absolute https:// URL"
    if problem := _host_problem(httpx.URL(url).raw_host.decode("ascii")):
        return problem
    if parts.username is not None or parts.password is not None:
        # they would be kept and shown in plain text: credentials belong in the authentication fields
        return "must not contain credentials (user:password@): use the authentication settings"
    if parts.scheme == "http":
        if context.allow_http_loopback and is_loopback(host):
            return None
        return "must use https: for security reasons only HTTPS endpoints are allowed"
    return None


_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")  # of a DNS name (_ too: internal names have it)


def _host_problem(host: str) -> str | None:
    """A host that no connection could reach (a space, an empty label) is refused when saved,
    not found out by every bulk failing later. ``host``: as sent (IDNA-encoded, no brackets)."""
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    name = host.removesuffix(".")  # a fully qualified name may end with its root
    if len(name) <= 253 and all(_LABEL.fullmatch(label) for label in name.split(".")):
        return None
    return f"has no valid host name ({host!r}): letters, digits and - in dot-separated labels"


# A media type (RFC 9110 §8.3.1): type/subtype and parameters of token characters (_NAME); it is
# sent as a header, so nothing else.
_NAME = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"
_QUOTED = r'"[\t\x20\x21\x23-\x5b\x5d-\x7e]*"'  # printable ASCII but " and \
_MEDIA_TYPE = re.compile(rf"{_NAME}/{_NAME}([ \t]*;[ \t]*{_NAME}=({_NAME}|{_QUOTED}))*")


MEDIA_TYPE_WANTED = "must be a media type such as application/json or application/x-ndjson"


def is_media_type(value: str) -> bool:
    """A ``contentType`` an export may be saved with (as stored and sent: no stripping)."""
    return bool(_MEDIA_TYPE.fullmatch(value))


def _check_media_type(_: Context, value: str, __: dict[str, Any]) -> str | None:
    return None if is_media_type(value) else MEDIA_TYPE_WANTED


def is_loopback(host: str) -> bool:
    """localhost, or a loopback address (an IPv6 one with or without its brackets)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_basic_user_name(_: Context, name: str, __: dict[str, Any]) -> str | None:
    # RFC 7617: a receiver splits "user:password" at the first colon.
    return (
        "must not contain ':' (Basic authentication ends the user name at the first one)"
        if ":" in name
        else None
    )


def _check_index_name(_: Context, name: str, __: dict[str, Any]) -> str | None:
    return index_name_problem(name)


def _check_zone_exists(context: Context, zone_id: str, _: dict[str, Any]) -> str | None:
    if zone_id not in context.zone_ids:
        return f"no management zone with objectId {zone_id!r} (schema builtin:management-zones)"
    return None


def _check_custom_configuration(_: Context, text: str, __: dict[str, Any]) -> str | None:
    try:
        parse_tuning(text)
    except TuningError as exc:
        return str(exc)
    return None


def _check_zone_rule(_: Context, value: str, rule: dict[str, Any]) -> str | None:
    return regex_problem(value) if rule.get("operator") == "REGEX" else None


_CUSTOM: dict[str, Callable[[Context, str, dict[str, Any]], str | None]] = {
    "https-url": check_https_url,
    "media-type": _check_media_type,
    "basic-user-name": _check_basic_user_name,
    "elasticsearch-index-name": _check_index_name,
    "management-zone-exists": _check_zone_exists,
    "custom-configuration": _check_custom_configuration,
    "zone-rule": _check_zone_rule,
}


def _check_elasticsearch_direct(walk: _Walk, value: dict[str, Any]) -> None:
    """Elasticsearch's _bulk API takes only NDJSON, by POST."""
    if not value.get("sendDirect", {}).get("active"):
        return
    endpoint = value.get("endpointDefinition", {})
    if media_type(str(endpoint.get("contentType", ""))) != NDJSON:
        walk.add("endpointDefinition.contentType", f"must be {NDJSON} when sending directly to Elasticsearch")
    if endpoint.get("usePost") is not True:
        walk.add(
            "endpointDefinition.usePost",
            "must be true when sending directly to Elasticsearch (_bulk takes POST)",
        )
    url = str(endpoint.get("endpointUrl", "")).strip()
    if url and not urlsplit(url).path.rstrip("/").endswith("/_bulk"):
        walk.add(
            "endpointDefinition.endpointUrl",
            "must be the cluster's bulk API when sending directly to Elasticsearch,"
            " e.g. https://es.example.com:9200/_bulk (or /<index>/_bulk)",
        )
    elif url and "filter_path" in (
        name for name, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True)
    ):
        walk.add(
            "endpointDefinition.endpointUrl",
            "must not set filter_path: each item's answer tells which sessions were indexed",
        )


_SCHEMA_CHECKS: dict[str, tuple[Callable[[_Walk, dict[str, Any]], None], ...]] = {
    EXPORT_SCHEMA: (_check_elasticsearch_direct,),
}
