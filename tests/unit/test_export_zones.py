"""Management zones: a session is in a zone when any enabled rule matches it."""

from __future__ import annotations

from typing import Any

import pytest

from sessionexport.export.zones import Rule, Zone, zone_from_value
from sessionexport.store.records import LogEntry


def session(
    applications: tuple[str, ...] = (),
    user_type: str | None = "REAL_USER",
    application_type: str | None = "WEB_APPLICATION",
    country: str | None = "Austria",
) -> LogEntry:
    return LogEntry(
        seq=1,
        received_at=0,
        tenant_id="t",
        user_session_id="u",
        start_time=1,
        user_type=user_type,
        application_type=application_type,
        country=country,
        applications=applications,
        body=b"{}",
    )


def rule(attribute: str, operator: str, value: str, **extra: Any) -> dict[str, Any]:
    return {"attribute": attribute, "operator": operator, "value": value, **extra}


def zone(*rules: dict[str, Any]) -> Zone:
    return zone_from_value({"name": "z", "rules": list(rules)})


EASY = session(("easyTravel", "APPLICATION-ABC123"))
MOBILE = session(
    ("easyTravel Mobile", "MOBILE_APPLICATION-752C288D59734C79"), application_type="MOBILE_APPLICATION"
)


# --- application name vs id ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attribute", "value", "expected"),
    [
        ("APPLICATION_NAME", "easyTravel", True),
        ("APPLICATION_NAME", "APPLICATION-ABC123", False),  # an id is not a name
        ("APPLICATION_ID", "APPLICATION-ABC123", True),
        ("APPLICATION_ID", "easyTravel", False),  # a name is not an id
    ],
)
def test_application_names_and_ids_are_told_apart(attribute: str, value: str, expected: bool) -> None:
    assert zone(rule(attribute, "EQUALS", value)).contains(EASY) is expected


def test_mobile_application_ids_are_ids() -> None:
    assert zone(rule("APPLICATION_ID", "EQUALS", "MOBILE_APPLICATION-752C288D59734C79")).contains(MOBILE)
    assert not zone(rule("APPLICATION_NAME", "EQUALS", "MOBILE_APPLICATION-752C288D59734C79")).contains(
        MOBILE
    )
    assert zone(rule("APPLICATION_NAME", "EQUALS", "easyTravel Mobile")).contains(MOBILE)


def test_application_id_prefix_matches_only_ids() -> None:
    assert zone(rule("APPLICATION_ID", "BEGINS_WITH", "MOBILE_")).contains(MOBILE)
    assert not zone(rule("APPLICATION_ID", "BEGINS_WITH", "MOBILE_")).contains(EASY)
    # a name starting like an id prefix is still a name
    named = session(("Application shop",))
    assert not zone(rule("APPLICATION_ID", "BEGINS_WITH", "APPLICATION")).contains(named)
    assert zone(rule("APPLICATION_NAME", "BEGINS_WITH", "APPLICATION")).contains(named)


def test_any_user_action_application_is_enough() -> None:
    both = session(("other", "easyTravel", "third"))
    assert zone(rule("APPLICATION_NAME", "EQUALS", "easyTravel")).contains(both)


def test_session_without_a_matching_action_application_is_excluded() -> None:
    z = zone(rule("APPLICATION_NAME", "EQUALS", "easyTravel"))
    assert not z.contains(session(("other shop",)))
    assert not z.contains(session(()))


# --- operators and case ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operator", "value", "expected"),
    [
        ("EQUALS", "easyTravel", True),
        ("EQUALS", "easy", False),
        ("EQUALS", "easyTravel ", False),
        ("CONTAINS", "Trav", True),
        ("CONTAINS", "xyz", False),
        ("BEGINS_WITH", "easy", True),
        ("BEGINS_WITH", "Travel", False),
        ("REGEX", "^easy.*l$", True),
        ("REGEX", "Trav", True),  # a search, not a full match
        ("REGEX", "^Trav", False),
    ],
)
def test_operators(operator: str, value: str, expected: bool) -> None:
    assert zone(rule("APPLICATION_NAME", operator, value)).contains(EASY) is expected


@pytest.mark.parametrize(
    ("operator", "value"),
    [("EQUALS", "EASYTRAVEL"), ("CONTAINS", "TRAV"), ("BEGINS_WITH", "EASYt"), ("REGEX", "^EASY")],
)
def test_case_insensitive_by_default(operator: str, value: str) -> None:
    assert zone(rule("APPLICATION_NAME", operator, value)).contains(EASY)
    assert Rule("APPLICATION_NAME", operator, value).matcher()("easyTravel")


@pytest.mark.parametrize(
    ("operator", "value"),
    [("EQUALS", "EASYTRAVEL"), ("CONTAINS", "TRAV"), ("BEGINS_WITH", "EASYt"), ("REGEX", "^EASY")],
)
def test_case_sensitive_when_set(operator: str, value: str) -> None:
    assert not zone(rule("APPLICATION_NAME", operator, value, caseSensitive=True)).contains(EASY)
    assert not Rule("APPLICATION_NAME", operator, value, case_sensitive=True).matcher()("easyTravel")


@pytest.mark.parametrize(
    ("operator", "value"),
    [("EQUALS", "easyTravel"), ("CONTAINS", "Trav"), ("BEGINS_WITH", "easyT"), ("REGEX", "^easyT")],
)
def test_case_sensitive_exact_case_matches(operator: str, value: str) -> None:
    assert zone(rule("APPLICATION_NAME", operator, value, caseSensitive=True)).contains(EASY)


def test_case_insensitive_applies_to_the_session_value_too() -> None:
    assert zone(rule("APPLICATION_NAME", "EQUALS", "easytravel")).contains(session(("EASYTRAVEL",)))
    assert zone(rule("APPLICATION_ID", "EQUALS", "application-abc123")).contains(EASY)


# --- any-rule semantics and disabled rules --------------------------------------------------------------


def test_any_rule_matching_is_enough() -> None:
    z = zone(rule("COUNTRY", "EQUALS", "Germany"), rule("APPLICATION_NAME", "EQUALS", "easyTravel"))
    assert z.contains(EASY)
    assert not z.contains(session(("other",)))


def test_disabled_rules_are_ignored() -> None:
    z = zone(
        rule("APPLICATION_NAME", "EQUALS", "easyTravel", enabled=False),
        rule("COUNTRY", "EQUALS", "Germany", enabled=True),
    )
    assert not z.contains(EASY)
    assert z.contains(session(country="Germany"))


def test_zone_with_no_enabled_rule_matches_nothing() -> None:
    disabled = zone(rule("APPLICATION_NAME", "CONTAINS", "", enabled=False))
    assert not disabled.contains(EASY)
    assert not zone_from_value({"name": "empty", "rules": []}).contains(EASY)
    assert not zone_from_value({"name": "none"}).contains(EASY)
    assert not Zone([]).contains(EASY)


def test_enabled_defaults_to_true() -> None:
    assert zone(rule("APPLICATION_NAME", "EQUALS", "easyTravel")).contains(EASY)


# --- session attributes ---------------------------------------------------------------------------------


def test_user_type() -> None:
    z = zone(rule("USER_TYPE", "EQUALS", "REAL_USER"))
    assert z.contains(session(user_type="REAL_USER"))
    assert not z.contains(session(user_type="SYNTHETIC"))
    assert not z.contains(session(user_type=None))


def test_application_type() -> None:
    z = zone(rule("APPLICATION_TYPE", "BEGINS_WITH", "MOBILE"))
    assert z.contains(MOBILE)
    assert not z.contains(EASY)
    assert not z.contains(session(application_type=None))


def test_country() -> None:
    z = zone(rule("COUNTRY", "CONTAINS", "united"))
    assert z.contains(session(country="United States"))
    assert not z.contains(session(country="Austria"))
    assert not z.contains(session(country=None))


def test_attribute_rules_do_not_look_at_applications() -> None:
    assert not zone(rule("COUNTRY", "EQUALS", "easyTravel")).contains(EASY)
    assert not zone(rule("APPLICATION_NAME", "EQUALS", "Austria")).contains(EASY)


def test_a_catastrophic_pattern_runs_in_linear_time() -> None:
    """``^(a+)+$`` against 'a' * n + '!' takes 2**n steps on a backtracking engine (minutes at
    n = 34: the server would hang with it, and so would this test). RE2 answers at once."""
    in_zone = zone(rule("COUNTRY", "REGEX", "^(a+)+$"))
    assert not in_zone.contains(session(country="a" * 5000 + "!"))
    assert in_zone.contains(session(country="a" * 5000))


def test_case_insensitive_regex_rules_fold_case() -> None:
    assert zone(rule("COUNTRY", "REGEX", "^AUS")).contains(session(country="Austria"))
    assert not zone(rule("COUNTRY", "REGEX", "^AUS", caseSensitive=True)).contains(session(country="Austria"))
