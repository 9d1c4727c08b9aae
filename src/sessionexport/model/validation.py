"""Decoding a session document, and explaining precisely why one is rejected.

``decode_session`` is the fast path: one typed msgspec decode. msgspec stops at the first
problem, but a sender fixing its data wants all of them, so a rejected document is walked once
more, against the same model (via ``msgspec.inspect``), to list every problem with its field
path. Nothing here does I/O.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass
from typing import Any

import msgspec
import msgspec.inspect as mi
import orjson

from sessionexport.model.elasticsearch_names import ids_problem
from sessionexport.model.session import EPOCH_MS_MIN, ISO_DATE_TIME, UserSession, date_problem


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason a document was refused. ``path`` is a JSON path such as ``userActions[0].type``."""

    path: str
    message: str


class InvalidSession(ValueError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.path or '(document)'}: {p.message}" for p in problems))
        self.problems = problems


_decoder = msgspec.json.Decoder(UserSession)

# What msgspec raises for bytes that are not JSON at all: besides DecodeError, a string that is
# not UTF-8 and nesting deeper than the interpreter's recursion limit escape as these.
NOT_JSON = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


def decode_session(raw: bytes) -> UserSession:
    """Decode one session document; raise InvalidSession listing every problem."""
    try:
        session = _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise InvalidSession(find_problems(raw) or [_from_msgspec(exc)]) from None
    except NOT_JSON as exc:
        raise InvalidSession([not_json(raw, exc)]) from None
    if nul := _nul_problems(session):
        raise InvalidSession(nul)
    if too_long := ids_problem(session.tenantId, session.userSessionId):
        raise InvalidSession([Problem("userSessionId", too_long)])
    if bad := not_utf8(raw):  # the typed decode skips unknown fields unread: their bytes too
        raise InvalidSession([bad])
    return session


def not_utf8(raw: bytes) -> Problem | None:
    """The first byte of ``raw`` that is not UTF-8 (stored as sent, the document would make every
    page it is listed on, and every body it is exported in, invalid), or None."""
    if raw.isascii():  # most documents: no decoding needed to know
        return None
    try:
        raw.decode()
    except UnicodeDecodeError as bad:
        return Problem("", f"not UTF-8: byte 0x{raw[bad.start]:02x} at offset {bad.start} ({bad.reason})")
    return None


# Kept as text columns beside the body (identity, filters; the country column falls back to
# geolocationCountryName): NUL is refused by databases such as PostgreSQL, and is never a real
# value there.
_INDEXED_TEXT = ("tenantId", "userSessionId", "userId", "country", "geolocationCountryName")


_NUL = "must not contain the NUL character (\\u0000)"


def _nul_problems(session: UserSession) -> list[Problem]:
    return [Problem(name, _NUL) for name in _INDEXED_TEXT if "\x00" in (getattr(session, name) or "")]


def nul_problems(fields: dict[str, Any], names: tuple[str, ...] = _INDEXED_TEXT) -> list[Problem]:
    """The ``names`` among ``fields`` whose text holds NUL."""
    return [
        Problem(name, _NUL)
        for name in names
        if "\x00" in (v if isinstance(v := fields.get(name), str) else "")
    ]


def find_problems(raw: bytes) -> list[Problem]:
    """Every problem of a document against the session model (empty when it is valid)."""
    try:
        value = decode_any(raw)
    except NOT_JSON as exc:
        return [not_json(raw, exc)]
    problems = problems_against(value, _session_type())
    if not problems and isinstance(value, dict):
        problems = nul_problems(value)
        if not problems and (too_long := ids_problem(value["tenantId"], value["userSessionId"])):
            problems = [Problem("userSessionId", too_long)]
    return problems


def decode_any(raw: bytes) -> Any:
    """A JSON document as Python values, for walking it on an error path: a number no double holds
    (``1e999``: valid JSON, which msgspec and orjson refuse to read) becomes an infinite float,
    which the walk refuses where the model wants a number and ignores in a field of the sender's
    own (the typed decode skips those unread). Raises one of NOT_JSON for what is not JSON."""
    try:
        return msgspec.json.decode(raw)
    except msgspec.ValidationError:  # JSON, with a number out of range (not a type: none was asked)
        try:
            return json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise msgspec.DecodeError(str(exc)) from None


def problems_against(value: Any, t: mi.Type) -> list[Problem]:
    """Every way a decoded JSON ``value`` fails the model type ``t`` (from ``msgspec.inspect``)."""
    problems: list[Problem] = []
    _check(value, t, "", problems)
    return problems


def compact(raw: bytes) -> bytes:
    """The document without insignificant whitespace; string escapes are kept byte for byte."""
    return msgspec.json.format(raw, indent=-1)


def single_line(raw: bytes) -> bytes:
    """The document as one line: the sender's bytes when they already are (the usual case, and
    the most faithful), else compacted. One line per session is what every export format needs."""
    if b"\n" in raw or b"\r" in raw:
        return compact(raw)
    return raw


@functools.cache
def _session_type() -> mi.Type:
    return mi.type_info(UserSession)


def not_json(raw: bytes, exc: BaseException) -> Problem:
    """Why ``raw`` is not a JSON document (``exc``: what msgspec raised): the first byte that is
    not UTF-8, or orjson's account of the fault, which names its line and column (msgspec's names a
    byte at best, and calls a lone surrogate "truncated"). Only on the error path: it reads the
    document again."""
    if bad := not_utf8(raw):
        return bad
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError as fault:
        # Where in the document: its line is the body's line (or item) already, so only the column
        # is told, unless the document itself spans lines.
        where = (
            f"column {fault.colno}"
            if fault.lineno == 1
            else f"line {fault.lineno} column {fault.colno} of it"
        )
        return Problem("", f"invalid JSON: {fault.msg} at {where}")
    if isinstance(exc, RecursionError):
        return Problem("", "invalid JSON: nested too deeply to be read")
    return Problem("", f"invalid JSON: {exc}")


def _from_msgspec(exc: msgspec.ValidationError) -> Problem:
    message, _, where = str(exc).partition(" - at `$")
    return Problem(where.rstrip("`").lstrip("."), message)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def json_kind(value: Any) -> str:
    """What a decoded JSON value is, in JSON's words ("object", "array", "integer" ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _describe(t: mi.Type) -> str:
    if isinstance(t, mi.IntType):
        return "integer"
    if isinstance(t, mi.FloatType):
        return "number"
    if isinstance(t, mi.StrType | mi.EnumType):
        return "string"
    if isinstance(t, mi.BoolType):
        return "boolean"
    if isinstance(t, mi.ListType):
        return "array"
    if isinstance(t, mi.StructType | mi.DictType):
        return "object"
    if isinstance(t, mi.UnionType):
        return " or ".join(_describe(u) for u in t.types)
    if isinstance(t, mi.Metadata):
        return _describe(t.type)
    if isinstance(t, mi.NoneType):
        return "null"
    return "any value"


def _check(value: Any, t: mi.Type, path: str, out: list[Problem]) -> None:
    """Append to ``out`` every way ``value`` fails type ``t``."""
    if isinstance(t, mi.AnyType):
        _check_numbers(value, path, out)
        return
    if isinstance(t, mi.Metadata):
        _check(value, t.type, path, out)
        return
    if isinstance(t, mi.UnionType):
        _check_union(value, t, path, out)
    elif isinstance(t, mi.StructType):
        _check_struct(value, t, path, out)
    elif isinstance(t, mi.ListType):
        if not isinstance(value, list):
            out.append(_wrong_type(value, t, path))
            return
        for index, item in enumerate(value):
            _check(item, t.item_type, f"{path}[{index}]", out)
    elif isinstance(t, mi.DictType):
        if not isinstance(value, dict):
            out.append(_wrong_type(value, t, path))
            return
        for key, item in value.items():
            _check(item, t.value_type, _join(path, key), out)
    elif isinstance(t, mi.EnumType):
        allowed = [member.value for member in t.cls]
        if not isinstance(value, str):
            out.append(_wrong_type(value, t, path))
        elif value not in allowed:
            shown = ", ".join(allowed) if len(allowed) <= 12 else ", ".join(allowed[:12]) + ", ..."
            out.append(Problem(path, f"invalid value {value!r}; expected one of {shown}"))
    else:
        _check_scalar(value, t, path, out)


def _check_numbers(value: Any, path: str, out: list[Problem]) -> None:
    """A value of any type may hold anything but a number no double holds (1e999, read by
    decode_any as an infinite float), which the typed decode refuses wherever it is."""
    if isinstance(value, float) and math.isinf(value):
        out.append(Problem(path, _NO_DOUBLE))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_numbers(item, f"{path}[{index}]", out)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_numbers(item, _join(path, key), out)


def _check_union(value: Any, t: mi.UnionType, path: str, out: list[Problem]) -> None:
    if value is None and any(isinstance(u, mi.NoneType) for u in t.types):
        return
    candidates = [u for u in t.types if not isinstance(u, mi.NoneType)]
    if len(candidates) == 1:
        _check(value, candidates[0], path, out)
        return
    closest: list[Problem] = []  # of a member of the value's own type (e.g. text of the wrong form)
    for candidate in candidates:
        trial: list[Problem] = []
        _check(value, candidate, path, trial)
        if not trial:
            return
        if json_kind(value) == _describe(candidate):
            closest = trial
    out.extend(closest or [_wrong_type(value, t, path)])


def _check_struct(value: Any, t: mi.StructType, path: str, out: list[Problem]) -> None:
    if not isinstance(value, dict):
        out.append(_wrong_type(value, t, path))
        return
    for field in t.fields:
        field_path = _join(path, field.encode_name)
        if field.encode_name not in value:
            if field.required:
                out.append(Problem(field_path, "required field is missing"))
            continue
        _check(value[field.encode_name], field.type, field_path, out)


def _check_scalar(value: Any, t: mi.Type, path: str, out: list[Problem]) -> None:
    if isinstance(t, mi.NoneType):
        if value is not None:
            out.append(_wrong_type(value, t, path))
        return
    if isinstance(t, mi.IntType) and isinstance(value, float) and math.isinf(value):
        out.append(Problem(path, _NO_DOUBLE))  # 1e999 (decode_any): more to say than "not an integer"
        return
    if isinstance(t, mi.BoolType):
        ok = isinstance(value, bool)
    elif isinstance(t, mi.IntType):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(t, mi.FloatType):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif isinstance(t, mi.StrType):
        ok = isinstance(value, str)
    else:
        ok = True
    if not ok:
        out.append(_wrong_type(value, t, path))
        return
    _check_bounds(value, t, path, out)


def _check_bounds(value: Any, t: mi.Type, path: str, out: list[Problem]) -> None:
    if isinstance(t, mi.IntType):
        low, high = t.ge, t.le
        if (low is not None and value < low) or (high is not None and value > high):
            hint = " (epoch milliseconds)" if low == EPOCH_MS_MIN else ""
            out.append(Problem(path, f"{value} is out of range: expected {low}..{high}{hint}"))
    elif isinstance(t, mi.FloatType) and not _fits_double(value):
        out.append(Problem(path, _NO_DOUBLE))
    elif isinstance(t, mi.StrType):
        if t.min_length and len(value) < t.min_length:
            out.append(Problem(path, "must not be empty"))
        elif t.max_length is not None and len(value) > t.max_length:
            out.append(Problem(path, f"at most {t.max_length} characters (it has {len(value)})"))
        elif t.pattern == ISO_DATE_TIME and not re.search(t.pattern, value):
            message = "an ISO-8601 date-time (e.g. 2021-05-27T09:12:00.123Z) or epoch milliseconds"
            out.append(Problem(path, f"{value!r} is not {message}"))
        elif t.pattern == ISO_DATE_TIME and (why := date_problem(value)):
            out.append(Problem(path, f"{value!r} is no date: {why}"))


_NO_DOUBLE = "number out of range for a 64-bit float"


def _fits_double(value: float) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _wrong_type(value: Any, t: mi.Type, path: str) -> Problem:
    return Problem(path, f"expected {_describe(t)}, got {json_kind(value)}")
