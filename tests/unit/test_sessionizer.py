"""The sessionizer's rules, free of I/O: when a session (or a part of it) is complete, the session
it becomes, and the RUM events it is made of (``POST /api/v2/rum/events`` bodies).

Spec: dynatrace-session-export-facts.md §5 (lifecycle, end reasons, bounce, UX score, apdex).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessionexport.ingest.documents import DocumentProblem, RejectedBody
from sessionexport.ingest.events import MAX_EVENT_BYTES, parse_events
from sessionexport.ingest.sessionizer import MINUTE, Part, SessionizerSettings, assemble, due_at, next_part
from sessionexport.model.events import (
    ActionEvent,
    AttributesEvent,
    EndEvent,
    ErrorEvent,
    RumEvent,
    SessionEventEvent,
)
from sessionexport.model.scores import ApdexThresholds, UxScoreSettings, user_experience_score
from sessionexport.model.session import (
    ApdexCategory,
    EndReason,
    EventType,
    SessionError,
    SessionEvent,
    UserAction,
    UserExperienceScore,
)
from sessionexport.model.validation import decode_session

T0 = 1_700_000_000_000
SECOND = 1_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
TENANT, SESSION = "tenant1", "session1"
DEFAULTS = SessionizerSettings()
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- building events ---------------------------------------------------------------------------


def attrs(event_id: str, ts: int, **attributes: Any) -> RumEvent:
    return AttributesEvent(
        tenantId=TENANT, sessionId=SESSION, eventId=event_id, timestamp=ts, attributes=attributes
    )


def action(
    event_id: str, start: int, ms: int | None = SECOND, *, ts: int | None = None, **fields: Any
) -> RumEvent:
    """A user action started at ``start`` that took ``ms`` (no end time when None), reported at its
    end (or at ``ts``)."""
    end = None if ms is None else start + ms
    reported = ts if ts is not None else (end if end is not None else start)
    fields.setdefault("name", event_id)
    return ActionEvent(
        tenantId=TENANT,
        sessionId=SESSION,
        eventId=event_id,
        timestamp=reported,
        action=msgspec.convert({"startTime": start, "endTime": end, **fields}, UserAction),
    )


def happening(
    event_id: str, ts: int, kind: EventType = EventType.UserTag, **fields: Any
) -> SessionEventEvent:
    return SessionEventEvent(
        tenantId=TENANT,
        sessionId=SESSION,
        eventId=event_id,
        timestamp=ts,
        event=msgspec.convert({"type": kind, "startTime": ts, **fields}, SessionEvent),
    )


def error(event_id: str, ts: int, kind: EventType = EventType.Error, **fields: Any) -> RumEvent:
    return ErrorEvent(
        tenantId=TENANT,
        sessionId=SESSION,
        eventId=event_id,
        timestamp=ts,
        error=msgspec.convert({"type": kind, "startTime": ts, **fields}, SessionError),
    )


def end(event_id: str, ts: int) -> RumEvent:
    return EndEvent(tenantId=TENANT, sessionId=SESSION, eventId=event_id, timestamp=ts)


def actions(count: int, start: int = T0, every: int = SECOND, prefix: str = "a") -> list[RumEvent]:
    return [action(f"{prefix}{i:04d}", start + i * every, 100) for i in range(count)]


def attributes_of(events: Sequence[RumEvent]) -> list[AttributesEvent]:
    return [e for e in events if isinstance(e, AttributesEvent)]


def ids(events: Sequence[RumEvent]) -> list[str]:
    return [e.eventId for e in events]


def complete(events: Sequence[RumEvent], s: SessionizerSettings = DEFAULTS) -> Part:
    """The part that is complete once every timeout has passed."""
    now = max(e.timestamp for e in events) + DAY
    part = next_part(events, now, s)
    assert part is not None, "a session with content is complete a day after its last event"
    return part


def document(
    events: Sequence[RumEvent], s: SessionizerSettings = DEFAULTS, part_number: int | None = None
) -> dict[str, Any]:
    """The first completed part of ``events`` as a session document (checked against the model)."""
    doc = assemble(TENANT, SESSION, complete(events, s), attributes_of(events), part_number, s)
    decode_session(msgspec.json.encode(doc))  # every assembled document is a valid session
    return doc


def parts_of(events: Sequence[RumEvent], now: int, s: SessionizerSettings) -> list[Part]:
    """Every part complete at ``now``, as the sweep finds them: the consumed events are dropped
    (by id, as the store does) and the rest looked at again."""
    remaining = list(events)
    parts: list[Part] = []
    while (part := next_part(remaining, now, s)) is not None:
        parts.append(part)
        consumed = set(ids(part.events))
        remaining = [e for e in remaining if e.eventId not in consumed]
        if part.final:
            break
        assert len(parts) < 1_000, "a session never stops splitting"
    return parts


def documents_of(events: Sequence[RumEvent], now: int, s: SessionizerSettings) -> list[bytes]:
    """The encoded documents of every part, numbered as the sessionizer numbers them."""
    split = False
    documents: list[bytes] = []
    for number, part in enumerate(parts_of(events, now, s), start=1):
        numbered = split or part.continues
        split = part.continues
        doc = assemble(TENANT, SESSION, part, attributes_of(events), number if numbered else None, s)
        documents.append(msgspec.json.encode(doc))
    return documents


# === when a session is complete ====================================================================


def test_nothing_to_complete_without_content() -> None:
    assert next_part([], T0 + DAY, DEFAULTS) is None
    only_attributes = [attrs("x1", T0, city="Linz"), attrs("x2", T0 + 1, applicationType="WEB_APPLICATION")]
    assert next_part(only_attributes, T0 + DAY, DEFAULTS) is None
    assert due_at(only_attributes, DEFAULTS) is None
    assert due_at([], DEFAULTS) is None


# --- END_EVENT ------------------------------------------------------------------------------------


def test_end_event_completes_the_session_at_once() -> None:
    events = [attrs("x", T0, city="Linz"), *actions(3), end("zz-end", T0 + 5 * SECOND)]
    part = next_part(events, T0 + 5 * SECOND, DEFAULTS)  # no waiting for the timeout
    assert part is not None
    assert part.reason is EndReason.END_EVENT
    assert part.final
    assert ids(part.events) == ["a0000", "a0001", "a0002", "zz-end"]  # attributes stay out of the part


def test_end_event_takes_everything_of_the_session_even_what_came_after_it() -> None:
    events = [action("a1", T0), end("end", T0 + 2 * SECOND), error("e1", T0 + 3 * SECOND)]
    part = next_part(events, T0 + 3 * SECOND, DEFAULTS)
    assert part is not None
    assert (part.reason, part.final) == (EndReason.END_EVENT, True)
    assert ids(part.events) == ["a1", "end", "e1"]


def test_an_end_event_waits_for_the_actions_it_ends() -> None:
    """Events arrive in any order: an end event that came before the session's actions does not
    end a session yet (it would have made none, and the actions after it late)."""
    alone = [end("end", T0 + 5 * SECOND)]
    assert next_part(alone, T0 + 10 * SECOND, DEFAULTS) is None
    assert due_at(alone, DEFAULTS) == T0 + 5 * SECOND + 30 * MINUTE
    with_actions = [*alone, action("a1", T0), action("a2", T0 + 2 * SECOND)]
    part = next_part(with_actions, T0 + 10 * SECOND, DEFAULTS)
    assert part is not None and (part.reason, part.final) == (EndReason.END_EVENT, True)
    assert ids(part.events) == ["a1", "a2", "end"]


def test_an_end_event_alone_times_out_without_actions() -> None:
    doc = document([end("end", T0)])  # once it timed out: it makes no session (see assembly)
    assert doc["endReason"] == "TIMEOUT"
    assert doc["userActionCount"] == 0
    assert doc["bounce"] is True
    assert doc["startTime"] == doc["endTime"] == T0
    assert doc["userExperienceScore"] == "UNDEFINED"


# --- TIMEOUT --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("application_type", "timeout"),
    [
        (None, 30 * MINUTE),  # no application type: a web application
        ("WEB_APPLICATION", 30 * MINUTE),
        ("MOBILE_APPLICATION", 10 * MINUTE),
        ("CUSTOM_APPLICATION", 10 * MINUTE),
    ],
)
def test_inactivity_timeout_per_application_type(application_type: str | None, timeout: int) -> None:
    events: list[RumEvent] = [action("a1", T0), error("e1", T0 + 4 * SECOND)]
    if application_type:
        events.insert(0, attrs("x", T0, applicationType=application_type))
    last = T0 + 4 * SECOND
    assert due_at(events, DEFAULTS) == last + timeout
    assert next_part(events, last + timeout - 1, DEFAULTS) is None, "not before the timeout"
    part = next_part(events, last + timeout, DEFAULTS)
    assert part is not None
    assert (part.reason, part.final) == (EndReason.TIMEOUT, True)
    assert ids(part.events) == ["a1", "e1"]


def test_timeout_counts_from_the_last_content_not_from_the_last_attributes() -> None:
    events = [action("a1", T0), attrs("x", T0 + 20 * MINUTE, city="Linz")]
    last = T0 + SECOND  # the action's end
    assert due_at(events, DEFAULTS) == last + 30 * MINUTE
    assert next_part(events, last + 30 * MINUTE, DEFAULTS) is not None


def test_timeout_counts_from_the_latest_event_whatever_the_order() -> None:
    events = [error("e-late", T0 + 9 * MINUTE), action("a1", T0), happening("h1", T0 + 2 * MINUTE)]
    assert due_at(events, DEFAULTS) == T0 + 9 * MINUTE + 30 * MINUTE
    assert next_part(events, T0 + 39 * MINUTE - 1, DEFAULTS) is None
    assert next_part(events, T0 + 39 * MINUTE, DEFAULTS) is not None


def test_latest_application_type_decides_the_timeout() -> None:
    events = [
        attrs("x2", T0 + 1, applicationType="MOBILE_APPLICATION"),
        attrs("x1", T0, applicationType="WEB_APPLICATION"),
        action("a1", T0),
    ]
    assert due_at(events, DEFAULTS) == T0 + SECOND + 10 * MINUTE


def test_timeouts_are_configurable() -> None:
    s = SessionizerSettings(web_timeout_ms=5 * SECOND, app_timeout_ms=2 * SECOND)
    web = [action("a1", T0)]
    mobile = [attrs("x", T0, applicationType="MOBILE_APPLICATION"), action("a1", T0)]
    assert due_at(web, s) == T0 + 6 * SECOND
    assert due_at(mobile, s) == T0 + 3 * SECOND
    assert next_part(mobile, T0 + 3 * SECOND - 1, s) is None
    part = next_part(mobile, T0 + 3 * SECOND, s)
    assert part is not None and part.reason is EndReason.TIMEOUT


def test_nothing_is_due_while_within_every_limit() -> None:
    events = [attrs("x", T0, city="Linz"), *actions(200, every=MINUTE)]  # 200 actions over 3 h 19 min
    last = T0 + 199 * MINUTE + 100
    assert next_part(events, last, DEFAULTS) is None
    assert next_part(events, last + 30 * MINUTE - 1, DEFAULTS) is None
    assert due_at(events, DEFAULTS) == last + 30 * MINUTE


# --- USER_ACTION_LIMIT ----------------------------------------------------------------------------


def test_more_than_200_actions_split_after_the_200th() -> None:
    events = [attrs("x", T0, city="Linz"), *actions(201)]
    part = next_part(events, T0 + 201 * SECOND, DEFAULTS)  # no waiting for a timeout
    assert part is not None
    assert part.reason is EndReason.USER_ACTION_LIMIT
    assert not part.final, "the rest of the session continues as its next part"
    assert ids(part.events) == [f"a{i:04d}" for i in range(200)]


def test_exactly_200_actions_are_no_reason_to_split() -> None:
    events = actions(200)
    last = T0 + 199 * SECOND + 100
    assert next_part(events, last, DEFAULTS) is None
    part = next_part(events, last + 30 * MINUTE, DEFAULTS)
    assert part is not None
    assert (part.reason, part.final, len(part.events)) == (EndReason.TIMEOUT, True, 200)


def test_action_limit_counts_actions_only_and_the_part_keeps_what_came_before_the_next_action() -> None:
    s = SessionizerSettings(action_limit=3)
    events = [
        action("a1", T0),
        error("e1", T0 + 1_500),
        action("a2", T0 + 2 * SECOND),
        happening("h1", T0 + 3_500, EventType.RageClick),
        action("a3", T0 + 4 * SECOND),
        error("e2", T0 + 5_500),
        action("a4", T0 + 6 * SECOND),
        action("a5", T0 + 8 * SECOND),
    ]
    part = next_part(events, T0 + 9 * SECOND, s)
    assert part is not None
    assert (part.reason, part.final) == (EndReason.USER_ACTION_LIMIT, False)
    assert ids(part.events) == ["a1", "e1", "a2", "h1", "a3", "e2"]
    rest = [e for e in events if e.eventId not in set(ids(part.events))]
    assert next_part(rest, T0 + 9 * SECOND, s) is None, "the rest is within the limits: it waits"
    last_part = next_part(rest, T0 + 9 * SECOND + 30 * MINUTE, s)
    assert last_part is not None
    assert (last_part.reason, last_part.final, ids(last_part.events)) == (
        EndReason.TIMEOUT,
        True,
        ["a4", "a5"],
    )


def test_a_long_session_becomes_as_many_parts_as_the_limit_requires() -> None:
    s = SessionizerSettings(action_limit=5)
    events = [*actions(12), end("zz-end", T0 + 20 * SECOND)]
    parts = parts_of(events, T0 + 20 * SECOND, s)
    assert [(p.reason, p.final) for p in parts] == [
        (EndReason.USER_ACTION_LIMIT, False),
        (EndReason.USER_ACTION_LIMIT, False),
        (EndReason.END_EVENT, True),
    ]
    assert [len(p.events) for p in parts] == [5, 5, 3]  # the end event ends the last part


# --- DURATION_LIMIT -------------------------------------------------------------------------------


def test_events_beyond_6_hours_after_the_first_start_the_next_part() -> None:
    busy = actions(19, every=20 * MINUTE)  # never 30 min idle: up to 6 h (a0018) after the first
    events = [
        *busy[:-1],
        error("e1", T0 + 6 * HOUR - 1),
        action("a3", T0 + 6 * HOUR + MINUTE, 100),
        action("a4", T0 + 6 * HOUR + 2 * MINUTE, 100),
    ]
    part = next_part(events, T0 + 6 * HOUR + 2 * MINUTE + 100, DEFAULTS)
    assert part is not None
    assert (part.reason, part.final, part.continues) == (EndReason.DURATION_LIMIT, False, True)
    assert ids(part.events) == [*ids(busy[:-1]), "e1"]
    doc = assemble(TENANT, SESSION, part, [], 1, DEFAULTS)
    assert doc["duration"] <= 6 * HOUR


def test_duration_limit_is_measured_from_the_first_content_event() -> None:
    # "what happened in the first 6 h": an event exactly 6 h after the first is not in them
    busy = [error(f"e{i}", T0 + i * 20 * MINUTE) for i in range(18)]  # never 30 min idle
    events = [*busy, action("a1", T0 + 6 * HOUR - 1_000, 500), action("a2", T0 + 6 * HOUR, 0)]
    part = next_part(events, T0 + 6 * HOUR, DEFAULTS)
    assert part is not None
    assert part.reason is EndReason.DURATION_LIMIT
    assert ids(part.events) == [*ids(busy), "a1"]


def test_an_inactivity_gap_between_stored_events_ends_a_session_there() -> None:
    """30 min without an event ends a session whenever its events arrived, all at once included:
    what follows is a session of its own, not a part of it."""
    events = [action("a", T0), action("b", T0 + 31 * MINUTE), action("c", T0 + 62 * MINUTE)]
    docs = [msgspec.json.decode(d) for d in documents_of(events, T0 + DAY, DEFAULTS)]
    assert [(d["userActionCount"], d["endReason"], "partNumber" in d) for d in docs] == [
        (1, "TIMEOUT", False)
    ] * 3
    assert [d["startTime"] for d in docs] == [T0, T0 + 31 * MINUTE, T0 + 62 * MINUTE]
    close = [action("a", T0), action("b", T0 + 29 * MINUTE)]
    assert len(documents_of(close, T0 + DAY, DEFAULTS)) == 1


def test_the_session_before_a_gap_waits_until_no_event_arrived_for_the_quiet_time() -> None:
    """A backlog sent in several requests, out of order: an event of a later request may yet fill
    the gap, as it would for a session's own timeout; it is not counted late a few seconds on."""
    events = [action("a1", T0), action("a3", T0 + 40 * MINUTE)]  # a gap of over 30 min
    now = T0 + DAY  # sent long after they happened
    assert next_part(events, now, DEFAULTS, last_arrival=now - 10 * SECOND) is None
    assert due_at(events, DEFAULTS, last_arrival=now - 10 * SECOND) == now - 10 * SECOND + 2 * MINUTE
    filled = [*events, action("a2", T0 + 20 * MINUTE)]
    assert next_part(filled, now, DEFAULTS, last_arrival=now) is None  # one session, still open
    quiet = next_part(events, now, DEFAULTS, last_arrival=now - 2 * MINUTE)
    assert quiet is not None and ids(quiet.events) == ["a1"] and quiet.reason is EndReason.TIMEOUT
    ended = [action("a1", T0), end("end", T0 + 2 * SECOND), action("a3", T0 + 40 * MINUTE)]
    part = next_part(ended, now, DEFAULTS, last_arrival=now - 10 * SECOND)  # an end ends it at once
    assert part is not None and part.reason is EndReason.END_EVENT and ids(part.events) == ["a1", "end"]


@pytest.mark.parametrize(
    ("application_type", "reason"),
    [("MOBILE_APPLICATION", "END_EVENT"), ("CUSTOM_APPLICATION", "END_EVENT"), ("WEB_APPLICATION", None)],
)
def test_a_crash_ends_a_session_of_a_mobile_or_custom_application(
    application_type: str, reason: str | None
) -> None:
    events = [
        attrs("x", T0, applicationType=application_type),
        action("a1", T0),
        error("c1", T0 + 2 * SECOND, EventType.Crash),
    ]
    part = next_part(events, T0 + 3 * SECOND, DEFAULTS)
    assert (part.reason.value if part else None) == reason


def test_a_crash_before_an_inactivity_gap_ended_the_session_there() -> None:
    events = [
        attrs("x", T0, applicationType="MOBILE_APPLICATION"),
        action("a1", T0),
        error("c1", T0 + 2 * SECOND, EventType.Crash),
        action("a2", T0 + 20 * MINUTE),
    ]
    part = next_part(events, T0 + 20 * MINUTE + SECOND, DEFAULTS)
    assert part is not None and (part.reason, ids(part.events)) == (EndReason.END_EVENT, ["a1", "c1"])


def test_a_cut_at_an_inactivity_gap_after_an_end_event_is_an_end() -> None:
    events = [action("a1", T0), end("end", T0 + SECOND), action("a2", T0 + 40 * MINUTE)]
    part = next_part(events, T0 + 40 * MINUTE + SECOND, DEFAULTS)
    assert part is not None and (part.reason, part.continues) == (EndReason.END_EVENT, False)
    assert ids(part.events) == ["a1", "end"]


def test_after_the_last_part_of_a_split_session_the_next_session_is_not_numbered() -> None:
    s = SessionizerSettings(action_limit=2)
    events = [*actions(3), action("later", T0 + HOUR)]
    docs = [msgspec.json.decode(d) for d in documents_of(events, T0 + DAY, s)]
    assert [(d["userActionCount"], d.get("partNumber")) for d in docs] == [(2, 1), (1, 2), (1, None)]


def test_duration_limit_is_configurable() -> None:
    s = SessionizerSettings(duration_limit_ms=10 * SECOND)
    events = [action("a1", T0, 0), action("a2", T0 + 9 * SECOND, 0), action("a3", T0 + 11 * SECOND, 0)]
    part = next_part(events, T0 + 11 * SECOND, s)
    assert part is not None
    assert (part.reason, ids(part.events)) == (EndReason.DURATION_LIMIT, ["a1", "a2"])
    assert next_part(events[:2], T0 + 9 * SECOND, s) is None, "within the limit: nothing due"


def test_limits_split_before_an_end_event_is_considered() -> None:
    s = SessionizerSettings(action_limit=2)
    events = [*actions(3), end("zz-end", T0 + 10 * SECOND)]
    part = next_part(events, T0 + 10 * SECOND, s)
    assert part is not None
    assert (part.reason, part.final, ids(part.events)) == (
        EndReason.USER_ACTION_LIMIT,
        False,
        ["a0000", "a0001"],
    )


# === the completed session ===========================================================================


def test_times_come_from_the_actions() -> None:
    events = [
        error("e0", T0),  # before the first action: not the start
        action("a1", T0 + 2 * SECOND, 500, ts=T0 + 3 * SECOND),  # reported after it started
        action("a2", T0 + 4 * SECOND, 10 * SECOND),  # ends last: T0 + 14 s
        happening("h1", T0 + 6 * SECOND),
        end("end", T0 + 7 * SECOND),
    ]
    doc = document(events)
    assert doc["startTime"] == T0 + 2 * SECOND, "start of the first user action"
    assert doc["endTime"] == T0 + 14 * SECOND, "end of the latest action"
    assert doc["duration"] == 12 * SECOND


def test_events_after_the_last_action_do_not_lengthen_the_session() -> None:
    # the export format: endTime is the end of the last user action, duration runs to it
    doc = document([action("a1", T0, 500), error("e1", T0 + 8 * SECOND), happening("h1", T0 + 7 * SECOND)])
    assert (doc["startTime"], doc["endTime"], doc["duration"]) == (T0, T0 + 500, 500)


def test_the_end_event_is_not_part_of_the_session_time() -> None:
    # it marks when the session was closed, not something that happened in it
    doc = document([action("a1", T0, 500), end("end", T0 + 9 * SECOND)])
    assert (doc["startTime"], doc["endTime"], doc["duration"]) == (T0, T0 + 500, 500)


def test_action_end_from_its_duration_when_it_has_no_end_time() -> None:
    doc = document([action("a1", T0, None, duration=4 * SECOND), action("a2", T0 + SECOND, None)])
    assert doc["endTime"] == T0 + 4 * SECOND
    assert doc["duration"] == 4 * SECOND


def test_session_without_actions_starts_with_its_first_event() -> None:
    doc = document([error("e2", T0 + 5 * SECOND), error("e1", T0 + SECOND)])
    assert (doc["startTime"], doc["endTime"], doc["duration"]) == (T0 + SECOND, T0 + 5 * SECOND, 4 * SECOND)


def test_identity_from_the_arguments() -> None:
    part = complete([action("a1", T0)])
    doc = assemble("other-tenant", "other-session", part, [], None, DEFAULTS)
    assert (doc["tenantId"], doc["userSessionId"]) == ("other-tenant", "other-session")


def test_counts() -> None:
    events = [
        *actions(4),
        error("e1", T0 + 500),
        error("e2", T0 + 1_500, EventType.Crash),
        error("e3", T0 + 2_500),
        happening("h1", T0 + 600, EventType.RageClick),
        happening("h2", T0 + 700, EventType.RageClick),
        happening("h3", T0 + 800, EventType.RageTap),
        happening("h4", T0 + 900, EventType.PageChange),
    ]
    doc = document(events)
    assert doc["userActionCount"] == 4
    assert doc["totalErrorCount"] == 3  # crashes are errors too
    assert doc["numberOfRageClicks"] == 2
    assert doc["numberOfRageTaps"] == 1
    assert (len(doc["userActions"]), len(doc["errors"]), len(doc["events"])) == (4, 3, 4)


@pytest.mark.parametrize(("count", "bounce"), [(0, True), (1, True), (2, False), (5, False)])
def test_bounce_is_at_most_one_action(count: int, bounce: bool) -> None:
    doc = document([*actions(count), end("zz-end", T0 + 10 * SECOND)])
    assert doc["userActionCount"] == count
    assert doc["bounce"] is bounce


def test_no_errors_no_crash() -> None:
    doc = document([*actions(2, every=SECOND), happening("h1", T0 + 500, EventType.RageClick)])
    assert doc["hasError"] is False
    assert doc["hasCrash"] is False
    assert doc["totalErrorCount"] == 0
    assert doc["errors"] == []


def test_an_error_means_has_error() -> None:
    doc = document([action("a1", T0), error("e1", T0 + 500)])
    assert (doc["hasError"], doc["hasCrash"]) == (True, False)


@pytest.mark.parametrize("counter", ["javascriptErrorCount", "requestErrorCount", "customErrorCount"])
def test_action_error_counts_mean_has_error(counter: str) -> None:
    doc = document([action("a1", T0, 100, **{counter: 2}), action("a2", T0 + SECOND, 100)])
    assert doc["hasError"] is True
    assert doc["totalErrorCount"] == 0  # the errors[] list is what is counted
    assert doc["hasCrash"] is False


def test_zero_error_counts_are_no_error() -> None:
    fields = {"javascriptErrorCount": 0, "requestErrorCount": 0, "customErrorCount": 0}
    doc = document([action("a1", T0, 100, **fields)])
    assert doc["hasError"] is False


def test_a_crash_means_has_crash_and_error() -> None:
    doc = document([*actions(3), error("c1", T0 + 5 * SECOND, EventType.Crash, name="ThrowAsync")])
    assert (doc["hasCrash"], doc["hasError"]) == (True, True)
    assert doc["userExperienceScore"] == "FRUSTRATED"  # a crash weighs 5000


# --- apdex per action -----------------------------------------------------------------------------


def rating(doc: dict[str, Any]) -> list[str]:
    return [a["apdexCategory"] for a in doc["userActions"]]


@pytest.mark.parametrize(
    ("ms", "expected"),
    [
        (0, "SATISFIED"),
        (3_000, "SATISFIED"),
        (3_001, "TOLERATING"),
        (12_000, "TOLERATING"),
        (12_001, "FRUSTRATED"),
    ],
)
def test_apdex_default_thresholds_3_and_12_seconds(ms: int, expected: str) -> None:
    assert rating(document([action("a1", T0, ms)])) == [expected]


def test_apdex_uses_the_given_duration() -> None:
    # duration (500 ms) wins over the 20 s between start and end
    doc = document([action("a1", T0, 20 * SECOND, duration=500)])
    assert rating(doc) == ["SATISFIED"]
    assert doc["userActions"][0]["duration"] == 500


def test_apdex_duration_computed_from_start_and_end() -> None:
    doc = document([action("a1", T0, 5 * SECOND)])  # no duration sent
    assert doc["userActions"][0]["duration"] == 5 * SECOND
    assert rating(doc) == ["TOLERATING"]


def test_apdex_unknown_without_end_or_duration() -> None:
    doc = document([action("a1", T0, None)])
    assert rating(doc) == ["UNKNOWN"]
    assert "duration" not in doc["userActions"][0]
    assert doc["userExperienceScore"] == "UNDEFINED"


@pytest.mark.parametrize("counter", ["javascriptErrorCount", "requestErrorCount", "customErrorCount"])
def test_apdex_action_with_errors_is_frustrated_however_fast(counter: str) -> None:
    assert rating(document([action("a1", T0, 10, **{counter: 1})])) == ["FRUSTRATED"]


def test_apdex_sent_by_the_client_is_not_trusted() -> None:
    doc = document(
        [
            action("a1", T0, 20 * SECOND, apdexCategory="SATISFIED"),
            action("a2", T0, 10, apdexCategory="FRUSTRATED"),
        ]
    )
    assert sorted(rating(doc)) == ["FRUSTRATED", "SATISFIED"]
    assert {a["name"]: a["apdexCategory"] for a in doc["userActions"]} == {
        "a1": "FRUSTRATED",
        "a2": "SATISFIED",
    }


def test_apdex_thresholds_per_application_and_per_action_type() -> None:
    s = SessionizerSettings(
        apdex={
            "shop": ApdexThresholds(tolerated_ms=500, frustrated_ms=2_000),
            "shop|Xhr": ApdexThresholds(tolerated_ms=100, frustrated_ms=400),
            "APPLICATION-1": ApdexThresholds(tolerated_ms=5_000, frustrated_ms=6_000),
        }
    )
    events = [
        action("load", T0, 1_000, application="shop", type="Load"),  # shop: 500 < 1000 <= 2000
        action("xhr", T0 + 10, 1_000, application="shop", type="Xhr"),  # shop|Xhr: 1000 > 400
        action("xhr-fast", T0 + 20, 100, application="shop", type="Xhr"),  # shop|Xhr: 100 <= 100
        action("blog", T0 + 30, 1_000, application="blog", type="Load"),  # defaults: 1000 <= 3000
        action("by-id", T0 + 40, 5_500, internalApplicationId="APPLICATION-1"),  # the id when no name
        action("no-app", T0 + 50, 12_001),  # defaults
    ]
    doc = document(events, s)
    assert {a["name"]: a["apdexCategory"] for a in doc["userActions"]} == {
        "load": "TOLERATING",
        "xhr": "FRUSTRATED",
        "xhr-fast": "SATISFIED",
        "blog": "SATISFIED",
        "by-id": "TOLERATING",
        "no-app": "FRUSTRATED",
    }


# --- user experience score ------------------------------------------------------------------------

# action durations that rate as FRUSTRATED / TOLERATING / SATISFIED with the default thresholds
F_MS, T_MS, S_MS = 20 * SECOND, 5 * SECOND, SECOND


def rated_actions(*durations: int) -> list[RumEvent]:
    """Actions one minute apart, in this order, with these durations."""
    return [action(f"a{i:02d}", T0 + i * MINUTE, ms) for i, ms in enumerate(durations)]


def test_documented_worked_example_through_the_score_function() -> None:
    F, T, S = ApdexCategory.FRUSTRATED, ApdexCategory.TOLERATING, ApdexCategory.SATISFIED
    example = [F, F, F, T, T, T, S, S]  # F=9, T=9, S=6: 9/24 = 37.5% > 30%; the last is satisfied
    assert user_experience_score(example) is UserExperienceScore.FRUSTRATED
    no_last = UxScoreSettings(consider_last_action=False)
    assert user_experience_score(example, settings=no_last) is UserExperienceScore.FRUSTRATED


def test_documented_worked_example_through_assemble() -> None:
    events = rated_actions(F_MS, F_MS, F_MS, T_MS, T_MS, T_MS, S_MS, S_MS)
    doc = document(events)
    assert rating(doc) == ["FRUSTRATED"] * 3 + ["TOLERATING"] * 3 + ["SATISFIED"] * 2
    assert doc["userExperienceScore"] == "FRUSTRATED"
    no_last = SessionizerSettings(ux=UxScoreSettings(consider_last_action=False))
    assert document(events, no_last)["userExperienceScore"] == "FRUSTRATED"
    # the same shape below the threshold: F=3 of 18 is 16.7%; not satisfied with a frustrated action
    assert document(rated_actions(F_MS, T_MS, T_MS, T_MS, S_MS, S_MS))["userExperienceScore"] == "TOLERATED"
    # and with a higher threshold the worked example is tolerated
    lenient = SessionizerSettings(ux=UxScoreSettings(max_frustrated_percent=40))
    assert document(events, lenient)["userExperienceScore"] == "TOLERATED"


def test_score_satisfied_tolerated_and_undefined() -> None:
    assert document(rated_actions(S_MS, S_MS, T_MS))["userExperienceScore"] == "SATISFIED"  # 66% >= 50%
    assert document(rated_actions(S_MS, T_MS, T_MS))["userExperienceScore"] == "TOLERATED"  # 33% < 50%
    assert document([action("a1", T0, None)])["userExperienceScore"] == "UNDEFINED"  # nothing rated


def test_score_errors_count_as_frustrating() -> None:
    satisfied = rated_actions(S_MS, S_MS, S_MS, S_MS)  # S = 12
    assert document(satisfied)["userExperienceScore"] == "SATISFIED"
    one_error = [*satisfied, error("e1", T0 + 30 * SECOND)]  # F = 1 of 13: never satisfied
    assert document(one_error)["userExperienceScore"] == "TOLERATED"
    errors = [*satisfied, *(error(f"e{i}", T0 + i * SECOND) for i in range(6))]  # F = 6 of 18 > 30%
    assert document(errors)["userExperienceScore"] == "FRUSTRATED"


def test_score_rage_clicks_and_taps_count_when_considered() -> None:
    events = [
        *rated_actions(S_MS, S_MS),  # S = 6
        happening("r1", T0 + 10 * SECOND, EventType.RageClick),
        happening("r2", T0 + 20 * SECOND, EventType.RageTap),  # F = 4 of 10
    ]
    assert document(events)["userExperienceScore"] == "FRUSTRATED"
    ignored = SessionizerSettings(ux=UxScoreSettings(consider_rage_clicks=False))
    assert document(events, ignored)["userExperienceScore"] == "SATISFIED"


def test_score_last_action_frustrated_decides_when_considered() -> None:
    events = rated_actions(S_MS, S_MS, S_MS, S_MS, S_MS, F_MS)  # F = 3 of 18: below 30%
    assert document(events)["userExperienceScore"] == "FRUSTRATED"
    no_last = SessionizerSettings(ux=UxScoreSettings(consider_last_action=False))
    assert document(events, no_last)["userExperienceScore"] == "TOLERATED"


def test_score_last_action_is_the_last_to_start_not_the_last_reported() -> None:
    events = [
        action("slow-first", T0, F_MS, ts=T0 + 10 * MINUTE),  # reported last, started first
        *(action(f"s{i}", T0 + i * MINUTE, S_MS) for i in range(1, 6)),
    ]
    doc = document(events)
    assert doc["userActions"][-1]["name"] == "s5"
    assert doc["userExperienceScore"] == "TOLERATED"  # F = 3 of 18, and the last action is satisfied


# --- end reason, part number, attributes, order, nulls ----------------------------------------------


def test_end_reason_of_each_rule() -> None:
    assert document([action("a1", T0), end("end", T0 + SECOND)])["endReason"] == "END_EVENT"
    assert document([action("a1", T0)])["endReason"] == "TIMEOUT"
    limit = SessionizerSettings(action_limit=1)
    assert document(actions(2), limit)["endReason"] == "USER_ACTION_LIMIT"
    busy_for_hours = actions(22, every=20 * MINUTE)  # 7 h, never 30 min idle
    assert document(busy_for_hours)["endReason"] == "DURATION_LIMIT"
    idle_in_between = [action("a1", T0), action("a2", T0 + 7 * HOUR)]
    assert document(idle_in_between)["endReason"] == "TIMEOUT"


def test_part_number_only_for_split_sessions() -> None:
    events = [action("a1", T0), end("end", T0 + SECOND)]
    assert "partNumber" not in document(events)
    assert document(events, part_number=2)["partNumber"] == 2


def test_parts_are_numbered_and_share_the_session_id() -> None:
    s = SessionizerSettings(action_limit=2)
    events = [attrs("x", T0, city="Linz"), *actions(5)]
    docs = [msgspec.json.decode(d) for d in documents_of(events, T0 + DAY, s)]
    assert [d["partNumber"] for d in docs] == [1, 2, 3]
    assert [d["endReason"] for d in docs] == ["USER_ACTION_LIMIT", "USER_ACTION_LIMIT", "TIMEOUT"]
    assert {d["userSessionId"] for d in docs} == {SESSION}
    assert [d["userActionCount"] for d in docs] == [2, 2, 1]
    assert all(d["city"] == "Linz" for d in docs), "attributes belong to every part"
    assert [d["startTime"] for d in docs] == [T0, T0 + 2 * SECOND, T0 + 4 * SECOND]


def test_attributes_merged_in_timestamp_order_later_wins() -> None:
    events: list[RumEvent] = [
        attrs("x3", T0 + 2 * SECOND, city="Graz", browserFamily="Firefox"),
        attrs("x1", T0, city="Linz", country="Austria", userType="REAL_USER"),
        attrs("x2", T0 + SECOND, city="Wien", osFamily="Linux"),
        action("a1", T0),
    ]
    doc = document(events)
    assert doc["city"] == "Graz"
    assert (doc["country"], doc["userType"], doc["osFamily"], doc["browserFamily"]) == (
        "Austria",
        "REAL_USER",
        "Linux",
        "Firefox",
    )
    # the attributes may be handed over in any order
    part = complete(events)
    again = assemble(TENANT, SESSION, part, list(reversed(attributes_of(events))), None, DEFAULTS)
    assert again == doc


def test_attributes_at_the_same_time_ordered_by_event_id() -> None:
    events = [attrs("x-b", T0, city="B"), attrs("x-a", T0, city="A"), action("a1", T0)]
    assert document(events)["city"] == "B"


def test_computed_fields_win_over_attributes() -> None:
    # parse_events refuses such attributes; assemble does not trust them either
    events = [attrs("x", T0, userActionCount=99, bounce=False, endReason="TEST_FAILED"), action("a1", T0)]
    doc = document(events)
    assert (doc["userActionCount"], doc["bounce"], doc["endReason"]) == (1, True, "TIMEOUT")


def test_lists_sorted_by_start_time() -> None:
    events = [
        action("late-start", T0 + 5 * SECOND, 100, ts=T0 + 6 * SECOND),
        action("early-start", T0, 20 * SECOND),  # reported at T0 + 20 s: after the other one
        action("middle", T0 + 2 * SECOND, 100),
        error("e2", T0 + 9 * SECOND),
        error("e1", T0 + 3 * SECOND),
        happening("h2", T0 + 8 * SECOND, EventType.PageChange),
        happening("h1", T0 + 4 * SECOND, EventType.UserTag),
    ]
    doc = document(events)
    assert [a["name"] for a in doc["userActions"]] == ["early-start", "middle", "late-start"]
    assert [e["startTime"] for e in doc["errors"]] == [T0 + 3 * SECOND, T0 + 9 * SECOND]
    assert [e["type"] for e in doc["events"]] == ["UserTag", "PageChange"]


def test_null_fields_of_actions_events_and_errors_are_not_emitted() -> None:
    doc = document([action("a1", T0, 100, domain=None), happening("h1", T0 + 1), error("e1", T0 + 2)])
    assert doc["userActions"] == [
        {"name": "a1", "startTime": T0, "endTime": T0 + 100, "duration": 100, "apdexCategory": "SATISFIED"}
    ]
    assert doc["events"] == [{"type": "UserTag", "startTime": T0 + 1}]
    assert doc["errors"] == [{"type": "Error", "startTime": T0 + 2}]
    assert None not in doc.values()


def test_null_attributes_are_not_emitted() -> None:
    doc = document([attrs("x", T0, city=None, country="Austria"), action("a1", T0)])
    nulls = sorted(k for k, v in doc.items() if v is None)
    assert nulls == [], (
        f"BUG: assemble emits null session fields {nulls} taken over from attributes events"
        f" ({{'city': None}} accepted by parse_events); null fields should not be emitted"
    )


def test_assembled_document_is_a_valid_session() -> None:
    events = [
        attrs(
            "x1",
            T0,
            userType="REAL_USER",
            applicationType="MOBILE_APPLICATION",
            country="Austria",
            screenOrientation="PORTRAIT",
            displayResolution="FHD",
            stringProperties=[{"key": "plan", "value": "gold"}],
        ),
        action("a1", T0, 2_000, application="app", type="Custom", javascriptErrorCount=0),
        action("a2", T0 + 5 * SECOND, 200, application="app", type="Xhr", requestErrorCount=1),
        happening("h1", T0 + 6 * SECOND, EventType.RageTap, page="/home"),
        error("c1", T0 + 7 * SECOND, EventType.Crash, name="NullPointer"),
        end("end", T0 + 8 * SECOND),
    ]
    doc = assemble(TENANT, SESSION, complete(events), attributes_of(events), 3, DEFAULTS)
    session = decode_session(msgspec.json.encode(doc))
    assert session.identity == (TENANT, SESSION, T0)
    assert session.endTime == T0 + 5_200  # the end of the last action: not the crash after it
    assert session.partNumber == 3
    assert session.userActions is not None and len(session.userActions) == 2
    assert session.userExperienceScore is UserExperienceScore.FRUSTRATED
    assert session.endReason is EndReason.END_EVENT


# === parse_events ==================================================================================


def line(kind: str = "action", event_id: str = "ev1", ts: int = T0, **payload: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "tenantId": TENANT,
        "sessionId": SESSION,
        "eventId": event_id,
        "timestamp": ts,
        **payload,
    }


def ndjson(*lines: dict[str, Any] | bytes) -> bytes:
    return b"\n".join(x if isinstance(x, bytes) else msgspec.json.encode(x) for x in lines)


GOOD_ACTION = line("action", "a1", action={"name": "Loading of page /", "type": "Load", "startTime": T0})


def problems(body: bytes) -> list[DocumentProblem]:
    with pytest.raises(RejectedBody) as info:
        parse_events(body)
    assert str(info.value)
    return info.value.problems


def test_parse_every_event_type() -> None:
    body = ndjson(
        line("attributes", "x1", attributes={"city": "Linz", "userType": "REAL_USER"}),
        GOOD_ACTION,
        b"",
        line("event", "h1", event={"type": "RageClick", "startTime": T0}),
        line("error", "e1", error={"type": "Crash", "name": "boom", "startTime": T0}),
        line("end", "end"),
    ).replace(b"\n", b"\r\n")
    received = parse_events(body + b"\r\n\r\n")
    assert [type(r.event) for r in received] == [
        AttributesEvent,
        ActionEvent,
        SessionEventEvent,
        ErrorEvent,
        EndEvent,
    ]
    assert [r.event.eventId for r in received] == ["x1", "a1", "h1", "e1", "end"]
    assert all(r.event.key == (TENANT, SESSION) and r.event.timestamp == T0 for r in received)
    assert received[1].raw == msgspec.json.encode(GOOD_ACTION)  # the line as sent, without its \r
    first = received[0].event
    assert isinstance(first, AttributesEvent) and first.attributes == {
        "city": "Linz",
        "userType": "REAL_USER",
    }
    action_event = received[1].event
    assert isinstance(action_event, ActionEvent) and action_event.action.startTime == T0


def _without(event: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != key}


@pytest.mark.parametrize(
    ("bad", "path", "message"),
    [
        pytest.param(b'{"type": "action", "tenantId": ', "", "invalid JSON", id="broken-json"),
        pytest.param(b'{"type": "end", "tenantId": "\xff"}', "", "not UTF-8: byte 0xff", id="not-utf8"),
        pytest.param(b'{"type": "end", "x": ' + b"[" * 1100 + b"]" * 1100 + b"}", "", "depth", id="too-deep"),
        pytest.param(line("click", "c1"), "type", "'click'", id="unknown-type"),
        pytest.param(_without(line("end"), "type"), "type", "missing; expected one of", id="missing-type"),
        pytest.param(
            _without(line("end"), "eventId"), "eventId", "required field is missing", id="missing-eventId"
        ),
        pytest.param(
            _without(line("end"), "timestamp"),
            "timestamp",
            "required field is missing",
            id="missing-timestamp",
        ),
        pytest.param(line("end", ts=T0 // 1000), "timestamp", "100000000000", id="timestamp-in-seconds"),
        pytest.param(line("end", "e", tenantId=""), "tenantId", "must not be empty", id="empty-tenantId"),
        pytest.param(line("end", "e", tenantId="t\x00"), "tenantId", "NUL", id="nul-tenantId"),
        pytest.param(line("end", "e\x00"), "eventId", "NUL", id="nul-eventId"),
        pytest.param(
            line("end", "e", tenantId="\u00e9" * 200, sessionId="\u00e9" * 200),
            "sessionId",
            "Elasticsearch _id too long",
            id="ids-too-long-for-an-_id",
        ),
        pytest.param(
            line("attributes", attributes={"geolocationCountryName": "Aus\x00tria"}),
            "attributes.geolocationCountryName",
            "NUL",
            id="nul-country",
        ),
        pytest.param(
            line("action", action={"name": "x"}), "action.startTime", "start time", id="no-startTime"
        ),
        pytest.param(line("action", action={"startTime": T0 // 1000}), "action.startTime", "", id="start-s"),
        pytest.param(
            line("action", action={"startTime": T0, "endTime": T0 - 1}),
            "action.endTime",
            "before action.startTime",
            id="ends-before-it-starts",
        ),
        pytest.param(
            line("action", action={"startTime": T0, "duration": -5}),
            "action.duration",
            "negative",
            id="negative",
        ),
        pytest.param(
            line("action", action={"startTime": T0 - 7 * HOUR}),
            "action.startTime",
            "more than 6 h from the event's timestamp",
            id="started-7-h-before",
        ),
        pytest.param(
            line("action", action={"startTime": T0, "endTime": 4_102_444_800_000}),
            "action.endTime",
            "more than 6 h",
            id="ends-in-2100",
        ),
        pytest.param(
            line("action", action={"startTime": T0, "duration": 10**13}),
            "action.duration",
            "longer than a session may last",
            id="lasts-300-years",
        ),
        pytest.param(
            line("action", action={"startTime": T0, "type": "Tap"}), "action.type", "", id="bad-type"
        ),
        pytest.param(line("error", error={"type": "Oops"}), "error.type", "", id="bad-error-type"),
        pytest.param(
            line("attributes", attributes={"userActionCount": 3}),
            "attributes.userActionCount",
            "computed",
            id="computed-userActionCount",
        ),
        pytest.param(
            line("attributes", attributes={"startTime": T0}),
            "attributes.startTime",
            "computed",
            id="computed-start",
        ),
        pytest.param(
            line("attributes", attributes={"country": 5}),
            "attributes.country",
            "expected string, got integer",
            id="country-5",
        ),
        pytest.param(
            line("attributes", attributes={"userType": "HUMAN"}),
            "attributes.userType",
            "invalid value 'HUMAN'",
            id="bad-enum",
        ),
        pytest.param(line("attributes", attributes=5), "attributes", "", id="attributes-not-an-object"),
    ],
)
def test_parse_reports_each_problem_with_line_and_field_path(
    bad: dict[str, Any] | bytes, path: str, message: str
) -> None:
    found = problems(ndjson(GOOD_ACTION, bad, line("end", "end")))
    assert [p.location for p in found] == ["line 2"], found
    assert found[0].path == path, (
        f"BUG: problem {found[0]} should name the field path {path!r}, got {found[0].path!r}"
        if path in ("eventId", "timestamp", "type")
        else f"wrong path in {found[0]}"
    )
    assert message in found[0].message


def test_parse_reports_every_bad_line_and_accepts_none() -> None:
    body = ndjson(
        GOOD_ACTION,
        line("end", ts=1_700_000_000),
        b"",
        line("attributes", "x1", attributes={"country": 5, "userType": "HUMAN", "bounce": True}),
        line("end", "end"),
        b"not json",
    )
    found = problems(body)
    assert [(p.location, p.path) for p in found] == [
        ("line 2", "timestamp"),
        ("line 4", "attributes.bounce"),
        ("line 4", "attributes.userType"),
        ("line 4", "attributes.country"),
        ("line 6", ""),
    ]
    assert str(found[1]).startswith("line 4, attributes.bounce: ")


def test_parse_lists_every_problem_of_an_event_in_the_order_of_its_line() -> None:
    bad = {
        "type": "action",
        "tenantId": TENANT,
        "sessionId": 5,
        "timestamp": "today",
        "action": {"startTime": "later", "type": "Tap"},
    }
    found = problems(ndjson(GOOD_ACTION, bad))
    assert [(p.location, p.path) for p in found] == [
        ("line 2", "sessionId"),
        ("line 2", "timestamp"),
        ("line 2", "action.type"),
        ("line 2", "action.startTime"),
        ("line 2", "eventId"),  # missing: after what the line holds
    ]
    assert found[0].message == "expected string, got integer"
    assert "invalid value 'Tap'; expected one of" in found[2].message
    assert found[4].message == "required field is missing"


@pytest.mark.parametrize(
    ("kind", "said"),
    [([], "array"), ({"a": 1}, "object"), (None, "null"), (True, "boolean"), (1, "integer")],
)
def test_parse_refuses_a_type_that_is_not_text_in_json_words(kind: object, said: str) -> None:
    # a list or an object is no key of the models: the refusal, not a TypeError (a 500)
    found = problems(
        ndjson({"type": kind, "tenantId": "t", "sessionId": "s", "eventId": "e", "timestamp": T0})
    )
    assert [(p.location, p.path, p.message) for p in found] == [
        (
            "line 1",
            "type",
            f"expected string, got {said}; expected one of attributes, action, event, error, end",
        )
    ]


def test_parse_checks_an_event_of_unknown_type_for_the_fields_every_event_has() -> None:
    found = problems(ndjson({"type": "click", "tenantId": "", "timestamp": T0}))
    assert [(p.path, p.message) for p in found] == [
        ("type", "invalid value 'click'; expected one of attributes, action, event, error, end"),
        ("tenantId", "must not be empty"),
        ("sessionId", "required field is missing"),
        ("eventId", "required field is missing"),
    ]


def test_parse_names_numbers_no_double_holds_and_the_problems_beside_them() -> None:
    """``1e999`` is JSON that msgspec and orjson will not read: where the model wants a number it
    is a problem of its own; in a field of the sender's own it hides nothing else."""
    # Lines written by hand: 1e999 is no value a Python encoder writes.
    body = b"\n".join(
        [
            b'{"type":"end","tenantId":"t","sessionId":"s","eventId":"e1","timestamp":1e999}',
            b'{"type":"nonsense","tenantId":"t","sessionId":"s","eventId":"e2","timestamp":%d,"zz":1e999}'
            % T0,
            b'{"type":"end","tenantId":5,"sessionId":"s","eventId":"e3","timestamp":%d,"zz":-1e999}' % T0,
            b'{"type":"action","tenantId":"t","sessionId":"s","eventId":"e4","timestamp":%d,'
            b'"action":{"startTime":%d,"duration":1e999}}' % (T0, T0),
            b'{"type":"end","tenantId":"t","sessionId":"s","eventId":"e5","timestamp":%d,"zz":1e999}' % T0,
            # attributes may hold values of any type, but not those: named where they are
            b'{"type":"attributes","tenantId":"t","sessionId":"s","eventId":"e6","timestamp":%d,'
            b'"attributes":{"screenHeight":1e999,"a":[1,{"b":-1e999}]}}' % T0,
        ]
    )
    found = problems(body)
    assert [(p.location, p.path, p.message.split(";")[0]) for p in found] == [
        ("line 1", "timestamp", "number out of range for a 64-bit float"),
        ("line 2", "type", "invalid value 'nonsense'"),
        ("line 3", "tenantId", "expected string, got integer"),
        ("line 4", "action.duration", "number out of range for a 64-bit float"),
        ("line 6", "attributes.screenHeight", "number out of range for a 64-bit float"),
        ("line 6", "attributes.a[1].b", "number out of range for a 64-bit float"),
    ]  # line 5 is a good event: what it holds of its own is kept as sent


@pytest.mark.parametrize("body", [b"", b"\n", b"  \r\n\n "])
def test_parse_empty_body(body: bytes) -> None:
    assert problems(body) == [DocumentProblem("body", "", "no events in the request body")]


# === order and duplicates do not matter (properties) =================================================

TIME = st.integers(0, 40).map(lambda k: T0 + k * 500)  # few distinct times: many ties
ATTRIBUTE_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "city": st.sampled_from(["Linz", "Wien", "Graz"]),
    "country": st.sampled_from(["Austria", "Poland"]),
    "userType": st.sampled_from(["REAL_USER", "ROBOT", "SYNTHETIC"]),
    "applicationType": st.sampled_from(["WEB_APPLICATION", "MOBILE_APPLICATION", "CUSTOM_APPLICATION"]),
    "browserFamily": st.sampled_from(["Chrome", "Firefox"]),
}
PROPERTY_SETTINGS = SessionizerSettings(
    apdex={"shop": ApdexThresholds(1_000, 4_000), "shop|Xhr": ApdexThresholds(300, 1_200)}
)


@st.composite
def sessions(draw: st.DrawFn, min_actions: int = 1, max_actions: int = 6) -> list[RumEvent]:
    """The events of one session: attributes, actions, events, errors, with or without an end."""
    events: list[RumEvent] = []
    for i in range(draw(st.integers(0, 3))):
        keys = draw(st.lists(st.sampled_from(sorted(ATTRIBUTE_VALUES)), min_size=1, max_size=3, unique=True))
        events.append(attrs(f"x{i}", draw(TIME), **{k: draw(ATTRIBUTE_VALUES[k]) for k in keys}))
    for i in range(draw(st.integers(min_actions, max_actions))):
        start = draw(TIME)
        ms = draw(st.one_of(st.none(), st.sampled_from([0, 200, 900, 2_500, 3_500, 13_000])))
        delay = draw(st.sampled_from([None, 0, 500, 3_000]))  # reported when it ended, or later
        fields: dict[str, Any] = {
            "application": draw(st.sampled_from(["shop", "blog", None])),
            "type": draw(st.sampled_from(["Load", "Xhr", "Custom", None])),
            "javascriptErrorCount": draw(st.sampled_from([None, 0, 0, 1])),
        }
        if ms is None and draw(st.booleans()):
            fields["duration"] = draw(st.sampled_from([100, 5_000]))
        events.append(action(f"a{i}", start, ms, ts=None if delay is None else start + delay, **fields))
    kinds = [EventType.RageClick, EventType.RageTap, EventType.UserTag, EventType.PageChange]
    for i in range(draw(st.integers(0, 3))):
        events.append(happening(f"h{i}", draw(TIME), draw(st.sampled_from(kinds))))
    for i in range(draw(st.integers(0, 3))):
        events.append(error(f"e{i}", draw(TIME), draw(st.sampled_from([EventType.Error, EventType.Crash]))))
    if draw(st.booleans()):
        events.append(end("end", draw(TIME)))
    return events


NOW = st.one_of(TIME, TIME.map(lambda t: t + 10 * MINUTE), TIME.map(lambda t: t + 31 * MINUTE))


@PROPERTY
@given(st.data())
def test_any_order_gives_the_same_part_and_document(data: st.DataObject) -> None:
    events = data.draw(sessions())
    now = data.draw(NOW)
    shuffled = data.draw(st.permutations(events))
    s = PROPERTY_SETTINGS
    assert next_part(shuffled, now, s) == next_part(events, now, s)
    assert due_at(shuffled, s) == due_at(events, s)
    assert documents_of(shuffled, now, s) == documents_of(events, now, s)


@PROPERTY
@given(st.data())
def test_any_order_gives_the_same_parts_over_the_action_limit(data: st.DataObject) -> None:
    s = SessionizerSettings(action_limit=5, apdex=PROPERTY_SETTINGS.apdex)
    events = data.draw(sessions(min_actions=6, max_actions=17))
    shuffled = data.draw(st.permutations(events))
    now = T0 + DAY
    expected = documents_of(events, now, s)
    assert len(expected) >= 2
    assert documents_of(shuffled, now, s) == expected
    parts = [msgspec.json.decode(d) for d in expected]
    assert [p["partNumber"] for p in parts] == list(range(1, len(parts) + 1))
    assert [p["endReason"] for p in parts][:-1] == ["USER_ACTION_LIMIT"] * (len(parts) - 1)
    assert all(p["userActionCount"] == 5 for p in parts[:-1])
    assert sum(p["userActionCount"] for p in parts) == sum(isinstance(e, ActionEvent) for e in events)


def test_a_resent_event_counts_once() -> None:
    events = [
        attrs("x", T0, city="Linz"),
        action("a1", T0),
        action("a2", T0 + SECOND),
        end("end", T0 + 5 * SECOND),
    ]
    twice = [*events, events[1], events[3]]
    now = T0 + 5 * SECOND
    doc = msgspec.json.decode(documents_of(twice, now, DEFAULTS)[0])
    assert next_part(twice, now, DEFAULTS) == next_part(events, now, DEFAULTS), (
        "BUG (or contract gap): next_part() keeps an event given twice (same eventId) twice; its module"
        " docstring expects duplicates to be dropped by the caller (the store does), the brief requires"
        f" next_part/assemble to be unaffected by duplication; userActionCount here: {doc['userActionCount']}"
    )
    assert documents_of(twice, now, DEFAULTS) == documents_of(events, now, DEFAULTS)


@PROPERTY
@given(st.data())
def test_any_duplication_gives_the_same_part_and_document(data: st.DataObject) -> None:
    events = data.draw(sessions())
    now = data.draw(NOW)
    extra = data.draw(st.lists(st.sampled_from(events), min_size=1, max_size=len(events)))
    resent = data.draw(st.permutations([*events, *extra]))
    s = PROPERTY_SETTINGS
    assert next_part(resent, now, s) == next_part(events, now, s), (
        "BUG (or contract gap): duplicated events (same eventId) change next_part(); see test_a_resent_event_counts_once"
    )
    assert documents_of(resent, now, s) == documents_of(events, now, s)


@PROPERTY
@given(st.data())
def test_duplicated_attributes_do_not_change_the_document(data: st.DataObject) -> None:
    events = data.draw(sessions())
    now = T0 + DAY
    extra = [e for e in events if isinstance(e, AttributesEvent)]
    resent = data.draw(st.permutations([*events, *extra]))
    assert documents_of(resent, now, PROPERTY_SETTINGS) == documents_of(events, now, PROPERTY_SETTINGS)


def test_events_far_ahead_of_the_server_clock_are_refused() -> None:
    now = 1_800_000_000_000
    line = b'{"type":"end","tenantId":"t","sessionId":"s","eventId":"e","timestamp":%d}'
    assert parse_events(line % (now + 4 * 60_000), now)  # a little drift is fine
    with pytest.raises(RejectedBody) as refused:
        parse_events(line % (now + 3_600_000), now)
    [problem] = refused.value.problems
    assert (problem.location, problem.path) == ("line 1", "timestamp")
    assert "ahead of the server's clock" in problem.message


def test_an_action_ending_far_ahead_of_the_server_clock_is_refused() -> None:
    """Its end makes the session's: a session cannot end hours from now."""
    now = 1_800_000_000_000
    line = (
        b'{"type":"action","tenantId":"t","sessionId":"s","eventId":"a","timestamp":%d,'
        b'"action":{"name":"a","startTime":%d,"endTime":%d}}'
    )
    assert parse_events(line % (now, now - 1_000, now + 4 * 60_000), now)  # a little drift is fine
    with pytest.raises(RejectedBody) as refused:
        parse_events(line % (now, now - 1_000, now + 5 * 3_600_000), now)
    [problem] = refused.value.problems
    assert (problem.location, problem.path) == ("line 1", "action.endTime")
    assert problem.message == "18000 s ahead of the server's clock (at most 300 s)"


def test_an_event_larger_than_the_limit_is_refused_by_its_line() -> None:
    """The sessionizer holds a session's events together: one event of megabytes, 200 times over,
    would make a session of gigabytes."""
    line = b'{"type":"action","tenantId":"t","sessionId":"s","eventId":"a","timestamp":1800000000000,"action":{"name":"%s","startTime":1800000000000}}'
    fits = line % (b"x" * (MAX_EVENT_BYTES - len(line) + 2))
    assert len(fits) == MAX_EVENT_BYTES and parse_events(fits)
    with pytest.raises(RejectedBody) as refused:
        parse_events(fits + b"\n" + line % (b"x" * MAX_EVENT_BYTES))
    [problem] = refused.value.problems
    assert (problem.location, problem.message) == (
        "line 2",
        f"{MAX_EVENT_BYTES + len(line) - 2} bytes: an event takes at most 65536",
    )
