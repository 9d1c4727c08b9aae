"""The deterministic session generator: reproducible, valid and internally consistent."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
import pytest

from sessionexport.generate.sessions import KINDS, GeneratorOptions, Kind, generate_lines, generate_sessions
from sessionexport.model.scores import user_experience_score
from sessionexport.model.session import ApdexCategory
from sessionexport.model.validation import decode_session

COUNT = 60


def sessions(kind: str, seed: int = 5, **options: Any) -> list[dict[str, Any]]:
    return list(generate_sessions(COUNT, seed, GeneratorOptions(kind=kind, **options)))  # type: ignore[arg-type]


def all_times(session: dict[str, Any]) -> list[int]:
    """Every epoch-millisecond timestamp in a session."""
    times = [session["startTime"], session["endTime"]]
    for action in session["userActions"]:
        times += [action["startTime"], action["endTime"]]
        if action.get("navigationStart") is not None:
            times.append(action["navigationStart"])
    times += [item["startTime"] for item in session["events"] + session["errors"]]
    times += [event["timestamp"] for event in session.get("syntheticEvents", [])]
    return times


# --- determinism -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_and_options_give_identical_lines(kind: str) -> None:
    options = GeneratorOptions(kind=kind)  # type: ignore[arg-type]
    first = list(generate_lines(25, 42, options))
    again = list(generate_lines(25, 42, options))
    assert len(first) == 25
    assert first == again


def test_different_seed_gives_different_lines() -> None:
    a = list(generate_lines(10, 1))
    b = list(generate_lines(10, 2))
    assert a != b
    assert all(x != y for x, y in zip(a, b, strict=True))


def test_options_change_the_sessions() -> None:
    assert list(generate_lines(5, 1)) != list(
        generate_lines(5, 1, GeneratorOptions(end_ms=1_760_000_000_000))
    )


def test_lines_are_the_sessions_as_compact_json() -> None:
    lines = list(generate_lines(8, 3))
    dicts = list(generate_sessions(8, 3))
    assert [msgspec.json.decode(line) for line in lines] == dicts
    for line in lines:
        assert b"\n" not in line
        assert msgspec.json.format(line, indent=-1) == line


def test_count_is_respected() -> None:
    assert list(generate_sessions(0, 1)) == []
    assert len(list(generate_lines(17, 1))) == 17


def test_session_ids_are_unique_within_a_run() -> None:
    generated = list(generate_sessions(200, 9))
    identities = {(s["tenantId"], s["userSessionId"], s["startTime"]) for s in generated}
    assert len(identities) == 200


# --- validity --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_every_generated_session_is_valid(kind: str) -> None:
    options = GeneratorOptions(kind=kind)  # type: ignore[arg-type]
    lines = list(generate_lines(COUNT, 13, options))
    for line, session in zip(lines, generate_sessions(COUNT, 13, options), strict=True):
        decoded = decode_session(line)
        assert decoded.identity == (session["tenantId"], session["userSessionId"], session["startTime"])


def test_mixed_contains_every_kind() -> None:
    generated = sessions("mixed", seed=1)
    types = {(s["applicationType"], s["userType"] == "SYNTHETIC") for s in generated}
    assert ("WEB_APPLICATION", False) in types
    assert ("WEB_APPLICATION", True) in types
    assert ("MOBILE_APPLICATION", False) in types


# --- consistency -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_session_fields_are_consistent_with_its_content(kind: str) -> None:
    for s in sessions(kind):
        actions = s["userActions"]
        assert actions
        assert s["startTime"] == actions[0]["startTime"]
        assert s["endTime"] == max(a["endTime"] for a in actions)
        assert s["duration"] == s["endTime"] - s["startTime"]
        assert s["userActionCount"] == len(actions)
        assert s["totalErrorCount"] == len(s["errors"])
        assert s["bounce"] == (len(actions) <= 1)
        assert s["hasError"] == bool(s["errors"])
        assert s["hasCrash"] == any(e["type"] == "Crash" for e in s["errors"])
        assert s["numberOfRageClicks"] == sum(1 for e in s["events"] if e["type"] == "RageClick")
        starts = [a["startTime"] for a in actions]
        assert starts == sorted(starts)
        for action in actions:
            assert action["endTime"] - action["startTime"] == action["duration"] > 0


@pytest.mark.parametrize("kind", KINDS)
def test_session_score_follows_its_actions(kind: str) -> None:
    for s in sessions(kind):
        expected = user_experience_score(
            (ApdexCategory(a["apdexCategory"]) for a in s["userActions"]),
            errors=sum(1 for e in s["errors"] if e["type"] == "Error"),
            rage_events=s["numberOfRageClicks"],
            crashes=sum(1 for e in s["errors"] if e["type"] == "Crash"),
        )
        assert s["userExperienceScore"] == expected.value


def test_synthetic_sessions_are_synthetic_with_numbered_events() -> None:
    for s in sessions("synthetic"):
        assert s["userType"] == "SYNTHETIC"
        assert s["endReason"] == "END_EVENT"
        events = s["syntheticEvents"]
        assert [e["sequenceNumber"] for e in events] == list(range(1, len(s["userActions"]) + 1))
        assert [e["syntheticEventId"] for e in events] == [a["syntheticEventId"] for a in s["userActions"]]


def test_synthetic_sessions_in_a_mixed_run_are_numbered_too() -> None:
    synthetic = [s for s in sessions("mixed", seed=2) if s["userType"] == "SYNTHETIC"]
    assert synthetic
    for s in synthetic:
        assert [e["sequenceNumber"] for e in s["syntheticEvents"]] == list(range(1, s["userActionCount"] + 1))


@pytest.mark.parametrize("kind", ["web", "mobile"])
def test_non_synthetic_sessions_have_no_synthetic_events(kind: str) -> None:
    for s in sessions(kind):
        assert s["userType"] in ("REAL_USER", "ROBOT")
        assert "syntheticEvents" not in s


def test_mobile_sessions_are_mobile_applications() -> None:
    for s in sessions("mobile"):
        assert s["applicationType"] == "MOBILE_APPLICATION"
        assert all(a["type"] == "Custom" for a in s["userActions"])


# --- time window and action counts -----------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "options",
    [
        GeneratorOptions(),
        GeneratorOptions(end_ms=1_760_000_000_000, span_ms=3 * 60 * 60 * 1000),
        GeneratorOptions(end_ms=1_600_000_000_000, span_ms=48 * 60 * 60 * 1000),
    ],
)
def test_all_times_fall_within_the_window(kind: Kind, options: GeneratorOptions) -> None:
    low, high = options.end_ms - options.span_ms, options.end_ms
    for s in generate_sessions(COUNT, 21, dataclasses.replace(options, kind=kind)):
        for t in all_times(s):
            assert low <= t <= high, (s["userSessionId"], t)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bounds", [(1, 1), (3, 5), (10, 12)])
def test_action_count_range_is_respected(kind: str, bounds: tuple[int, int]) -> None:
    low, high = bounds
    seen = set()
    for s in sessions(kind, seed=8, actions=bounds):
        count = len(s["userActions"])
        seen.add(count)
        assert count <= high
        if not s["hasCrash"]:
            assert count >= low
        else:  # a mobile session ends with its crash
            assert s["applicationType"] == "MOBILE_APPLICATION"
            assert s["userActions"][-1]["hasCrash"] is True
            assert count >= 1
    assert high in seen


def test_action_count_range_covers_its_bounds() -> None:
    counts = {len(s["userActions"]) for s in sessions("web", seed=4, actions=(2, 4))}
    assert counts == {2, 3, 4}


def test_mobile_session_stops_at_its_crash() -> None:
    generated = generate_sessions(300, 1, GeneratorOptions(kind="mobile", actions=(10, 12)))
    crashed = [s for s in generated if s["hasCrash"]]
    assert crashed
    assert any(len(s["userActions"]) < 10 for s in crashed)
    for s in crashed:
        actions = s["userActions"]
        assert [a["hasCrash"] for a in actions] == [False] * (len(actions) - 1) + [True]
        [crash] = [e for e in s["errors"] if e["type"] == "Crash"]
        assert crash["startTime"] == actions[-1]["endTime"] == s["endTime"]
        assert actions[-1]["apdexCategory"] == "FRUSTRATED"
        assert s["userExperienceScore"] == "FRUSTRATED"
