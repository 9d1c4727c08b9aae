"""Completed sessions from RUM events: when a session is complete, and what it contains. No I/O.

An open session is the set of its events (duplicates already dropped). Whether it is complete,
and the session it becomes, depend only on that set and the clock, never on the order the events
arrived in: events are sorted by (timestamp, eventId) first. A session is looked at only after no
event arrived for ``settle_ms``, so that late and out-of-order events are in before it is closed.

It is complete (``endReason``) when:
- it holds more than 200 user actions: the first 200 become a part (USER_ACTION_LIMIT) and the
  session continues as its next part (``partNumber``);
- it spans more than 6 hours: what happened in the first 6 h becomes a part (DURATION_LIMIT);
- an end event was received, or for mobile and custom applications a crash, and a user action
  (END_EVENT; an end that arrived before the actions it ends waits for them, or for the timeout);
- nothing happened for the inactivity timeout: 30 min for web, 10 min for mobile and custom
  applications (TIMEOUT), and no event of it came in for ``arrivals_quiet_ms`` (2 min): the
  timeout is read in event time, which a device that sends what it buffered offline, or whose
  clock is behind, puts long past; so by the device's clock: the server's, less the least lag
  its events came in with, once that is longer than the quiet time. A gap that long between two
  of its events ends it there too, whenever the events arrived (once none arrived for the quiet
  time, as the rest of a backlog may fill it; at once after an end): what follows is a session of
  its own (under the same session id).

The completed session is computed, not trusted: times, duration, counts, bounce, hasError,
hasCrash, rage clicks/taps, each action's apdex category (per application and action type
thresholds; an action with errors is FRUSTRATED) and the user experience score.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from sessionexport.model.events import (
    ActionEvent,
    AttributesEvent,
    EndEvent,
    ErrorEvent,
    RumEvent,
    SessionEventEvent,
)
from sessionexport.model.scores import ApdexThresholds, UxScoreSettings, apdex_category, user_experience_score
from sessionexport.model.session import EndReason, EventType, UserAction

MINUTE = 60_000
DURATION_LIMIT_MS = 6 * 60 * MINUTE  # a session's longest (Dynatrace's), by default
# Applications whose sessions time out after 10 min, and end at a crash (Dynatrace's rules).
APP_SESSIONS = ("MOBILE_APPLICATION", "CUSTOM_APPLICATION")


@dataclass(frozen=True)
class SessionizerSettings:
    web_timeout_ms: int = 30 * MINUTE
    app_timeout_ms: int = 10 * MINUTE  # mobile and custom applications
    duration_limit_ms: int = DURATION_LIMIT_MS
    action_limit: int = 200
    # Events an open session holds at once (a part's worth of actions with their errors and events):
    # one that never completes, events without user actions sent for hours, is not held unbounded.
    event_limit: int = 20_000
    settle_ms: int = 5_000  # quiet time before a session is looked at (late, out-of-order events)
    arrivals_quiet_ms: int = 2 * MINUTE  # before a session times out: no more of a buffered backlog
    apdex: dict[str, ApdexThresholds] = field(default_factory=dict)  # "<application>[|<action type>]"
    ux: UxScoreSettings = field(default_factory=UxScoreSettings)

    @property
    def open_ms(self) -> int:
        """How long an open session may wait for its next event, with an hour to spare (clocks,
        sweeps): its events are kept at least that long, whatever the retention."""
        return max(self.web_timeout_ms, self.app_timeout_ms) + 60 * MINUTE

    def timeout_ms(self, application_type: str | None) -> int:
        if application_type in APP_SESSIONS:
            return self.app_timeout_ms
        return self.web_timeout_ms

    def thresholds(self, action: UserAction) -> ApdexThresholds:
        application = action.application or action.internalApplicationId or ""
        kind = action.type.value if action.type else ""
        return self.apdex.get(f"{application}|{kind}") or self.apdex.get(application) or ApdexThresholds()


@dataclass(frozen=True)
class Part:
    """A completed session: the events it consumed (attributes stay for the next part) and why."""

    events: list[RumEvent]
    reason: EndReason
    final: bool  # nothing of the session remains open
    continues: bool = False  # the session goes on as its next part (it outgrew a limit)

    @property
    def has_actions(self) -> bool:
        """A session starts with its first user action: without one, these events make no session
        (e.g. an end or error event that came after the session had timed out)."""
        return any(isinstance(e, ActionEvent) for e in self.events)


def ordered(events: Iterable[RumEvent]) -> list[RumEvent]:
    """By (timestamp, eventId), each event once: a re-sent event counts once, whatever the caller kept."""
    unique = {e.eventId: e for e in sorted(events, key=lambda e: (e.timestamp, e.eventId), reverse=True)}
    return sorted(unique.values(), key=lambda e: (e.timestamp, e.eventId))


def next_part(
    events: Sequence[RumEvent],
    now: int,
    settings: SessionizerSettings,
    last_arrival: int | None = None,
    clock_lag: int | None = None,
) -> Part | None:
    """The part of an open session that is complete at ``now``, if any (events in any order);
    ``last_arrival``: when its latest event came in (server time); ``clock_lag``: how far behind
    the server's clock its device stamps events (its inactivity is read in the device's time)."""
    events = ordered(events)
    content: list[RumEvent] = [e for e in events if not isinstance(e, AttributesEvent)]
    if not content:
        return None
    application_type = _application_type(events)
    timeout = settings.timeout_ms(application_type)
    split = _limit_split(content, settings)
    gap = _inactivity_gap(content, timeout)
    quiet = last_arrival is None or now - last_arrival >= min(settings.arrivals_quiet_ms, timeout)
    if gap is not None and (split is None or gap <= split[0]):
        ended = any(_ends(e, application_type) for e in content[:gap])
        if not (ended or quiet):  # the rest of a buffered backlog may yet fill the gap
            return None
        return Part(content[:gap], EndReason.END_EVENT if ended else EndReason.TIMEOUT, final=False)
    if split is not None:
        index, reason = split
        return Part(content[:index], reason, final=False, continues=True)
    ended = any(_ends(e, application_type) for e in content)
    if ended and any(isinstance(e, ActionEvent) for e in content):
        return Part(content, EndReason.END_EVENT, final=True)
    if now - _behind(clock_lag, settings) - content[-1].timestamp >= timeout and quiet:
        return Part(content, EndReason.TIMEOUT, final=True)
    return None


def belongs_until(part: Part, events: Sequence[RumEvent], settings: SessionizerSettings) -> int:
    """The latest timestamp of an event that belongs to the completed ``part`` (one that arrives
    after it is counted late): its last event's; for a session that timed out, up to the timeout
    after that, since such an event would have kept it open (not begun a one-action session)."""
    last = part.events[-1].timestamp
    if part.reason is EndReason.TIMEOUT:
        return last + settings.timeout_ms(_application_type(events)) - 1
    return last


def _ends(event: RumEvent, application_type: str | None) -> bool:
    """An end event ends a session; so does a crash of a mobile or custom application (its
    crash report goes into that session)."""
    if isinstance(event, EndEvent):
        return True
    return (
        application_type in APP_SESSIONS
        and isinstance(event, ErrorEvent)
        and event.error.type is EventType.Crash
    )


def _inactivity_gap(content: list[RumEvent], timeout_ms: int) -> int | None:
    """Where the first gap of at least the inactivity timeout between two events ends, if any."""
    for index in range(1, len(content)):
        if content[index].timestamp - content[index - 1].timestamp >= timeout_ms:
            return index
    return None


def due_at(
    events: Sequence[RumEvent],
    settings: SessionizerSettings,
    last_arrival: int | None = None,
    clock_lag: int | None = None,
) -> int | None:
    """When an open session with no complete part will time out (to look at it again then)."""
    events = ordered(events)
    content: list[RumEvent] = [e for e in events if not isinstance(e, AttributesEvent)]
    if not content:
        return None
    timeout = settings.timeout_ms(_application_type(events))
    timeout_at = content[-1].timestamp + timeout + _behind(clock_lag, settings)
    if last_arrival is None:
        return timeout_at
    quiet_at = last_arrival + min(settings.arrivals_quiet_ms, timeout)
    if _inactivity_gap(content, timeout) is not None:  # the part before it waits for quiet only
        return quiet_at
    return max(timeout_at, quiet_at)


def _behind(clock_lag: int | None, settings: SessionizerSettings) -> int:
    """How far the device's clock is taken to be behind the server's: the least lag its events
    came with (a device that sends live is behind by its clock's offset), once longer than the
    quiet time (shorter is the way there: batching, the network); never ahead (a session must not
    close before its device's own timeout)."""
    lag = clock_lag or 0
    return lag if lag > settings.arrivals_quiet_ms else 0


def _limit_split(content: list[RumEvent], settings: SessionizerSettings) -> tuple[int, EndReason] | None:
    """Where the first part ends when the session outgrew the action or duration limit."""
    start = content[0].timestamp
    actions = 0
    for index, event in enumerate(content):
        if event.timestamp - start >= settings.duration_limit_ms:
            return index, EndReason.DURATION_LIMIT
        if isinstance(event, ActionEvent):
            actions += 1
            if actions > settings.action_limit:
                return index, EndReason.USER_ACTION_LIMIT
    return None


def _application_type(events: Sequence[RumEvent]) -> str | None:
    kind = None
    for event in events:
        if isinstance(event, AttributesEvent) and event.attributes.get("applicationType"):
            kind = str(event.attributes["applicationType"])
    return kind


# -- the completed session ---------------------------------------------------------------------------


def assemble(
    tenant_id: str,
    session_id: str,
    part: Part,
    attributes: Iterable[AttributesEvent],
    part_number: int | None,
    settings: SessionizerSettings,
) -> dict[str, Any]:
    """The session document of a part; ``part_number`` only for sessions that were split."""
    actions = [_rated(e.action, settings) for e in part.events if isinstance(e, ActionEvent)]
    actions.sort(key=lambda a: a.startTime or 0)
    happenings = [e.event for e in part.events if isinstance(e, SessionEventEvent)]
    errors = [e.error for e in part.events if isinstance(e, ErrorEvent)]
    start = min((a.startTime for a in actions if a.startTime), default=part.events[0].timestamp)
    if actions:  # the export format's rule: the end of the last action, whatever came after it
        end = max(map(_end_of, actions))
    else:  # makes no session (assembly.py); assembled all the same, it spans what happened in it
        end = max((e.timestamp for e in part.events if not isinstance(e, EndEvent)), default=start)
    end = max(end, start)
    crashes = sum(1 for e in errors if e.type is EventType.Crash)
    rage_clicks = sum(1 for e in happenings if e.type is EventType.RageClick)
    rage_taps = sum(1 for e in happenings if e.type is EventType.RageTap)
    session: dict[str, Any] = {
        "tenantId": tenant_id,
        "userSessionId": session_id,
        "startTime": start,
        "endTime": end,
        "duration": end - start,
    }
    session |= _merged(attributes)
    session |= {
        "userActionCount": len(actions),
        "totalErrorCount": len(errors),
        "bounce": len(actions) <= 1,
        "hasError": bool(errors) or any(_has_errors(a) for a in actions),
        "hasCrash": crashes > 0,
        "numberOfRageClicks": rage_clicks,
        "numberOfRageTaps": rage_taps,
        "userExperienceScore": user_experience_score(
            (a.apdexCategory for a in actions if a.apdexCategory is not None),
            errors=len(errors) - crashes,
            rage_events=rage_clicks + rage_taps,
            crashes=crashes,
            settings=settings.ux,
        ).value,
        "endReason": part.reason.value,
        "userActions": [_present(a) for a in actions],
        "events": [_present(e) for e in sorted(happenings, key=lambda e: e.startTime or 0)],
        "errors": [_present(e) for e in sorted(errors, key=lambda e: e.startTime or 0)],
    }
    if part_number is not None:
        session["partNumber"] = part_number
    return session


def _present(part: msgspec.Struct) -> dict[str, Any]:
    """A struct as JSON without the fields it does not have (as the sender left them out)."""
    return {k: v for k, v in msgspec.to_builtins(part).items() if v is not None}


def _merged(attributes: Iterable[AttributesEvent]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for event in sorted(attributes, key=lambda e: (e.timestamp, e.eventId)):
        merged |= event.attributes
    return {k: v for k, v in merged.items() if v is not None}  # as for actions: absent, not null


def _rated(action: UserAction, settings: SessionizerSettings) -> UserAction:
    duration = action.duration
    if duration is None and action.startTime is not None and action.endTime is not None:
        duration = action.endTime - action.startTime
    category = apdex_category(duration, _has_errors(action), settings.thresholds(action))
    return msgspec.structs.replace(action, apdexCategory=category, duration=duration)


def _has_errors(action: UserAction) -> bool:
    counts = (action.javascriptErrorCount, action.requestErrorCount, action.customErrorCount)
    return any((count or 0) > 0 for count in counts)


def _end_of(action: UserAction) -> int:
    if action.endTime is not None:
        return action.endTime
    return (action.startTime or 0) + (action.duration or 0)
