"""Request bodies of ``POST /api/v2/rum/events`` to events, validated all at once. No I/O.

A body is NDJSON, one event per line; it is accepted whole or refused whole, every problem
reported with its line and field path. Attributes are checked against the session model (a
``country`` must be text, a ``userType`` one of its values ...) and may not set what the
sessionizer computes (``startTime``, ``userActionCount`` ...). A user action needs its start time.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import msgspec
import msgspec.inspect as mi

from sessionexport.ingest.documents import DocumentProblem, Problems, RejectedBody, ndjson_lines
from sessionexport.ingest.sessionizer import DURATION_LIMIT_MS
from sessionexport.model.elasticsearch_names import ids_problem
from sessionexport.model.events import COMPUTED_FIELDS, EVENT_TYPES, ActionEvent, AttributesEvent, RumEvent
from sessionexport.model.validation import (
    NOT_JSON,
    decode_any,
    find_problems,
    json_kind,
    not_json,
    not_utf8,
    nul_problems,
    problems_against,
)

_decoder = msgspec.json.Decoder(RumEvent)
_MISSING = re.compile(r"^Object missing required field `([^`]+)`")


@dataclass(frozen=True, slots=True)
class ReceivedEvent:
    event: RumEvent
    raw: bytes  # the line as sent


MAX_AHEAD_MS = 5 * 60_000  # clocks drift; a timestamp further ahead than this is a broken clock
# One event is a few kilobytes; the sessionizer holds a session's events together, and its 200
# actions a part at this size make a session of about 13 MB at most.
MAX_EVENT_BYTES = 64 * 1024


def parse_events(body: bytes, now: int | None = None) -> list[ReceivedEvent]:
    """``now`` (server time, epoch ms): events more than 5 minutes ahead of it are refused, since a
    session's timing (timeouts, the 6 h limit) is measured in event time."""
    received: list[ReceivedEvent] = []
    problems = Problems()
    for number, line in ndjson_lines(body):
        where = f"line {number}"
        if len(line) > MAX_EVENT_BYTES:
            problems.add(
                DocumentProblem(where, "", f"{len(line)} bytes: an event takes at most {MAX_EVENT_BYTES}")
            )
            continue
        try:
            event = _decoder.decode(line)
        except msgspec.ValidationError as exc:
            for path, message in refused_event_problems(line) or [_path_and_message(exc)]:
                problems.add(DocumentProblem(where, path, message))
            continue
        except NOT_JSON as exc:
            problems.add(DocumentProblem(where, "", not_json(line, exc).message))
            continue
        found = _event_problems(event)
        if bad := not_utf8(line):  # in a field the typed decode skipped
            found.append((bad.path, bad.message))
        if now is not None:
            found += _ahead_problems(event, now)
        for path, message in found:
            problems.add(DocumentProblem(where, path, message))
        if not found:
            received.append(ReceivedEvent(event, line))
    problems.raise_any()
    if not received:
        raise RejectedBody([DocumentProblem("body", "", "no events in the request body")])
    return received


def refused_event_problems(line: bytes) -> list[tuple[str, str]]:
    """Every problem of an event the typed decode refused (which names only the first), found by
    walking it against the model of its ``type``; an event of no known type against the fields
    every event has."""
    try:
        value = decode_any(line)  # JSON: the typed decode got as far as validating it
    except NOT_JSON:
        return []  # (json.loads stops at nesting the typed decode got through): msgspec's word
    if not isinstance(value, dict):
        return [("", f"expected object, got {json_kind(value)}")]
    kind, models, found = value.get("type"), _event_models(), []
    known = kind if isinstance(kind, str) and kind in models else None  # a list or object is unhashable
    if known is None:
        found.append(("type", f"{_type_refusal(value)}; expected one of {', '.join(EVENT_TYPES)}"))
    model = models[known or "end"]  # the end event has the common fields alone
    place = {key: index for index, key in enumerate(value)}  # in the line's order, missing ones last
    walked = sorted(problems_against(value, model), key=lambda p: place.get(_top(p.path), len(place)))
    return found + [(p.path, p.message) for p in walked]


def _type_refusal(event: dict[str, Any]) -> str:
    """What is wrong with an event's ``type``, a value of JSON in JSON's words."""
    if "type" not in event:
        return "required field is missing"
    kind = event["type"]
    return f"invalid value {kind!r}" if isinstance(kind, str) else f"expected string, got {json_kind(kind)}"


def _top(path: str) -> str:
    return re.split(r"[.\[]", path, maxsplit=1)[0]


@functools.cache
def _event_models() -> dict[Any, mi.StructType]:
    union = mi.type_info(RumEvent)
    assert isinstance(union, mi.UnionType)
    return {t.tag: t for t in union.types if isinstance(t, mi.StructType)}


def _path_and_message(exc: msgspec.ValidationError) -> tuple[str, str]:
    """msgspec says "Expected `int`, got `str` - at `$.timestamp`"; a missing field is named only in
    the message ("Object missing required field `eventId`"): both become a field path."""
    message, _, where = str(exc).partition(" - at `$")
    path = where.rstrip("`").lstrip(".")
    missing = _MISSING.match(message)
    if missing:
        path = f"{path}.{missing[1]}" if path else missing[1]
        message = f"required field {missing[1]!r} is missing"
    return path, message


def _event_problems(event: RumEvent) -> list[tuple[str, str]]:
    identity = {"tenantId": event.tenantId, "sessionId": event.sessionId, "eventId": event.eventId}
    if nul := nul_problems(identity, tuple(identity)):  # they are kept as text columns
        return [(p.path, p.message) for p in nul]
    if too_long := ids_problem(event.tenantId, event.sessionId):  # it becomes the userSessionId
        return [("sessionId", too_long)]
    if isinstance(event, ActionEvent):
        return _action_problems(event)
    if isinstance(event, AttributesEvent):
        return _attribute_problems(event.attributes)
    return []


def _action_problems(event: ActionEvent) -> list[tuple[str, str]]:
    """An action's times make its session's: each must be plausible, or the session is not."""
    action = event.action
    if action.startTime is None:
        return [("action.startTime", "required: a user action needs its start time")]
    found = []
    if action.endTime is not None and action.endTime < action.startTime:
        found.append(("action.endTime", f"{action.endTime} is before action.startTime ({action.startTime})"))
    if action.duration is not None and action.duration < 0:
        found.append(("action.duration", f"{action.duration} is negative"))
    elif action.duration is not None and action.duration > DURATION_LIMIT_MS:  # it would end the session
        found.append(("action.duration", f"{action.duration} ms is longer than a session may last"))
    for name, at in (("startTime", action.startTime), ("endTime", action.endTime)):
        if at is not None and abs(at - event.timestamp) > DURATION_LIMIT_MS:  # longer than any session
            hours = DURATION_LIMIT_MS / 3_600_000
            found.append(
                (
                    f"action.{name}",
                    f"{at} is more than {hours:g} h from the event's timestamp ({event.timestamp})",
                )
            )
    return found


def _ahead_problems(event: RumEvent, now: int) -> list[tuple[str, str]]:
    """The times that make a session's, ahead of the server's clock by more than MAX_AHEAD_MS: a
    session cannot end in the future."""
    times: list[tuple[str, int | None]] = [("timestamp", event.timestamp)]
    if isinstance(event, ActionEvent):
        times += [("action.startTime", event.action.startTime), ("action.endTime", event.action.endTime)]
    limit = f"at most {MAX_AHEAD_MS // 1000} s"
    return [
        (path, f"{(at - now) / 1000:.0f} s ahead of the server's clock ({limit})")
        for path, at in times
        if at is not None and at > now + MAX_AHEAD_MS
    ]


def _attribute_problems(attributes: dict[str, object]) -> list[tuple[str, str]]:
    computed = sorted(COMPUTED_FIELDS & attributes.keys())
    found = [
        (f"attributes.{name}", "computed by the sessionizer: not accepted in events") for name in computed
    ]
    # Checked as a session would be: the identity is the sessionizer's, the rest is the sender's.
    rest = {k: v for k, v in attributes.items() if k not in COMPUTED_FIELDS}
    probe = {"tenantId": "t", "userSessionId": "s", "startTime": 1_700_000_000_000, **rest}
    return found + [(f"attributes.{p.path}", p.message) for p in find_problems(msgspec.json.encode(probe))]
