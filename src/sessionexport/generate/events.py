"""RUM event streams: the generator's realistic sessions taken apart into the events they are made of.

The input of the sessionizer (``POST /api/v2/rum/events``, model in ``model/events.py``). Each
session is one of ``generate_sessions`` (same seed, same content), moved in time, and sent as:

    attributes  first, at the first action's start: the session's own fields (user, device, geo,
                application type ...), never what the sessionizer computes (``COMPUTED_FIELDS``)
    action      each user action, stamped with its end (when its beacon goes out), no apdexCategory
    event       PageChange, UserTag, RageClick (web) and RageTap (mobile), at their start
    error       JavaScript / reported errors, and mobile crashes, at their start
    end         shortly after the last action for ~70% of sessions and every synthetic one; the
                others end by inactivity, and so does a crashed mobile session (a dead app sends
                nothing more, the crash is its end)

Within a session, events come in time order and the gaps stay far below the inactivity timeouts
(30 min web, 10 min mobile). Sessions start in time order across the window, so the stream can
be interleaved like a real beacon stream (every event in timestamp order) while holding only the
sessions still open in memory. Duplicates and disorder, when asked for, are applied last, with
their own random source: the events stay those of the clean stream.

The second half of the module delivers a stream: pacing, batching and posting to a server.
"""

from __future__ import annotations

import heapq
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec

from sessionexport.clock import HOUR_MS
from sessionexport.generate.sessions import (
    GeneratorOptions,
    Kind,
    _shift_times,
    generate_sessions,
)
from sessionexport.model.events import COMPUTED_FIELDS

END_EVENT_RATIO = 0.7
# Sessions start at least this long before end_ms, so that they end before it without being
# moved back (which would break the time order the interleaving relies on). Same as sessions.py.
START_MARGIN_MS = 2 * HOUR_MS
# How long after the last action an explicit end comes (ms): a synthetic run is over at once, a
# user closes the tab or the app a little later. Far below the inactivity timeouts.
END_DELAY_MS = {"synthetic": (50, 500), "web": (500, 20_000), "mobile": (200, 10_000)}
MOBILE_RAGE_TAP_RATIO = 0.04  # per action: sessions.py draws rage clicks for web only
MOBILE_ERROR_RATIO = 0.04  # per action: reported errors besides the (rarer) crashes
MOBILE_ERRORS = (
    "java.net.SocketTimeoutException: timeout",
    "HTTP 503: /api/offers",
    "NSURLErrorDomain -1001: The request timed out",
    "IllegalStateException: Fragment not attached to a context",
)
DUPLICATE_DELAY = (1, 20)  # a re-sent event shows up this many lines after the original
# Equal timestamps within a session: who/where first, an action before what it caused.
_RANK = {"attributes": 0, "action": 1, "event": 2, "error": 3, "end": 4}


@dataclass(frozen=True, slots=True)
class EventOptions:
    kind: Kind = "mixed"
    actions: tuple[int, int] = (1, 12)  # user actions per session, inclusive range
    end_ms: int = 1_700_000_000_000  # every event is before this time
    span_ms: int = 6 * HOUR_MS  # ... and at or after end_ms - span_ms
    interleave: bool = True  # events of concurrent sessions in timestamp order, as beacons arrive
    duplicate_ratio: float = 0.0  # share of events sent a second time, a few lines later
    disorder: int = 0  # each event may move up to this many lines from its place
    end_event_ratio: float = END_EVENT_RATIO  # of real-user sessions (synthetic: always)

    def __post_init__(self) -> None:
        self.sessions()  # checks kind and actions
        if not 0 <= self.duplicate_ratio <= 1:
            raise ValueError(f"duplicate_ratio must be within 0-1, got {self.duplicate_ratio}")
        if self.disorder < 0:
            raise ValueError(f"disorder must be 0 or more, got {self.disorder}")
        if not 0 <= self.end_event_ratio <= 1:
            raise ValueError(f"end_event_ratio must be within 0-1, got {self.end_event_ratio}")

    def sessions(self) -> GeneratorOptions:
        return GeneratorOptions(
            kind=self.kind, actions=self.actions, end_ms=self.end_ms, span_ms=self.span_ms
        )


def generate_event_streams(count: int, seed: int, options: EventOptions = EventOptions()) -> Iterator[bytes]:
    """The events of ``count`` sessions as compact JSON lines (no trailing newline), deterministic."""
    return iter(EventStream(count, seed, options))


class EventStream:
    """The lines of ``generate_event_streams``, counting the sessions taken apart so far (progress)."""

    def __init__(self, count: int, seed: int, options: EventOptions = EventOptions()) -> None:
        self.count = count
        self.seed = seed
        self.options = options
        self.sessions_done = 0

    def __iter__(self) -> Iterator[bytes]:
        self.sessions_done = 0
        per_session = self._sessions()
        lines = _interleaved(per_session) if self.options.interleave else _one_after_another(per_session)
        # Its own random source: noise never changes which events there are.
        noise = random.Random(f"sessionexport-noise-{self.seed}")
        if self.options.duplicate_ratio > 0:
            lines = _with_duplicates(lines, self.options.duplicate_ratio, noise)
        if self.options.disorder > 0:
            lines = _disordered(lines, self.options.disorder, noise)
        return lines

    def _sessions(self) -> Iterator[list[tuple[int, bytes]]]:
        """Each session's events as (timestamp, line), in time order, sessions by start time."""
        rng = random.Random(f"sessionexport-events-{self.seed}")
        starts = _start_times(rng, self.count, self.options)
        sessions = generate_sessions(self.count, self.seed, self.options.sessions())
        for start, session in zip(starts, sessions, strict=True):
            yield _taken_apart(session, start, rng, self.options)
            self.sessions_done += 1


def _start_times(rng: random.Random, count: int, options: EventOptions) -> list[int]:
    """Session starts spread over the window, sorted: the interleaving can then stream."""
    low = options.end_ms - options.span_ms
    width = max(options.span_ms - START_MARGIN_MS, 1)
    return sorted(low + rng.randrange(width) for _ in range(count))


def _taken_apart(
    session: dict[str, Any], start: int, rng: random.Random, options: EventOptions
) -> list[tuple[int, bytes]]:
    kind = _kind_of(session)
    if kind == "mobile":
        _add_rage_taps_and_errors(session, rng)
    end_delay = _end_delay(session, kind, rng, options.end_event_ratio)
    last = _last_moment(session) + (end_delay or 0)
    shift = start - session["startTime"]
    if last + shift >= options.end_ms:  # a very long session: it still has to end before end_ms
        shift = options.end_ms - 1 - last
    _shift_times(session, shift)
    end_at = None if end_delay is None else _last_moment(session) + end_delay
    return [(event["timestamp"], msgspec.json.encode(event)) for event in _events_of(session, end_at)]


def _kind_of(session: dict[str, Any]) -> str:
    if session["applicationType"] == "MOBILE_APPLICATION":
        return "mobile"
    return "synthetic" if session["userType"] == "SYNTHETIC" else "web"


def _add_rage_taps_and_errors(session: dict[str, Any], rng: random.Random) -> None:
    """What sessions.py leaves out of mobile sessions: rage taps and reported (non-crash) errors."""
    for action in session["userActions"]:
        where = {
            "application": action["application"],
            "internalApplicationId": action["internalApplicationId"],
        }
        if rng.random() < MOBILE_RAGE_TAP_RATIO:
            session["events"].append(
                {"type": "RageTap", "name": "Rage tap", "startTime": action["endTime"], **where}
            )
        if rng.random() < MOBILE_ERROR_RATIO:
            moment = action["startTime"] + action["duration"] // 2
            session["errors"].append(
                {"type": "Error", "name": rng.choice(MOBILE_ERRORS), "startTime": moment, **where}
            )


def _end_delay(session: dict[str, Any], kind: str, rng: random.Random, ratio: float) -> int | None:
    """How long after the last action the explicit end comes, or None: it ends by inactivity."""
    wanted = rng.random() < ratio  # drawn always, so that the rest of the stream does not depend on it
    crashed = any(error["type"] == "Crash" for error in session["errors"])
    if crashed or not (wanted or kind == "synthetic"):
        return None
    return rng.randint(*END_DELAY_MS[kind])


def _last_moment(session: dict[str, Any]) -> int:
    moments = [action["endTime"] for action in session["userActions"]]
    moments += [item["startTime"] for item in session["events"] + session["errors"]]
    return int(max(moments))


def _events_of(session: dict[str, Any], end_at: int | None) -> list[dict[str, Any]]:
    """The session's RUM events, in time order."""
    tenant, session_id = session["tenantId"], session["userSessionId"]

    def event(kind: str, event_id: str, timestamp: int, **payload: Any) -> dict[str, Any]:
        head = {"type": kind, "tenantId": tenant, "sessionId": session_id, "eventId": event_id}
        return {**head, "timestamp": timestamp, **payload}

    events = [event("attributes", "s1", session["startTime"], attributes=_attributes(session))]
    for n, action in enumerate(session["userActions"], start=1):
        events.append(event("action", f"a{n}", action["endTime"], action=_action(action)))
    for n, item in enumerate(session["events"], start=1):
        events.append(event("event", f"e{n}", item["startTime"], event=_present(item)))
    for n, item in enumerate(session["errors"], start=1):
        events.append(event("error", f"x{n}", item["startTime"], error=_present(item)))
    if end_at is not None:
        events.append(event("end", "end", end_at))
    events.sort(key=lambda e: (e["timestamp"], _RANK[e["type"]]))  # stable: same kind keeps its order
    return events


def _attributes(session: dict[str, Any]) -> dict[str, Any]:
    attributes = {key: value for key, value in _present(session).items() if key not in COMPUTED_FIELDS}
    # Robots are recognised by the server, not declared by the sender.
    attributes["userType"] = "SYNTHETIC" if session["userType"] == "SYNTHETIC" else "REAL_USER"
    return attributes


def _action(action: dict[str, Any]) -> dict[str, Any]:
    # The apdex category depends on the server's thresholds: the sessionizer rates the action.
    return {key: value for key, value in _present(action).items() if key != "apdexCategory"}


def _present(fields: dict[str, Any]) -> dict[str, Any]:
    """Without the null fields: a sender leaves out what it does not know."""
    return {key: value for key, value in fields.items() if value is not None}


# -- stream shapes ------------------------------------------------------------------------------


def _one_after_another(sessions: Iterable[list[tuple[int, bytes]]]) -> Iterator[bytes]:
    for events in sessions:
        for _, line in events:
            yield line


def _interleaved(sessions: Iterable[list[tuple[int, bytes]]]) -> Iterator[bytes]:
    """All events in (timestamp, arrival) order, holding only the sessions still open.

    Sessions come in start order, so nothing later can precede an event older than the newest
    session's start: those events can go.
    """
    pending: list[tuple[int, int, bytes]] = []
    order = 0
    for events in sessions:
        start = events[0][0]
        while pending and pending[0][0] <= start:
            yield heapq.heappop(pending)[2]
        for timestamp, line in events:
            heapq.heappush(pending, (timestamp, order, line))
            order += 1
    while pending:
        yield heapq.heappop(pending)[2]


def _with_duplicates(lines: Iterable[bytes], ratio: float, rng: random.Random) -> Iterator[bytes]:
    """Each line, and for a share ``ratio`` of them the same line again a few lines later."""
    again: list[tuple[int, int, bytes]] = []  # (due position, original position, line)
    for position, line in enumerate(lines):
        while again and again[0][0] <= position:
            yield heapq.heappop(again)[2]
        yield line
        if rng.random() < ratio:
            heapq.heappush(again, (position + rng.randint(*DUPLICATE_DELAY), position, line))
    while again:
        yield heapq.heappop(again)[2]


def _disordered(lines: Iterable[bytes], window: int, rng: random.Random) -> Iterator[bytes]:
    """The lines shuffled locally: none moves more than ``window`` places from where it was.

    Line i is sorted by i + u·(window+1), u uniform in [0, 1): a line can only overtake or be
    overtaken by the next ``window`` lines, and every key below i+1 is final once line i is in.
    """
    held: list[tuple[float, bytes]] = []
    for position, line in enumerate(lines):
        heapq.heappush(held, (position + rng.random() * (window + 1), line))
        while held and held[0][0] < position + 1:
            yield heapq.heappop(held)[1]
    while held:
        yield heapq.heappop(held)[1]


# -- delivery -----------------------------------------------------------------------------------

EVENTS_PATH = "/api/v2/rum/events"
REQUEST_TIMEOUT_S = 30.0


def paced(
    lines: Iterable[bytes],
    rate: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[bytes]:
    """The lines at ``rate`` per second (as fast as they come when ``rate`` is 0).

    Paced against the start, not line by line, so that slow consumers do not slow the rate down.
    """
    if rate <= 0:
        yield from lines
        return
    started = clock()
    for n, line in enumerate(lines):
        wait = started + n / rate - clock()
        if wait > 0:
            sleep(wait)
        yield line


def batches(
    lines: Iterable[bytes],
    size: int,
    max_wait_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[list[bytes]]:
    """Lists of up to ``size`` lines; with ``max_wait_s``, a slow stream's batch goes out sooner."""
    batch: list[bytes] = []
    opened = 0.0
    for line in lines:
        if not batch:
            opened = clock()
        batch.append(line)
        if len(batch) >= size or (max_wait_s is not None and clock() - opened >= max_wait_s):
            yield batch
            batch = []
    if batch:
        yield batch


class EventPostError(Exception):
    """The server refused a batch of events, or could not be reached."""


class EventPoster:
    """Posts NDJSON batches to a server's events API and adds up the counts it answers."""

    def __init__(self, server: str, token: str, client: httpx.Client | None = None) -> None:
        self.url = events_url(server)
        self._headers = {"Content-Type": "application/x-ndjson", "Authorization": f"Api-Token {token}"}
        self._client = client or httpx.Client(timeout=REQUEST_TIMEOUT_S)
        self.totals: dict[str, int] = {}
        self.requests = 0
        self.events = 0

    def __enter__(self) -> EventPoster:
        return self

    def __exit__(self, *_: object) -> None:
        self._client.close()

    def post(self, lines: Sequence[bytes]) -> None:
        body = b"\n".join(lines) + b"\n"
        try:
            response = self._client.post(self.url, content=body, headers=self._headers)
        except httpx.HTTPError as exc:
            raise EventPostError(f"POST {self.url} failed: {exc}") from exc
        if response.status_code != 200:
            raise EventPostError(
                f"POST {self.url} answered {response.status_code}: {_server_message(response)}"
            )
        self.requests += 1
        self.events += len(lines)
        _add_counts(self.totals, response.content)


def events_url(server: str) -> str:
    """The events endpoint of a server given by its base URL (or by the endpoint itself)."""
    base = server.rstrip("/")
    return base if base.endswith(EVENTS_PATH) else base + EVENTS_PATH


def _add_counts(totals: dict[str, int], answer: bytes) -> None:
    """Adds the answer's top-level counts (``accepted``, ``duplicates`` ...) to ``totals``."""
    try:
        decoded = msgspec.json.decode(answer)
    except msgspec.DecodeError:
        return
    if isinstance(decoded, dict):
        for key, value in decoded.items():
            if isinstance(value, int) and not isinstance(value, bool):
                totals[key] = totals.get(key, 0) + value


def _server_message(response: httpx.Response) -> str:
    """The message of Dynatrace's error envelope with its first violations, else the body's text."""
    try:
        error = msgspec.json.decode(response.content).get("error")
        message = str(error["message"])
        violations = error.get("constraintViolations") or []
    except (msgspec.DecodeError, AttributeError, KeyError, TypeError):
        return response.text.strip()[:500] or response.reason_phrase
    details = [f"{v.get('location') or ''} {v.get('path') or ''}: {v.get('message')}" for v in violations[:5]]
    return "; ".join([message, *(d.strip() for d in details)])
