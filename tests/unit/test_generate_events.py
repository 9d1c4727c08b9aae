"""RUM event streams from the generator: valid, deterministic, realistic, and shaped as asked."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import msgspec
import pytest
from typer.testing import CliRunner

from sessionexport.cli import app
from sessionexport.generate.events import (
    EventOptions,
    EventStream,
    batches,
    generate_event_streams,
    paced,
)
from sessionexport.generate.sessions import KINDS, GeneratorOptions, generate_sessions
from sessionexport.ingest.documents import RejectedBody
from sessionexport.ingest.events import parse_events
from sessionexport.model.events import (
    COMPUTED_FIELDS,
    ActionEvent,
    AttributesEvent,
    EndEvent,
    ErrorEvent,
    RumEvent,
)

COUNT = 80
END_MS = 1_720_000_000_000
MINUTE = 60_000
TIMEOUT_MS = {"WEB_APPLICATION": 30 * MINUTE, "MOBILE_APPLICATION": 10 * MINUTE}
decoder = msgspec.json.Decoder(RumEvent)

Key = tuple[str, str]


def lines(count: int = COUNT, seed: int = 7, **options: Any) -> list[bytes]:
    return list(generate_event_streams(count, seed, EventOptions(end_ms=END_MS, **options)))


def decoded(stream: list[bytes]) -> list[RumEvent]:
    return [decoder.decode(line) for line in stream]


def by_session(events: list[RumEvent]) -> dict[Key, list[RumEvent]]:
    """Each session's events in stream order."""
    sessions: dict[Key, list[RumEvent]] = defaultdict(list)
    for event in events:
        sessions[event.key].append(event)
    return sessions


def attributes_of(events: list[RumEvent]) -> dict[str, Any]:
    [first] = [e for e in events if isinstance(e, AttributesEvent)]
    return first.attributes


def crashed(events: list[RumEvent]) -> bool:
    return any(isinstance(e, ErrorEvent) and e.error.type == "Crash" for e in events)


@pytest.fixture(scope="module")
def mixed() -> dict[Key, list[RumEvent]]:
    return by_session(decoded(lines(300, seed=11)))


# --- validity ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_every_line_is_a_compact_rum_event_the_server_accepts(kind: str) -> None:
    stream = lines(kind=kind)
    for line in stream:
        decoder.decode(line)
        assert b"\n" not in line
        assert msgspec.json.format(line, indent=-1) == line
    # The events API's own checks: attribute values, computed fields, action start times.
    assert len(parse_events(b"\n".join(stream))) == len(stream)


def test_an_event_whose_unread_fields_are_not_utf8_is_refused_at_its_line() -> None:
    first, second = lines(2)[:2]
    with pytest.raises(RejectedBody) as refused:
        parse_events(first + b"\n" + second[:-1] + b',"zzz":"a\xffb"}')
    [problem] = refused.value.problems
    assert problem.location == "line 2" and problem.message.startswith("not UTF-8: byte 0xff at offset")


def test_attributes_never_carry_computed_fields(mixed: dict[Key, list[RumEvent]]) -> None:
    for events in mixed.values():
        assert not COMPUTED_FIELDS & attributes_of(events).keys()


def test_actions_leave_the_apdex_category_to_the_sessionizer() -> None:
    for line in lines(kind="mixed"):
        event = msgspec.json.decode(line)
        if event["type"] == "action":
            assert "apdexCategory" not in event["action"]
            assert event["action"]["startTime"] <= event["action"]["endTime"] == event["timestamp"]


# --- determinism -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_and_end_give_the_same_stream(kind: str) -> None:
    assert lines(30, 3, kind=kind) == lines(30, 3, kind=kind)


def test_seed_and_end_change_the_stream() -> None:
    assert lines(20, 1) != lines(20, 2)
    other_end = list(generate_event_streams(20, 1, EventOptions(end_ms=END_MS + 3_600_000)))
    assert lines(20, 1) != other_end
    assert {len(stream) for stream in (lines(20, 1), other_end)} == {len(other_end)}


def test_sessions_are_the_generators_sessions() -> None:
    """Same seed, same content: the actions are those of ``generate_sessions``, only moved in time."""
    events = by_session(decoded(lines(40, 5, interleave=False)))
    generated = generate_sessions(40, 5, GeneratorOptions(end_ms=END_MS))
    for session, (key, stream) in zip(generated, events.items(), strict=True):
        assert key == (session["tenantId"], session["userSessionId"])
        actions = [e.action for e in stream if isinstance(e, ActionEvent)]
        assert [(a.name, a.duration) for a in actions] == [
            (a["name"], a["duration"]) for a in session["userActions"]
        ]


# --- counts, kinds, ids ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_one_attributes_event_per_session_and_unique_session_ids(kind: str) -> None:
    events = decoded(lines(kind=kind))
    sessions = by_session(events)
    assert len(sessions) == COUNT
    assert sum(isinstance(e, AttributesEvent) for e in events) == COUNT
    assert len({session_id for _, session_id in sessions}) == COUNT


@pytest.mark.parametrize("kind", ["web", "mobile", "synthetic"])
def test_kinds_are_what_they_say(kind: str) -> None:
    expected_app = "MOBILE_APPLICATION" if kind == "mobile" else "WEB_APPLICATION"
    for events in by_session(decoded(lines(kind=kind))).values():
        attributes = attributes_of(events)
        assert attributes["applicationType"] == expected_app
        assert attributes["userType"] == ("SYNTHETIC" if kind == "synthetic" else "REAL_USER")
        assert ("browserMonitorId" in attributes) == (kind == "synthetic")
        for action in (e.action for e in events if isinstance(e, ActionEvent)):
            assert action.type is not None
            assert action.type.value in (("Custom",) if kind == "mobile" else ("Load", "Xhr"))
            assert (action.domain is not None) == (kind != "mobile")
            assert (action.networkTime is not None) == (kind != "mobile")


def test_mixed_holds_every_kind_with_rage_and_errors(mixed: dict[Key, list[RumEvent]]) -> None:
    kinds = Counter(
        (attributes_of(events)["applicationType"], attributes_of(events)["userType"])
        for events in mixed.values()
    )
    assert set(kinds) == {
        ("WEB_APPLICATION", "REAL_USER"),
        ("WEB_APPLICATION", "SYNTHETIC"),
        ("MOBILE_APPLICATION", "REAL_USER"),
    }
    payloads = [msgspec.json.decode(line) for line in lines(300, seed=11)]
    happenings = Counter(p["event"]["type"] for p in payloads if p["type"] == "event")
    errors = Counter(p["error"]["type"] for p in payloads if p["type"] == "error")
    assert happenings["RageClick"] and happenings["RageTap"] and happenings["PageChange"]
    assert errors["Error"] and errors["Crash"]


@pytest.mark.parametrize("bounds", [(1, 1), (3, 5)])
def test_action_count_range_is_respected(bounds: tuple[int, int]) -> None:
    low, high = bounds
    for events in by_session(decoded(lines(kind="mixed", actions=bounds))).values():
        count = sum(isinstance(e, ActionEvent) for e in events)
        assert (1 if crashed(events) else low) <= count <= high


def test_event_ids_are_unique_within_each_session(mixed: dict[Key, list[RumEvent]]) -> None:
    for events in mixed.values():
        ids = [e.eventId for e in events]
        assert len(ids) == len(set(ids))


# --- time --------------------------------------------------------------------------------------


@pytest.mark.parametrize("interleave", [True, False])
def test_each_session_is_in_time_order_attributes_first_gaps_below_the_timeout(interleave: bool) -> None:
    for events in by_session(decoded(lines(300, seed=11, interleave=interleave))).values():
        times = [e.timestamp for e in events]
        assert times == sorted(times)
        assert isinstance(events[0], AttributesEvent)
        timeout = TIMEOUT_MS[events[0].attributes["applicationType"]]
        assert max(b - a for a, b in itertools.pairwise(times)) < timeout / 3
        assert times[0] >= END_MS - 6 * 60 * MINUTE
        assert times[-1] < END_MS


def test_most_sessions_end_with_an_end_event_synthetic_always_crashed_never(
    mixed: dict[Key, list[RumEvent]],
) -> None:
    ended: Counter[bool] = Counter()
    for events in mixed.values():
        kind = attributes_of(events)["userType"]
        ends = [e for e in events if isinstance(e, EndEvent)]
        if ends:
            assert ends == [events[-1]]  # after everything else
        if kind == "SYNTHETIC":
            assert ends
        elif crashed(events):
            assert not ends
        else:
            ended[bool(ends)] += 1
    assert 0.6 <= ended[True] / ended.total() <= 0.8


# --- stream shapes -----------------------------------------------------------------------------


def test_interleaving_puts_concurrent_sessions_in_timestamp_order() -> None:
    interleaved = decoded(lines(200, seed=4, span_ms=3 * 60 * MINUTE))
    times = [e.timestamp for e in interleaved]
    assert times == sorted(times)
    assert _overlapping_sessions(interleaved) > 10


def test_without_interleaving_sessions_follow_each_other_with_the_same_events() -> None:
    stream = lines(200, seed=4, span_ms=3 * 60 * MINUTE, interleave=False)
    assert _overlapping_sessions(decoded(stream)) == 0
    assert sorted(stream) == sorted(lines(200, seed=4, span_ms=3 * 60 * MINUTE))


def _overlapping_sessions(events: list[RumEvent]) -> int:
    """How many sessions have an event between the first and last lines of the one before."""
    spans: dict[Key, list[int]] = {}
    for position, event in enumerate(events):
        spans.setdefault(event.key, [position, position])[1] = position
    ordered = sorted(spans.values())
    return sum(later[0] < earlier[1] for earlier, later in itertools.pairwise(ordered))


def test_duplicates_repeat_some_lines_a_little_later() -> None:
    clean = lines()
    noisy = lines(duplicate_ratio=0.2)
    assert list(dict.fromkeys(noisy)) == clean  # first occurrences: the clean stream, in order
    extra = len(noisy) - len(clean)
    assert 0.12 * len(clean) < extra < 0.28 * len(clean)
    assert max(Counter(noisy).values()) == 2
    first_seen = {line: noisy.index(line) for line in set(noisy)}
    for position, line in enumerate(noisy):
        assert position - first_seen[line] <= 40
    assert len(lines(duplicate_ratio=1.0)) == 2 * len(clean)


def test_disorder_moves_lines_no_further_than_the_window() -> None:
    clean = lines()
    shuffled = lines(disorder=5)
    assert shuffled != clean
    assert sorted(shuffled) == sorted(clean)
    place = {line: position for position, line in enumerate(clean)}
    moves = [abs(position - place[line]) for position, line in enumerate(shuffled)]
    assert max(moves) <= 5
    assert sum(1 for move in moves if move) > len(clean) / 2


def test_duplicates_and_disorder_together_keep_the_events() -> None:
    noisy = lines(duplicate_ratio=0.1, disorder=8)
    assert set(noisy) == set(lines())
    assert noisy == lines(duplicate_ratio=0.1, disorder=8)


def test_options_are_checked() -> None:
    for bad in ({"duplicate_ratio": 1.5}, {"disorder": -1}, {"kind": "tv"}, {"actions": (3, 2)}):
        with pytest.raises(ValueError):
            EventOptions(**bad)


def test_stream_counts_the_sessions_taken_apart() -> None:
    stream = EventStream(12, 1, EventOptions(end_ms=END_MS))
    assert stream.sessions_done == 0
    assert len(list(stream)) > 12
    assert stream.sessions_done == 12


# --- delivery helpers --------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_pacing_keeps_the_rate_against_the_start() -> None:
    clock = FakeClock()
    out = []
    for line in paced([b"a", b"b", b"c", b"d", b"e"], 2.0, sleep=clock.sleep, clock=clock):
        out.append((line, clock.now))
        clock.now += 0.1  # the consumer's own time counts towards the pause
    assert out == [(b"a", 100.0), (b"b", 100.5), (b"c", 101.0), (b"d", 101.5), (b"e", 102.0)]
    assert list(paced([b"x"], 0)) == [b"x"]


def test_batches_by_size_and_by_age() -> None:
    assert list(batches([bytes([n]) for n in range(5)], 2)) == [[b"\0", b"\1"], [b"\2", b"\3"], [b"\4"]]
    clock = FakeClock()

    def slow() -> Any:
        for n in range(4):
            clock.now += 0.6
            yield bytes([n])

    assert list(batches(slow(), 500, max_wait_s=1.0, clock=clock)) == [[b"\0", b"\1", b"\2"], [b"\3"]]


# --- command line ------------------------------------------------------------------------------

END_ISO = "2024-07-03T09:46:40+00:00"  # END_MS


def test_generate_events_writes_a_file(tmp_path: Path) -> None:
    target = tmp_path / "events.ndjson"
    args = ["generate", "--events", "--count", "25", "--seed", "3", "--kind", "mobile", "--end", END_ISO]
    result = CliRunner().invoke(app, [*args, "--actions", "2-4", "--output", str(target)])
    assert result.exit_code == 0, result.output
    written = target.read_bytes().splitlines()
    options = EventOptions(kind="mobile", actions=(2, 4), end_ms=END_MS)
    assert written == list(generate_event_streams(25, 3, options))
    assert f"Wrote {len(written)} event(s) of 25 session(s)" in result.stderr
    assert result.stdout == ""


def test_generate_events_to_stdout_with_options_from_the_environment() -> None:
    env = {"SESSIONEXPORT_EVENTS": "1", "SESSIONEXPORT_DUPLICATES": "0.3", "SESSIONEXPORT_DISORDER": "4"}
    result = CliRunner().invoke(app, ["generate", "--count", "10", "--end", END_ISO], env=env)
    assert result.exit_code == 0, result.output
    options = EventOptions(end_ms=END_MS, duplicate_ratio=0.3, disorder=4)
    expected = b"".join(line + b"\n" for line in generate_event_streams(10, 1, options))
    assert result.stdout_bytes == expected


def test_generate_sessions_is_unchanged_by_the_event_options() -> None:
    result = CliRunner().invoke(app, ["generate", "--count", "3", "--end", END_ISO])
    assert result.exit_code == 0
    first = msgspec.json.decode(result.stdout_bytes.splitlines()[0])
    assert "userActions" in first


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "5"], "only with --events"),
        (["--events", "--server", "http://127.0.0.1:9"], "--server needs --token"),
        (["--events", "--server", "http://x", "--token", "t", "-o", "f"], "takes no --output"),
    ],
)
def test_event_options_are_refused_where_they_make_no_sense(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["generate", *args], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert message in result.stderr


@pytest.mark.parametrize(
    ("args", "message", "not_said"),
    [
        (["--end", "garbage"], "--end takes an ISO 8601 time", "--actions"),
        (["--actions", "5-2"], "--actions takes MIN-MAX within 1-200 (got '5-2')", "--end"),
    ],
)
def test_a_bad_option_of_generate_is_named_alone(args: list[str], message: str, not_said: str) -> None:
    result = CliRunner().invoke(app, ["generate", "--count", "1", *args], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert message in result.stderr and not_said not in result.stderr
