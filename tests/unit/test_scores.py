"""Apdex per action and the user experience score per session."""

from __future__ import annotations

import pytest

from sessionexport.model.scores import ApdexThresholds, UxScoreSettings, apdex_category, user_experience_score
from sessionexport.model.session import ApdexCategory, UserExperienceScore

S, T, F, U = (
    ApdexCategory.SATISFIED,
    ApdexCategory.TOLERATING,
    ApdexCategory.FRUSTRATED,
    ApdexCategory.UNKNOWN,
)
NO_LAST = UxScoreSettings(consider_last_action=False)

# --- apdex -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("duration", "expected"),
    [
        (0, S),
        (1, S),
        (2_999, S),
        (3_000, S),
        (3_001, T),
        (11_999, T),
        (12_000, T),
        (12_001, F),
        (600_000, F),
    ],
)
def test_apdex_thresholds_are_inclusive(duration: int, expected: ApdexCategory) -> None:
    assert apdex_category(duration, has_error=False) is expected


@pytest.mark.parametrize("duration", [None, 0, 3_000, 12_000, 12_001])
def test_apdex_action_with_errors_is_frustrated_whatever_its_speed(duration: int | None) -> None:
    assert apdex_category(duration, has_error=True) is F


def test_apdex_without_duration_is_unknown() -> None:
    assert apdex_category(None, has_error=False) is U


def test_apdex_custom_thresholds() -> None:
    thresholds = ApdexThresholds(tolerated_ms=500, frustrated_ms=2_000)
    assert apdex_category(500, False, thresholds) is S
    assert apdex_category(501, False, thresholds) is T
    assert apdex_category(2_000, False, thresholds) is T
    assert apdex_category(2_001, False, thresholds) is F
    # the defaults are untouched by a custom instance
    assert apdex_category(2_001, False) is S


# --- user experience score -------------------------------------------------------------------


def test_documented_worked_example_is_frustrated() -> None:
    # F=9, T=9, S=6: 9 / 24 = 37.5% > 30%; the last action is not frustrated
    actions = [F, F, F, T, T, T, S, S]
    assert user_experience_score(actions) is UserExperienceScore.FRUSTRATED
    assert user_experience_score(actions, settings=NO_LAST) is UserExperienceScore.FRUSTRATED


def test_worked_example_with_a_higher_threshold_is_tolerated() -> None:
    actions = [F, F, F, T, T, T, S, S]
    lenient = UxScoreSettings(max_frustrated_percent=40)
    assert user_experience_score(actions, settings=lenient) is UserExperienceScore.TOLERATED


def test_frustrated_share_must_exceed_the_threshold() -> None:
    # 9 errors (F=9) and 7 satisfied actions (S=21): exactly 30% is not above 30%
    assert user_experience_score([S] * 7, errors=9) is UserExperienceScore.TOLERATED
    # one more error: 10 / 31 = 32.3%
    assert user_experience_score([S] * 7, errors=10) is UserExperienceScore.FRUSTRATED


def test_all_satisfied_is_satisfied() -> None:
    assert user_experience_score([S]) is UserExperienceScore.SATISFIED
    assert user_experience_score([S] * 20) is UserExperienceScore.SATISFIED


def test_satisfied_needs_the_minimum_satisfied_share() -> None:
    assert user_experience_score([S, T]) is UserExperienceScore.SATISFIED  # 50% >= 50%
    assert user_experience_score([S, T, T]) is UserExperienceScore.TOLERATED  # 33% < 50%
    assert user_experience_score([T, T, T]) is UserExperienceScore.TOLERATED


def test_any_error_prevents_satisfied() -> None:
    assert user_experience_score([S] * 50, errors=1) is UserExperienceScore.TOLERATED


def test_a_frustrated_action_prevents_satisfied() -> None:
    # 3 / 60 = 5% frustrated, not the last action
    assert user_experience_score([F, *[S] * 19]) is UserExperienceScore.TOLERATED


def test_a_crash_dominates() -> None:
    assert user_experience_score([S] * 100, crashes=1) is UserExperienceScore.FRUSTRATED
    assert user_experience_score([], crashes=1) is UserExperienceScore.FRUSTRATED


def test_last_action_frustrated_decides_when_considered() -> None:
    actions = [S, S, S, S, F]  # 3 / 15 = 20%: below the threshold
    assert user_experience_score(actions) is UserExperienceScore.FRUSTRATED
    assert user_experience_score(actions, settings=NO_LAST) is UserExperienceScore.TOLERATED


def test_unknown_actions_do_not_count_as_the_last_one() -> None:
    assert user_experience_score([S, S, S, S, F, U, U]) is UserExperienceScore.FRUSTRATED
    assert user_experience_score([S, S, S, S, U]) is UserExperienceScore.SATISFIED


def test_unknown_actions_carry_no_weight() -> None:
    # with weight they would pull S below 50%
    assert user_experience_score([S, *[U] * 10]) is UserExperienceScore.SATISFIED


def test_no_rated_elements_is_undefined() -> None:
    assert user_experience_score([]) is UserExperienceScore.UNDEFINED
    assert user_experience_score([U, U, U]) is UserExperienceScore.UNDEFINED


def test_errors_alone_are_frustrated() -> None:
    assert user_experience_score([U], errors=1) is UserExperienceScore.FRUSTRATED


def test_rage_clicks_count_when_considered() -> None:
    # 5 rage clicks: F = 10 of 16
    assert user_experience_score([S, S], rage_events=5) is UserExperienceScore.FRUSTRATED
    # 1 rage click: F = 2 of 32, not satisfied
    assert user_experience_score([S] * 10, rage_events=1) is UserExperienceScore.TOLERATED


def test_rage_clicks_ignored_when_not_considered() -> None:
    ignore = UxScoreSettings(consider_rage_clicks=False)
    assert user_experience_score([S, S], rage_events=5, settings=ignore) is UserExperienceScore.SATISFIED
    assert user_experience_score([S] * 10, rage_events=1, settings=ignore) is UserExperienceScore.SATISFIED
    assert user_experience_score([], rage_events=3, settings=ignore) is UserExperienceScore.UNDEFINED


def test_actions_may_be_any_iterable() -> None:
    assert user_experience_score(iter([F, F, F, T, T, T, S, S])) is UserExperienceScore.FRUSTRATED
    assert user_experience_score(a for a in [S, S]) is UserExperienceScore.SATISFIED
