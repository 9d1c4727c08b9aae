"""The sessionizer at work on the real SQLite store: RUM events in (``parse_events`` + ``accept``),
completed sessions out (``sweep`` appends them to the session log), with an injected clock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from sessionexport.export.notifier import LogNotifier
from sessionexport.ingest.assembly import Sessionizer
from sessionexport.ingest.events import parse_events
from sessionexport.ingest.sessionizer import SessionizerSettings
from sessionexport.model.scores import ApdexThresholds
from sessionexport.retention import purge_expired
from sessionexport.store import Store, create_store
from sessionexport.store.records import EventsResult
from tests.support.backend import backend_database

pytestmark = pytest.mark.store  # on PostgreSQL too (tests/support/backend.py)

T0 = 1_700_000_000_000
SECOND = 1_000
MINUTE = 60 * SECOND
DAY = 24 * 60 * MINUTE
TENANT = "tenant1"
SETTLE = 2 * SECOND
WEB_TIMEOUT = MINUTE
APP_TIMEOUT = 20 * SECOND
SETTINGS = SessionizerSettings(
    settle_ms=SETTLE,
    web_timeout_ms=WEB_TIMEOUT,
    app_timeout_ms=APP_TIMEOUT,
    action_limit=3,
    arrivals_quiet_ms=SETTLE,  # the timeouts in event time, as these tests count them
)


@dataclass
class Clock:
    now: int = T0

    def __call__(self) -> int:
        return self.now

    def set(self, now: int) -> None:
        self.now = now


# --- events as a sender writes them ------------------------------------------------------------


def event(kind: str, event_id: str, ts: int, session: str = "s1", **payload: Any) -> bytes:
    line = {"type": kind, "tenantId": TENANT, "sessionId": session, "eventId": event_id, "timestamp": ts}
    return orjson.dumps(line | payload)


def attrs(event_id: str, ts: int, session: str = "s1", **attributes: Any) -> bytes:
    return event("attributes", event_id, ts, session, attributes=attributes)


def act(event_id: str, start: int, ms: int = 500, session: str = "s1", **fields: Any) -> bytes:
    """A user action reported when it ended."""
    payload = {"name": event_id, "startTime": start, "endTime": start + ms, **fields}
    return event("action", event_id, start + ms, session, action=payload)


def err(event_id: str, ts: int, session: str = "s1", kind: str = "Error") -> bytes:
    return event("error", event_id, ts, session, error={"type": kind, "name": event_id, "startTime": ts})


def happened(event_id: str, ts: int, session: str = "s1", kind: str = "RageClick") -> bytes:
    return event("event", event_id, ts, session, event={"type": kind, "startTime": ts})


def end(event_id: str, ts: int, session: str = "s1") -> bytes:
    return event("end", event_id, ts, session)


async def send(sessionizer: Sessionizer, *lines: bytes) -> EventsResult:
    """One ``POST /api/v2/rum/events`` request, as the route handles it."""
    return await sessionizer.accept(parse_events(b"\n".join(lines)))


async def drain(sessionizer: Sessionizer) -> int:
    """Sweep until nothing more completes (each sweep completes at most one part per session)."""
    total = 0
    for _ in range(100):
        completed = await sessionizer.sweep()
        if not completed:
            return total
        total += completed
    raise AssertionError("the sweeps never stop completing sessions")


async def logged(store: Store) -> list[dict[str, Any]]:
    """The session log's documents in log order."""
    entries = await store.read_log(0, 10_000)
    return [orjson.loads(e.body) for e in entries]


def new_sessionizer(store: Store, clock: Clock, settings: SessionizerSettings = SETTINGS) -> Sessionizer:
    return Sessionizer(store, LogNotifier(), settings, clock=clock)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sessionizer(store: Store, clock: Clock) -> Sessionizer:
    return new_sessionizer(store, clock)


def web_session(session: str = "s1") -> list[bytes]:
    """Two actions (satisfied, tolerating), an error, a rage click, then the end: over at T0 + 8 s."""
    return [
        attrs("x1", T0, session, userType="REAL_USER", applicationType="WEB_APPLICATION", country="Austria"),
        act("a1", T0, 1 * SECOND, session, application="shop", type="Load"),
        act("a2", T0 + 2 * SECOND, 5 * SECOND, session, application="shop", type="Xhr"),
        err("e1", T0 + 3 * SECOND, session),
        happened("r1", T0 + 4 * SECOND, session),
        end("end", T0 + 8 * SECOND, session),
    ]


# --- accepting events ----------------------------------------------------------------------------


async def test_accepted_duplicate_and_late_counts(sessionizer: Sessionizer, clock: Clock) -> None:
    clock.set(T0 + SECOND)
    lines = web_session()
    assert await send(sessionizer, *lines[:3], lines[1]) == EventsResult(accepted=3, duplicates=1, late=0)
    # re-sent events are duplicates (same tenantId, sessionId, eventId), whatever their content
    again = act("a2", T0 + 9 * SECOND, 1)
    assert await send(sessionizer, lines[0], again, lines[3]) == EventsResult(
        accepted=1, duplicates=2, late=0
    )
    # the same event id in another session is another event
    assert await send(sessionizer, act("a1", T0, session="s2")) == EventsResult(1, 0, 0)
    assert await send(sessionizer, *lines[4:]) == EventsResult(2, 0, 0)
    clock.set(T0 + 10 * SECOND)
    assert await drain(sessionizer) == 1  # s1 ended; s2 is waiting for its timeout
    (doc,) = await logged(sessionizer.store)
    assert [a["endTime"] for a in doc["userActions"]] == [T0 + SECOND, T0 + 7 * SECOND], "first copy kept"
    late = await send(sessionizer, act("a1", T0), err("e9", T0 + 5 * SECOND), act("a9", T0 + 9 * SECOND))
    assert late == EventsResult(accepted=1, duplicates=0, late=2)


# --- when a session is looked at ----------------------------------------------------------------


async def test_nothing_is_looked_at_before_settle_ms_of_quiet(sessionizer: Sessionizer, clock: Clock) -> None:
    store = sessionizer.store
    clock.set(T0 + 10 * SECOND)
    await send(sessionizer, *web_session())  # complete: it has its end event
    clock.set(T0 + 10 * SECOND + SETTLE - 1)
    assert await sessionizer.sweep() == 0
    assert await store.due_sessions(clock.now, 10) == []
    # another event restarts the quiet time
    await send(sessionizer, act("a3", T0 + 7 * SECOND, 100))
    clock.set(T0 + 10 * SECOND + SETTLE)
    assert await sessionizer.sweep() == 0
    assert await logged(store) == []
    clock.set(T0 + 10 * SECOND + 2 * SETTLE - 1)
    assert await sessionizer.sweep() == 1
    (doc,) = await logged(store)
    assert doc["userActionCount"] == 3, "the event that came within the settle time is in the session"


async def test_duplicates_do_not_restart_the_quiet_time(sessionizer: Sessionizer, clock: Clock) -> None:
    clock.set(T0 + 10 * SECOND)
    lines = web_session()
    await send(sessionizer, *lines)
    clock.set(T0 + 10 * SECOND + SETTLE - 1)
    assert await send(sessionizer, *lines) == EventsResult(0, len(lines), 0)
    clock.set(T0 + 10 * SECOND + SETTLE)
    assert await sessionizer.sweep() == 1


async def test_inactivity_timeout_of_the_application_type(sessionizer: Sessionizer, clock: Clock) -> None:
    store = sessionizer.store
    clock.set(T0 + SECOND)
    await send(
        sessionizer,
        attrs("x", T0, "mob", applicationType="MOBILE_APPLICATION"),
        act("a1", T0, 500, "mob"),
        act("w1", T0, 500, "web"),
    )
    last = T0 + 500
    clock.set(T0 + SECOND + SETTLE)
    assert await sessionizer.sweep() == 0, "looked at, not timed out yet"
    clock.set(last + APP_TIMEOUT - 1)
    assert await sessionizer.sweep() == 0
    clock.set(last + APP_TIMEOUT)
    assert await sessionizer.sweep() == 1
    clock.set(last + WEB_TIMEOUT - 1)
    assert await sessionizer.sweep() == 0
    clock.set(last + WEB_TIMEOUT)
    assert await sessionizer.sweep() == 1
    docs = await logged(store)
    assert [(d["userSessionId"], d["endReason"]) for d in docs] == [("mob", "TIMEOUT"), ("web", "TIMEOUT")]
    assert [d["endTime"] for d in docs] == [last, last], "the idle time is not part of the session"


async def test_a_backlog_sent_in_batches_after_the_timeout_makes_one_session(
    store: Store, clock: Clock
) -> None:
    """A mobile app sends what it buffered offline, 15 minutes on (past its 10 min timeout), in two
    requests 6 s apart: the session waits for arrivals to go quiet, so no batch is late."""
    sessionizer = new_sessionizer(store, clock, SessionizerSettings())  # 10 min, arrivals quiet 2 min
    mobile = {"applicationType": "MOBILE_APPLICATION"}
    clock.set(T0 + 15 * MINUTE)
    first = await send(
        sessionizer,
        attrs("x", T0, "m1", **mobile),
        act("a1", T0, session="m1"),
        act("a2", T0 + MINUTE, session="m1"),
    )
    clock.set(clock.now + 6 * SECOND)
    assert await sessionizer.sweep() == 0, "arrivals not quiet yet"
    second = await send(
        sessionizer, act("a3", T0 + 2 * MINUTE, session="m1"), end("end", T0 + 3 * MINUTE, "m1")
    )
    assert (first.late, second.late) == (0, 0)
    clock.set(clock.now + 2 * MINUTE)
    assert await drain(sessionizer) == 1
    (doc,) = await logged(store)
    assert (doc["userActionCount"], doc["endReason"]) == (3, "END_EVENT")


async def test_a_device_clock_behind_keeps_its_session_open_for_its_own_timeout(
    store: Store, clock: Clock
) -> None:
    """Each action is 40 minutes old by the server's clock (past the 30 min web timeout) when it
    comes in: the device is read as 40 min behind, so a pause of 5 min (past the 2 min quiet
    time) keeps the session open, and it times out 30 min after its last action by the device's
    clock. Read by the server's clock, the action after the pause was late, and lost."""
    sessionizer = new_sessionizer(store, clock, SessionizerSettings())
    behind = 40 * MINUTE
    for n in range(3):
        clock.set(T0 + behind + n * MINUTE)
        assert (await send(sessionizer, act(f"a{n}", T0 + n * MINUTE))).late == 0
        clock.set(clock.now + 30 * SECOND)
        assert await sessionizer.sweep() == 0
    clock.set(T0 + behind + 7 * MINUTE)  # a pause of 5 min
    assert await drain(sessionizer) == 0, "still open"
    assert (await send(sessionizer, act("a3", T0 + 7 * MINUTE))).late == 0
    last = T0 + 7 * MINUTE
    clock.set(last + behind + 30 * MINUTE - MINUTE)  # the default web timeout
    assert await drain(sessionizer) == 0
    clock.set(last + behind + 30 * MINUTE + MINUTE)
    assert await drain(sessionizer) == 1
    (doc,) = await logged(store)
    assert (doc["userActionCount"], doc["endReason"]) == (4, "TIMEOUT")


# --- the completed session in the log --------------------------------------------------------------


async def test_completed_session_joins_the_log_once_with_computed_fields(
    sessionizer: Sessionizer, clock: Clock
) -> None:
    store = sessionizer.store
    clock.set(T0 + 9 * SECOND)
    await send(sessionizer, *web_session())
    clock.set(T0 + 9 * SECOND + SETTLE)
    assert await sessionizer.sweep() == 1
    assert await sessionizer.sweep() == 0
    clock.set(T0 + DAY)
    assert await sessionizer.sweep() == 0
    assert await store.due_sessions(T0 + 2 * DAY, 100) == [], "nothing of the session is open any more"

    stored = await store.recent_sessions(user_session_id="s1")
    assert len(stored) == 1
    assert (stored[0].tenant_id, stored[0].start_time, stored[0].end_time) == (TENANT, T0, T0 + 7 * SECOND)
    assert stored[0].received_at == T0 + 9 * SECOND + SETTLE
    (entry,) = await store.read_log(0, 100)
    assert (entry.user_type, entry.application_type, entry.country) == (
        "REAL_USER",
        "WEB_APPLICATION",
        "Austria",
    )
    assert entry.applications == ("shop",)
    assert entry.body == stored[0].body

    doc = orjson.loads(entry.body)
    assert doc["tenantId"] == TENANT and doc["userSessionId"] == "s1"
    assert (doc["startTime"], doc["endTime"], doc["duration"]) == (T0, T0 + 7 * SECOND, 7 * SECOND)
    assert (doc["userActionCount"], doc["totalErrorCount"], doc["bounce"]) == (2, 1, False)
    assert (doc["hasError"], doc["hasCrash"], doc["numberOfRageClicks"], doc["numberOfRageTaps"]) == (
        True,
        False,
        1,
        0,
    )
    assert [a["apdexCategory"] for a in doc["userActions"]] == ["SATISFIED", "TOLERATING"]
    # S = 3, T = 3, F = 1 (error) + 2 (rage click): 3 / 9 > 30%
    assert doc["userExperienceScore"] == "FRUSTRATED"
    assert doc["endReason"] == "END_EVENT"
    assert "partNumber" not in doc
    assert (doc["userType"], doc["country"]) == ("REAL_USER", "Austria")


async def test_apdex_thresholds_from_the_settings(store: Store, clock: Clock) -> None:
    settings = SessionizerSettings(
        settle_ms=SETTLE, apdex={"shop|Xhr": ApdexThresholds(tolerated_ms=1_000, frustrated_ms=4_000)}
    )
    sessionizer = new_sessionizer(store, clock, settings)
    clock.set(T0 + 9 * SECOND)
    await send(sessionizer, *web_session())
    clock.set(T0 + 9 * SECOND + SETTLE)
    assert await sessionizer.sweep() == 1
    (doc,) = await logged(store)
    assert [a["apdexCategory"] for a in doc["userActions"]] == ["SATISFIED", "FRUSTRATED"]


async def test_events_after_their_part_completed_are_late_and_not_kept(
    sessionizer: Sessionizer, clock: Clock
) -> None:
    store = sessionizer.store
    clock.set(T0 + 9 * SECOND)
    await send(sessionizer, *web_session())
    clock.set(T0 + 9 * SECOND + SETTLE)
    assert await sessionizer.sweep() == 1
    late = await send(sessionizer, err("e-late", T0 + 5 * SECOND), act("a1", T0, 1 * SECOND), end("end", T0))
    assert late == EventsResult(accepted=0, duplicates=0, late=3)
    clock.set(T0 + DAY)
    assert await drain(sessionizer) == 0
    assert await store.due_sessions(T0 + 2 * DAY, 100) == []
    (doc,) = await logged(store)
    assert doc["totalErrorCount"] == 1, "the late error is not in the session"


async def test_an_event_within_the_timeout_of_a_session_that_timed_out_is_late(
    sessionizer: Sessionizer, clock: Clock
) -> None:
    """It would have kept the session open: delivered after the session was completed (a client
    that lags, a backlog after an outage), it is counted late, not made a one-action session of
    its own. An event after the timeout begins a new session."""
    clock.set(T0 + SECOND)
    await send(sessionizer, act("a1", T0, 500))
    clock.set(T0 + 500 + WEB_TIMEOUT + SETTLE)
    assert await drain(sessionizer) == 1
    within = await send(sessionizer, act("a2", T0 + 30 * SECOND, 500))
    assert (within.accepted, within.late) == (0, 1)
    after = await send(sessionizer, act("a3", T0 + 500 + WEB_TIMEOUT + SECOND, 500))
    assert (after.accepted, after.late) == (1, 0)
    clock.set(T0 + DAY)
    assert await drain(sessionizer) == 1
    assert [d["userActionCount"] for d in await logged(sessionizer.store)] == [1, 1]


async def test_an_end_event_that_arrived_before_its_actions_ends_them(
    sessionizer: Sessionizer, clock: Clock
) -> None:
    """The end came first, alone: it waits for the actions it ends, instead of making no session
    and the actions after it late."""
    clock.set(T0 + 6 * SECOND)
    await send(sessionizer, end("end", T0 + 5 * SECOND))
    clock.set(T0 + 6 * SECOND + SETTLE)
    assert await drain(sessionizer) == 0
    accepted = await send(sessionizer, act("a1", T0), act("a2", T0 + 2 * SECOND))
    assert (accepted.accepted, accepted.late) == (2, 0)
    clock.set(T0 + 6 * SECOND + 2 * SETTLE)
    assert await drain(sessionizer) == 1
    (doc,) = await logged(sessionizer.store)
    assert (doc["endReason"], doc["userActionCount"]) == ("END_EVENT", 2)


async def test_a_later_session_under_the_same_id_and_start_is_kept(
    sessionizer: Sessionizer, clock: Clock
) -> None:
    """A session completed, then another under the same session id whose first action began in
    the same millisecond: the log would take it for a duplicate (its identity has the start), and
    its events were dropped with it. It starts a millisecond later instead."""
    clock.set(T0 + 2 * SECOND)
    await send(sessionizer, act("a1", T0), end("end", T0 + SECOND))
    clock.set(T0 + 2 * SECOND + SETTLE)
    assert await drain(sessionizer) == 1
    await send(sessionizer, act("a2", T0, 3 * SECOND), act("a3", T0 + 4 * SECOND))
    clock.set(T0 + DAY)
    assert await drain(sessionizer) == 1
    first, second = await logged(sessionizer.store)
    assert (first["startTime"], second["startTime"]) == (T0, T0 + 1)
    assert (second["userActionCount"], "partNumber" in second) == (2, False)


async def test_a_session_that_ended_at_a_gap_keeps_its_own_attributes(
    sessionizer: Sessionizer, clock: Clock
) -> None:
    """Not those of the session after the gap (another user may have signed in meanwhile)."""
    clock.set(T0 + DAY)
    await send(
        sessionizer,
        attrs("x1", T0, "s1", applicationType="WEB_APPLICATION", country="Austria", userId="alice"),
        act("a1", T0),
        attrs("x2", T0 + 40 * MINUTE, "s1", country="Germany", userId="bob"),
        act("a2", T0 + 40 * MINUTE),
    )
    clock.set(T0 + DAY + 3 * MINUTE)  # quiet: both are complete, long since timed out
    assert await drain(sessionizer) == 2
    first, second = await logged(sessionizer.store)
    assert (first["country"], first["userId"], first["endReason"]) == ("Austria", "alice", "TIMEOUT")
    assert (second["country"], second["userId"]) == ("Germany", "bob")


# --- parts -------------------------------------------------------------------------------------------


async def test_session_over_the_action_limit_becomes_numbered_parts(
    sessionizer: Sessionizer, clock: Clock
) -> None:
    store = sessionizer.store
    lines = [
        attrs("x", T0, city="Linz"),
        *(act(f"a{i}", T0 + i * SECOND, 100) for i in range(7)),
        err("e1", T0 + 1_500),
        end("end", T0 + 10 * SECOND),
    ]
    clock.set(T0 + 11 * SECOND)
    await send(sessionizer, *lines)
    clock.set(T0 + 11 * SECOND + SETTLE)
    assert await sessionizer.sweep() == 1  # the first part
    # an event of the completed first part is late; one of the open rest is not
    assert await send(sessionizer, err("e-late", T0 + SECOND)) == EventsResult(0, 0, 1)
    assert await send(sessionizer, err("e2", T0 + 5_500)) == EventsResult(1, 0, 0)
    clock.set(T0 + 11 * SECOND + 2 * SETTLE)
    assert await drain(sessionizer) == 2
    docs = await logged(store)
    assert [d["partNumber"] for d in docs] == [1, 2, 3]
    assert {d["userSessionId"] for d in docs} == {"s1"}
    assert [d["endReason"] for d in docs] == ["USER_ACTION_LIMIT", "USER_ACTION_LIMIT", "END_EVENT"]
    assert [d["userActionCount"] for d in docs] == [3, 3, 1]
    assert [d["totalErrorCount"] for d in docs] == [1, 1, 0]
    assert [d["startTime"] for d in docs] == [T0, T0 + 3 * SECOND, T0 + 6 * SECOND]
    assert [d["city"] for d in docs] == ["Linz"] * 3, "the attributes belong to every part"
    assert [[a["name"] for a in d["userActions"]] for d in docs] == [
        ["a0", "a1", "a2"],
        ["a3", "a4", "a5"],
        ["a6"],
    ]
    assert len(await store.recent_sessions(user_session_id="s1")) == 3


async def test_two_workers_completing_the_same_part_number_it_once(
    sessionizer: Sessionizer, clock: Clock
) -> None:
    """Workers sweep the same due sessions: the one that completes a part second, on what it read
    before, writes nothing (its session would be a duplicate; the part counter must not move)."""
    store = sessionizer.store
    lines = [*(act(f"a{i}", T0 + i * SECOND, 100) for i in range(7)), end("end", T0 + 10 * SECOND)]
    clock.set(T0 + 11 * SECOND)
    await send(sessionizer, *lines)
    clock.set(T0 + 11 * SECOND + SETTLE)
    [read_by_both] = await store.due_sessions(clock(), 10)
    other = new_sessionizer(store, clock)
    assert await sessionizer._look_at(read_by_both) == 1  # the first part
    assert await other._look_at(read_by_both) == 0  # the same part, already written
    assert await drain(sessionizer) == 2
    assert [d["partNumber"] for d in await logged(store)] == [1, 2, 3]


async def test_a_later_session_under_the_same_id_numbers_its_parts_from_1(
    sessionizer: Sessionizer, clock: Clock
) -> None:
    """Sessions under one id (one ended, the next began): each one's parts are its own."""
    clock.set(T0 + 10 * SECOND)
    await send(sessionizer, act("a1", T0), end("end1", T0 + SECOND))  # one part: not numbered
    clock.set(T0 + 10 * SECOND + SETTLE)
    assert await drain(sessionizer) == 1
    for n, start in enumerate((T0 + 60 * MINUTE, T0 + 120 * MINUTE)):  # two of two parts each
        clock.set(start + 6 * SECOND)
        await send(sessionizer, *(act(f"b{n}{i}", start + i * SECOND) for i in range(4)))
        await send(sessionizer, end(f"end-b{n}", start + 5 * SECOND))
        clock.set(start + 6 * SECOND + SETTLE)
        assert await drain(sessionizer) == 2
    docs = await logged(sessionizer.store)
    assert [(d.get("partNumber"), d["userActionCount"]) for d in docs] == [
        (None, 1),
        (1, 3),
        (2, 1),
        (1, 3),
        (2, 1),
    ]


async def test_a_session_whose_last_part_had_no_action_is_followed_by_an_unnumbered_one(
    store: Store, clock: Clock
) -> None:
    """Split at the duration limit, its remainder (an error) makes no session: it ended all the
    same, and the next session under its id is a session of its own, not its part 2."""
    settings = replace(SETTINGS, duration_limit_ms=10 * MINUTE, action_limit=200)
    sessionizer = new_sessionizer(store, clock, settings)
    lines = [act(f"a{i}", T0 + i * 50 * SECOND) for i in range(12)]  # 50 s apart: no inactivity
    clock.set(T0 + 10 * MINUTE + 10 * SECOND)
    await send(sessionizer, *lines, err("e1", T0 + 10 * MINUTE + 5 * SECOND))
    clock.set(T0 + 20 * MINUTE)  # the error's remainder timed out long since
    await send(sessionizer, act("b1", T0 + 19 * MINUTE), end("end-b", T0 + 19 * MINUTE + 2 * SECOND))
    clock.set(T0 + 22 * MINUTE)
    assert await drain(sessionizer) == 1  # part 1; then a sweep that drops the error, appending nothing
    assert await drain(sessionizer) == 1  # the later session
    docs = await logged(store)
    assert [(d.get("partNumber"), d["endReason"], d["userActionCount"]) for d in docs] == [
        (1, "DURATION_LIMIT", 12),
        (None, "END_EVENT", 1),
    ]


async def test_parts_that_start_in_the_same_millisecond_are_all_kept(
    sessionizer: Sessionizer, clock: Clock
) -> None:
    # a burst of actions in one millisecond: the second part starts when the first one does
    lines = [*(act(f"a{i}", T0, 10) for i in range(4)), end("end", T0 + SECOND)]
    clock.set(T0 + 2 * SECOND)
    await send(sessionizer, *lines)
    clock.set(T0 + 2 * SECOND + SETTLE)
    appended = await drain(sessionizer)
    docs = await logged(sessionizer.store)
    assert [(d.get("partNumber"), d["userActionCount"]) for d in docs] == [(1, 3), (2, 1)], (
        "BUG: the second part of session s1 (1 action + end, startTime T0 like part 1) is dropped:"
        " the session log is unique on (tenantId, userSessionId, startTime), complete_part's append"
        " counts it as a duplicate and still deletes its events, and sweep() reports it as appended"
        f" ({appended} appended, {len(docs)} in the log)"
    )


# --- durability ---------------------------------------------------------------------------------------


async def test_an_open_session_survives_a_restart(
    tmp_path: Path, database_url: str | None, clock: Clock
) -> None:
    first = create_store(tmp_path, database_url)
    await first.open()
    try:
        sessionizer = new_sessionizer(first, clock)
        clock.set(T0 + 5 * SECOND)
        before = [attrs("x", T0, country="Austria"), act("a1", T0), act("a2", T0 + 2 * SECOND)]
        assert await send(sessionizer, *before) == EventsResult(3, 0, 0)
        clock.set(T0 + 5 * SECOND + SETTLE)
        assert await sessionizer.sweep() == 0  # looked at: still open
    finally:
        await first.close()

    second = create_store(tmp_path, database_url)
    await second.open()
    try:
        sessionizer = new_sessionizer(second, clock)
        clock.set(T0 + 20 * SECOND)
        after = [act("a2", T0 + 2 * SECOND), act("a3", T0 + 15 * SECOND), end("end", T0 + 19 * SECOND)]
        assert await send(sessionizer, *after) == EventsResult(2, 1, 0), "a2 was kept before the restart"
        clock.set(T0 + 20 * SECOND + SETTLE)
        assert await sessionizer.sweep() == 1
        (doc,) = await logged(second)
        assert [a["name"] for a in doc["userActions"]] == ["a1", "a2", "a3"]
        assert doc["country"] == "Austria"
        assert (doc["endReason"], doc["startTime"], doc["endTime"]) == ("END_EVENT", T0, T0 + 15_500)
    finally:
        await second.close()


async def test_a_restart_between_parts_continues_the_numbering(
    tmp_path: Path, database_url: str | None, clock: Clock
) -> None:
    lines = [*(act(f"a{i}", T0 + i * SECOND, 100) for i in range(5)), end("end", T0 + 9 * SECOND)]
    first = create_store(tmp_path, database_url)
    await first.open()
    try:
        sessionizer = new_sessionizer(first, clock)
        clock.set(T0 + 10 * SECOND)
        await send(sessionizer, *lines)
        clock.set(T0 + 10 * SECOND + SETTLE)
        assert await sessionizer.sweep() == 1  # part 1 only
    finally:
        await first.close()
    second = create_store(tmp_path, database_url)
    await second.open()
    try:
        assert await drain(new_sessionizer(second, clock)) == 1
        docs = await logged(second)
        assert [(d["partNumber"], d["endReason"]) for d in docs] == [
            (1, "USER_ACTION_LIMIT"),
            (2, "END_EVENT"),
        ]
    finally:
        await second.close()


# --- purge -----------------------------------------------------------------------------------------------


async def test_purge_events_drops_idle_open_sessions(sessionizer: Sessionizer, clock: Clock) -> None:
    store = sessionizer.store
    idle = [attrs("x", T0, "idle", city="Linz"), act("a1", T0, 500, "idle"), err("e1", T0 + SECOND, "idle")]
    clock.set(T0 + 2 * SECOND)
    await send(sessionizer, *idle, act("b1", T0, 500, "active"))
    clock.set(T0 + 10 * MINUTE)
    await send(sessionizer, act("b2", T0 + 50 * SECOND, 500, "active"))  # active: its last event arrived now
    # the sessionizer could not complete idle (it failed on it): it is to look again later
    await sessionizer._postpone((await store.due_sessions(T0 + 10 * MINUTE, 1))[0], T0 + 20 * MINUTE)
    assert await store.purge_events(T0 + 5 * MINUTE, T0 + 10 * MINUTE) == 3, "the idle session's events"
    assert await store.purge_events(T0 + 5 * MINUTE, T0 + 10 * MINUTE) == 0
    open_sessions = await store.due_sessions(T0 + DAY, 100)
    assert [(s.session_id, len(s.events)) for s in open_sessions] == [("active", 2)], "idle is forgotten"
    clock.set(T0 + DAY)
    assert await drain(sessionizer) == 1
    (doc,) = await logged(store)
    assert (doc["userSessionId"], doc["userActionCount"]) == ("active", 2)
    # forgotten: the same events are new again
    assert await send(sessionizer, *idle) == EventsResult(3, 0, 0)


async def test_sessions_no_sessionizer_looked_at_are_completed_not_purged(
    sessionizer: Sessionizer, clock: Clock
) -> None:
    """A server down for longer than events are kept: on its restart, the purge must not take
    the sessions that became due meanwhile from the sessionizer that will complete them."""
    store = sessionizer.store
    clock.set(T0 + 2 * SECOND)
    await send(sessionizer, act("a1", T0, 500, "s1"), act("b1", T0, 500, "s2"))
    clock.set(T0 + 3 * 60 * MINUTE)  # back after three hours: both due since long
    assert await store.purge_events(T0 + 2 * 60 * MINUTE, T0 + 3 * 60 * MINUTE) == 0
    assert await drain(sessionizer) == 2
    assert {(d["userSessionId"], d["endReason"]) for d in await logged(store)} == {
        ("s1", "TIMEOUT"),
        ("s2", "TIMEOUT"),
    }


async def test_sessions_due_while_no_sessionizer_ran_are_completed_not_purged(
    sessionizer: Sessionizer, clock: Clock
) -> None:
    """Looked at before the server stopped (its next look set to its timeout), down for a little
    longer than events are kept: it became due meanwhile, and is completed, not dropped."""
    store = sessionizer.store
    clock.set(T0 + 2 * SECOND)
    await send(sessionizer, act("a1", T0, 500, "s1"), act("a2", T0 + SECOND, 500, "s1"))
    clock.set(T0 + 2 * SECOND + SETTLE)
    assert await sessionizer.sweep() == 0  # not complete: to be looked at again at its timeout
    [open_one] = await store.due_sessions(T0 + DAY, 10)
    now = T0 + SETTINGS.open_ms + 30 * SECOND  # back: past its timeout, its events past the horizon
    assert await purge_expired(store, retention_ms=MINUTE, now=now, open_ms=SETTINGS.open_ms) == 0
    assert [s.session_id for s in await store.due_sessions(now, 10)] == [open_one.session_id]
    clock.set(now)
    assert await drain(sessionizer) == 1
    [doc] = await logged(store)
    assert (doc["userActionCount"], doc["endReason"]) == (2, "TIMEOUT")


async def test_a_retention_shorter_than_a_session_may_stay_open_keeps_its_events(
    sessionizer: Sessionizer, clock: Clock
) -> None:
    """Sessions wait up to their inactivity timeout for the next event: a shorter retention (down
    to 0.001 days) dropped them before they could complete. Events now stay as long as that."""
    store = sessionizer.store
    clock.set(T0 + SECOND)
    await send(sessionizer, act("a1", T0), act("a2", T0 + SECOND))
    now = T0 + 10 * MINUTE
    await purge_expired(store, retention_ms=MINUTE, now=now, open_ms=SETTINGS.open_ms)
    assert [s.session_id for s in await store.due_sessions(T0 + DAY, 100)] == ["s1"]
    # the sessionizer keeps failing on it: its next look is always ahead
    await sessionizer._postpone((await store.due_sessions(now, 1))[0], now + SETTINGS.open_ms + MINUTE)
    await purge_expired(store, retention_ms=MINUTE, now=now + SETTINGS.open_ms, open_ms=SETTINGS.open_ms)
    assert await store.due_sessions(T0 + DAY, 100) == []  # idle for longer than any session stays open


# --- order of arrival ---------------------------------------------------------------------------------


def several_sessions() -> list[bytes]:
    """Four sessions: ended, ended by a crash (mobile), split into parts, and a bounce."""
    web = web_session("web")
    mobile = [
        attrs("x1", T0, "mob", applicationType="MOBILE_APPLICATION", city="Linz"),
        attrs("x2", T0 + 3 * SECOND, "mob", city="Wien"),
        act("a1", T0 + SECOND, 2_000, "mob", type="Custom"),
        act("a2", T0 + 4 * SECOND, 20_000, "mob", type="Custom"),
        happened("t1", T0 + 5 * SECOND, "mob", "RageTap"),
        err("c1", T0 + 6 * SECOND, "mob", "Crash"),
    ]
    big = [
        attrs("x", T0, "big", userType="SYNTHETIC"),
        *(act(f"a{i}", T0 + i * 700, 100 * i, "big") for i in range(8)),
        err("e1", T0 + 2_500, "big"),
        end("end", T0 + 20 * SECOND, "big"),
    ]
    bounce = [act("a1", T0 + 8 * SECOND, 300, "bounce")]
    return web + mobile + big + bounce


async def completed_sessions(folder: Path, lines: list[bytes], seed: int | None) -> list[bytes]:
    """Send ``lines`` (in order, one request, when no seed; else in a random order, in random
    requests, some re-sent), then let every session complete: the documents of the log."""
    rng = random.Random(seed)
    resent = rng.sample(lines, 6) if seed is not None else []
    pending = lines + resent
    if seed is not None:
        rng.shuffle(pending)
    with backend_database() as url:
        return await _completed_sessions(create_store(folder, url), lines, resent, pending, rng, seed)


async def _completed_sessions(
    store: Store,
    lines: list[bytes],
    resent: list[bytes],
    pending: list[bytes],
    rng: random.Random,
    seed: int | None,
) -> list[bytes]:
    await store.open()
    try:
        clock = Clock(T0 + 30 * SECOND)
        sessionizer = new_sessionizer(store, clock)
        accepted = duplicates = 0
        while pending:
            size = rng.randint(1, 5) if seed is not None else len(pending)
            request, pending = pending[:size], pending[size:]
            result = await send(sessionizer, *request)
            accepted, duplicates = accepted + result.accepted, duplicates + result.duplicates
            assert result.late == 0
            clock.set(clock.now + 20)  # all within the settle time of each other
            assert await sessionizer.sweep() == 0
        assert (accepted, duplicates) == (len(lines), len(resent))
        clock.set(T0 + DAY)
        assert await drain(sessionizer) == 6
        return sorted(e.body for e in await store.read_log(0, 100))
    finally:
        await store.close()


async def test_any_interleaving_of_several_sessions_gives_the_same_sessions(tmp_path: Path) -> None:
    lines = several_sessions()
    expected = await completed_sessions(tmp_path / "in-order", lines, seed=None)
    docs = {(d["userSessionId"], d.get("partNumber")): d for d in map(orjson.loads, expected)}
    assert sorted(docs) == sorted(
        [("big", 1), ("big", 2), ("big", 3), ("bounce", None), ("mob", None), ("web", None)],
        key=str,
    )
    assert docs[("mob", None)]["endReason"] == "END_EVENT" and docs[("mob", None)]["city"] == "Wien"
    assert docs[("mob", None)]["hasCrash"] is True
    assert docs[("web", None)]["endReason"] == "END_EVENT"
    assert docs[("bounce", None)]["bounce"] is True
    assert [docs[("big", n)]["endReason"] for n in (1, 2, 3)] == ["USER_ACTION_LIMIT"] * 2 + ["END_EVENT"]
    for seed in range(8):
        assert await completed_sessions(tmp_path / f"run{seed}", lines, seed) == expected, f"seed {seed}"


@pytest.mark.parametrize(
    ("before", "during"),
    [
        ([act("a1", T0)], [act("a2", T0 + 5 * SECOND)]),  # more of a session that was about to time out
        ([attrs("s", T0)], [act("a1", T0 + SECOND), end("end", T0 + 2 * SECOND)]),  # only attributes read
        (
            [act("a1", T0), act("a3", T0 + 9 * SECOND), end("end", T0 + 10 * SECOND)],
            [act("a2", T0 + 5 * SECOND)],
        ),
    ],
    ids=["timeout", "attributes-only", "end"],
)
async def test_events_arriving_during_a_sweep_are_not_lost(
    sessionizer: Sessionizer, clock: Clock, before: list[bytes], during: list[bytes]
) -> None:
    clock.set(T0 + 10 * MINUTE)
    await send(sessionizer, *before)
    clock.set(T0 + 10 * MINUTE + SETTLE)
    read = sessionizer.store.due_sessions

    async def read_then_more_arrive(now: int, limit: int) -> list[Any]:
        due = await read(now, limit)
        if due:
            await send(sessionizer, *during)  # between the sweep's read and its write
        return due

    sessionizer.store.due_sessions = read_then_more_arrive  # type: ignore[method-assign]
    await drain(sessionizer)
    sessionizer.store.due_sessions = read  # type: ignore[method-assign]
    clock.set(T0 + 10 * MINUTE + 3 * SETTLE + WEB_TIMEOUT)
    await drain(sessionizer)
    docs = await logged(sessionizer.store)
    actions = sorted(a["name"] for d in docs for a in d["userActions"])
    expected = sorted(
        orjson.loads(line)["action"]["name"] for line in [*before, *during] if b'"action"' in line
    )
    assert actions == expected, "an event that came in during the sweep was lost or stranded"
    assert len(docs) == 1


async def test_an_end_after_the_timeout_makes_no_second_session(
    sessionizer: Sessionizer, clock: Clock
) -> None:
    clock.set(T0 + SECOND)
    await send(
        sessionizer, attrs("x", T0, "mob", applicationType="MOBILE_APPLICATION"), act("a1", T0, 500, "mob")
    )
    clock.set(T0 + 500 + APP_TIMEOUT + SETTLE)
    assert await drain(sessionizer) == 1
    await send(
        sessionizer,
        end("end", T0 + APP_TIMEOUT + 3 * MINUTE, "mob"),
        err("x1", T0 + APP_TIMEOUT + MINUTE, "mob"),
    )
    clock.set(T0 + APP_TIMEOUT + 4 * MINUTE + SETTLE)
    assert await drain(sessionizer) == 0
    await sessionizer.sweep()  # two minutes apart, the two make a session each: consumed in turn
    docs = await logged(sessionizer.store)
    assert [(d["userSessionId"], d["userActionCount"], d["endReason"]) for d in docs] == [
        ("mob", 1, "TIMEOUT")
    ]
    due = await sessionizer.store.due_sessions(clock() + DAY, 10)
    assert due == [], "the stray events are not left behind either"


async def test_a_failing_sweep_is_said_once_then_that_sweeps_succeed_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The store not answering (here: not open yet) fails every sweep, once a second in
    production: said once, not each time; and said when sweeps work again."""
    store = create_store(tmp_path)
    sessionizer = new_sessionizer(store, Clock())
    with caplog.at_level(logging.WARNING, logger="sessionexport.ingest.assembly"):
        running = asyncio.create_task(sessionizer.run(interval=0.01))
        await asyncio.sleep(0.3)  # some thirty sweeps
        await store.open()
        await asyncio.sleep(0.1)
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await store.close()
    said = [r.getMessage() for r in caplog.records]
    assert len([m for m in said if "sweep failed" in m]) == 1, said
    assert said[-1] == "sessionizer: sweeps succeed again"
