"""Apdex per user action and the user experience score per session (Dynatrace's documented rules)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sessionexport.model.session import ApdexCategory, UserExperienceScore


@dataclass(frozen=True, slots=True)
class ApdexThresholds:
    tolerated_ms: int = 3_000
    frustrated_ms: int = 12_000


def apdex_category(
    duration_ms: int | None, has_error: bool, thresholds: ApdexThresholds = ApdexThresholds()
) -> ApdexCategory:
    """An action with errors is FRUSTRATED whatever its speed; without a duration it is UNKNOWN."""
    if has_error:
        return ApdexCategory.FRUSTRATED
    if duration_ms is None:
        return ApdexCategory.UNKNOWN
    if duration_ms <= thresholds.tolerated_ms:
        return ApdexCategory.SATISFIED
    if duration_ms <= thresholds.frustrated_ms:
        return ApdexCategory.TOLERATING
    return ApdexCategory.FRUSTRATED


@dataclass(frozen=True, slots=True)
class UxScoreSettings:
    max_frustrated_percent: int = 30
    min_satisfied_percent: int = 50
    consider_last_action: bool = True
    consider_rage_clicks: bool = True


ACTION_WEIGHT, ERROR_WEIGHT, RAGE_WEIGHT, CRASH_WEIGHT = 3, 1, 2, 5000


def user_experience_score(
    actions: Iterable[ApdexCategory],
    errors: int = 0,
    rage_events: int = 0,
    crashes: int = 0,
    settings: UxScoreSettings = UxScoreSettings(),
) -> UserExperienceScore:
    """Weights: action 3 (its own rating), error 1, rage click 2, crash 5000 (all frustrating).

    Frustrated when frustrating weight / total > the frustrated threshold (the documented worked
    example: F=9, T=9, S=6 is 37.5% > 30%); satisfied when satisfied weight / total >= the satisfied
    threshold and nothing frustrated; tolerated otherwise.
    """
    rated = [a for a in actions if a is not ApdexCategory.UNKNOWN]
    weights = {"F": 0, "T": 0, "S": 0}
    for category in rated:
        weights[_CLASS[category]] += ACTION_WEIGHT
    weights["F"] += errors * ERROR_WEIGHT + crashes * CRASH_WEIGHT
    if settings.consider_rage_clicks:
        weights["F"] += rage_events * RAGE_WEIGHT
    total = sum(weights.values())
    if total == 0:
        return UserExperienceScore.UNDEFINED
    if settings.consider_last_action and rated and rated[-1] is ApdexCategory.FRUSTRATED:
        return UserExperienceScore.FRUSTRATED
    if weights["F"] * 100 > settings.max_frustrated_percent * total:
        return UserExperienceScore.FRUSTRATED
    if weights["F"] == 0 and weights["S"] * 100 >= settings.min_satisfied_percent * total:
        return UserExperienceScore.SATISFIED
    return UserExperienceScore.TOLERATED


_CLASS = {ApdexCategory.FRUSTRATED: "F", ApdexCategory.TOLERATING: "T", ApdexCategory.SATISFIED: "S"}
