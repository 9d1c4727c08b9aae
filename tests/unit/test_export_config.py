"""Export configuration from a settings value, tuning knobs, backoff and alert titles."""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import random
from typing import Any

import pytest

from sessionexport.export.answers import retry_after_seconds
from sessionexport.export.config import BasicAuth, ExportConfig, OAuth2, SendDirect, export_config
from sessionexport.export.delivery import (
    RETRY_AFTER_MAX_SECONDS,
    TIMEOUT_TITLE,
    Attempt,
    Outcome,
    Sender,
    backoff_seconds,
)
from sessionexport.export.tuning import KNOBS, ExportTuning, TuningError, parse_tuning

PLAIN: dict[str, Any] = {
    "endpointDefinition": {
        "endpointUrl": "  https://receiver.example.com/sessions  ",
        "enableUserSessionExport": True,
        "contentType": "application/x-ndjson",
        "usePost": True,
    },
    "authentication": {"active": False},
    "sendDirect": {"active": False},
    "exportBehavior": {"disableNotification": False, "managementZone": None, "customConfiguration": None},
}


def value(**changes: dict[str, Any]) -> dict[str, Any]:
    """PLAIN with some sections replaced (or, for endpointDefinition/exportBehavior, updated)."""
    v = copy.deepcopy(PLAIN)
    for section, content in changes.items():
        if section in ("endpointDefinition", "exportBehavior"):
            v[section].update(content)
        else:
            v[section] = content
    return v


# --- export_config --------------------------------------------------------------------------------------


def test_plain_value() -> None:
    config = export_config("exp-1", value())
    assert config.export_id == "exp-1"
    assert config.endpoint_url == "https://receiver.example.com/sessions"  # stripped
    assert config.enabled is True
    assert config.content_type == "application/x-ndjson"
    assert config.use_post is True
    assert config.method == "POST"
    assert config.auth is None
    assert config.send_direct is None
    assert config.management_zone is None
    assert config.disable_notification is False
    assert config.tuning == ExportTuning()


def test_put_when_use_post_is_false() -> None:
    config = export_config("e", value(endpointDefinition={"usePost": False}))
    assert config.use_post is False
    assert config.method == "PUT"


def test_disabled_export_zone_and_notifications() -> None:
    config = export_config(
        "e",
        value(
            endpointDefinition={"enableUserSessionExport": False, "contentType": "application/json"},
            exportBehavior={"managementZone": "zone-object-id", "disableNotification": True},
        ),
    )
    assert config.enabled is False
    assert config.content_type == "application/json"
    assert config.management_zone == "zone-object-id"
    assert config.disable_notification is True


def test_missing_optional_behaviour_keys() -> None:
    v = value()
    v["exportBehavior"] = {"disableNotification": False}
    config = export_config("e", v)
    assert config.management_zone is None
    assert config.tuning == ExportTuning()


def test_basic_auth() -> None:
    config = export_config(
        "e",
        value(
            authentication={
                "active": True,
                "authType": "basic",
                "basicAuth": {"username": "alice", "password": "s3cret"},
            }
        ),
    )
    assert config.auth == BasicAuth("alice", "s3cret")


def test_inactive_auth_is_none_even_with_details() -> None:
    config = export_config(
        "e",
        value(
            authentication={
                "active": False,
                "authType": "basic",
                "basicAuth": {"username": "alice", "password": "s3cret"},
            }
        ),
    )
    assert config.auth is None


def oauth(scope: Any) -> dict[str, Any]:
    details = {
        "accessTokenUrl": " https://idp.example.com/token ",
        "clientId": "cid",
        "clientSecret": "csecret",
    }
    if scope is not ...:
        details["scope"] = scope
    return {"active": True, "authType": "oauth2", "oAuth2": details}


def test_oauth2() -> None:
    config = export_config("e", value(authentication=oauth("sessions.write")))
    assert config.auth == OAuth2("https://idp.example.com/token", "cid", "csecret", "sessions.write")


@pytest.mark.parametrize("scope", ["", None, ...])
def test_oauth2_empty_or_missing_scope_is_none(scope: Any) -> None:
    config = export_config("e", value(authentication=oauth(scope)))
    assert isinstance(config.auth, OAuth2)
    assert config.auth.scope is None
    assert config.auth.token_url == "https://idp.example.com/token"


def test_send_direct_with_doc_type() -> None:
    config = export_config(
        "e", value(sendDirect={"active": True, "indexName": "sessions", "docType": "_doc"})
    )
    assert config.send_direct == SendDirect("sessions", "_doc")


@pytest.mark.parametrize("doc_type", ["", "  ", None, ...])  # blanks stored before they became null
def test_send_direct_without_doc_type(doc_type: Any) -> None:
    direct: dict[str, Any] = {"active": True, "indexName": "sessions"}
    if doc_type is not ...:
        direct["docType"] = doc_type
    config = export_config("e", value(sendDirect=direct))
    assert config.send_direct == SendDirect("sessions", None)


def test_inactive_send_direct_is_none() -> None:
    config = export_config(
        "e", value(sendDirect={"active": False, "indexName": "sessions", "docType": "_doc"})
    )
    assert config.send_direct is None


def test_tuning_from_custom_configuration() -> None:
    config = export_config(
        "e", value(exportBehavior={"customConfiguration": '{"flushIntervalSeconds": 1, "retries": 5}'})
    )
    assert config.tuning == ExportTuning(flushIntervalSeconds=1, retries=5)
    assert config.tuning.flushMaxSessions == 1000


def test_invalid_custom_configuration_raises() -> None:
    with pytest.raises(TuningError, match="retries"):
        export_config("e", value(exportBehavior={"customConfiguration": '{"retries": -1}'}))


# --- parse_tuning ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [None, "", "   ", "\n\t"])
def test_blank_tuning_is_all_defaults(text: str | None) -> None:
    assert parse_tuning(text) == ExportTuning()


def test_every_knob_can_be_set() -> None:
    tuning = parse_tuning(
        '{"flushMaxSessions": 10, "flushMaxBytes": 2048, "flushQuietSeconds": 1.5, "flushIntervalSeconds": 0.5,'
        ' "retries": 0, "backoffSeconds": 0, "backoffMaxSeconds": 2, "timeoutSeconds": 10, "concurrency": 4,'
        ' "shards": 3, "compression": "gzip"}'
    )
    assert tuning == ExportTuning(
        flushMaxSessions=10,
        flushMaxBytes=2048,
        flushQuietSeconds=1.5,
        flushIntervalSeconds=0.5,
        retries=0,
        backoffSeconds=0,
        backoffMaxSeconds=2,
        timeoutSeconds=10,
        concurrency=4,
        shards=3,
        compression="gzip",
    )


def test_unknown_knob_names_it_and_lists_the_knobs() -> None:
    with pytest.raises(TuningError) as info:
        parse_tuning('{"flushMaxSession": 5}')
    message = str(info.value)
    assert "flushMaxSession`" in message
    assert "known knobs: " + ", ".join(KNOBS) in message
    assert KNOBS == (
        "flushMaxSessions",
        "flushMaxBytes",
        "flushQuietSeconds",
        "flushIntervalSeconds",
        "retries",
        "backoffSeconds",
        "backoffMaxSeconds",
        "timeoutSeconds",
        "concurrency",
        "shards",
        "compression",
    )


@pytest.mark.parametrize(
    ("text", "knob"),
    [
        ('{"flushMaxSessions": 0}', "flushMaxSessions"),
        ('{"flushMaxSessions": 100001}', "flushMaxSessions"),
        ('{"flushMaxBytes": 1023}', "flushMaxBytes"),
        ('{"flushQuietSeconds": 0}', "flushQuietSeconds"),
        ('{"flushIntervalSeconds": 3601}', "flushIntervalSeconds"),
        ('{"retries": 21}', "retries"),
        ('{"retries": -1}', "retries"),
        ('{"backoffSeconds": -0.5}', "backoffSeconds"),
        ('{"timeoutSeconds": 0}', "timeoutSeconds"),
        ('{"concurrency": 17}', "concurrency"),
        ('{"shards": 0}', "shards"),
        ('{"shards": 65}', "shards"),
        ('{"retries": "3"}', "retries"),
        ('{"compression": true}', "compression"),
    ],
)
def test_range_and_type_errors_name_the_knob(text: str, knob: str) -> None:
    with pytest.raises(TuningError) as info:
        parse_tuning(text)
    assert str(info.value).startswith(f"{knob}: ")


def test_a_choice_out_of_its_list_names_the_choices() -> None:
    with pytest.raises(TuningError) as info:
        parse_tuning('{"compression": "zstd"}')
    assert str(info.value) == "compression: Invalid enum value 'zstd'; expected one of none, gzip"


@pytest.mark.parametrize(
    ("text", "kind"), [("[1, 2]", "array"), ('"retries"', "str"), ("5", "int"), ("null", "null")]
)
def test_non_object_is_refused_with_the_knobs(text: str, kind: str) -> None:
    with pytest.raises(TuningError) as info:
        parse_tuning(text)
    message = str(info.value)
    assert message.startswith("must be a JSON object of knobs (" + ", ".join(KNOBS) + ")")
    assert f"got `{kind}`" in message


@pytest.mark.parametrize("text", ["{retries: 5}", '{"retries": 5', "flushMaxSessions=5"])
def test_invalid_json(text: str) -> None:
    with pytest.raises(TuningError, match=r"^not valid JSON: "):
        parse_tuning(text)


def test_tuning_error_is_a_value_error() -> None:
    assert issubclass(TuningError, ValueError)


# --- backoff --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry", "base", "cap", "nominal"),
    [
        (1, 1.0, 30.0, 1.0),
        (2, 1.0, 30.0, 2.0),
        (3, 1.0, 30.0, 4.0),
        (4, 0.5, 30.0, 4.0),
        (5, 1.0, 30.0, 16.0),
        (6, 1.0, 30.0, 30.0),  # 32 capped
        (20, 1.0, 30.0, 30.0),
        (3, 2.0, 5.0, 5.0),
        (2, 0.0, 30.0, 0.0),
    ],
)
def test_backoff_is_exponential_with_jitter_and_capped(
    retry: int, base: float, cap: float, nominal: float
) -> None:
    for _ in range(200):
        delay = backoff_seconds(retry, base, cap)
        assert 0.8 * nominal <= delay <= nominal
        assert delay <= cap


def test_backoff_jitter_bounds_are_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[float, float]] = []

    def fake_uniform(low: float, high: float) -> float:
        calls.append((low, high))
        return low

    monkeypatch.setattr(random, "uniform", fake_uniform)
    assert backoff_seconds(3, 1.0, 30.0) == pytest.approx(0.8 * 4.0)
    assert backoff_seconds(10, 1.0, 30.0) == pytest.approx(0.8 * 30.0)
    monkeypatch.setattr(random, "uniform", lambda low, high: high)
    assert backoff_seconds(3, 1.0, 30.0) == pytest.approx(4.0)
    assert backoff_seconds(10, 1.0, 30.0) == pytest.approx(30.0)
    assert calls == [(0.8, 1.0), (0.8, 1.0)]


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [(None, 1.0), (0.5, 1.0), (20.0, 20.0), (10_000.0, RETRY_AFTER_MAX_SECONDS)],
    ids=["none", "shorter-than-backoff", "longer", "beyond-the-cap"],
)
async def test_a_retry_after_longer_than_the_backoff_is_waited_out(
    monkeypatch: pytest.MonkeyPatch, retry_after: float | None, expected: float
) -> None:
    monkeypatch.setattr(random, "uniform", lambda a, b: b)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    config = ExportConfig(
        "x",
        "https://e",
        True,
        "application/json",
        True,
        None,
        None,
        None,
        False,
        ExportTuning(backoffSeconds=1),
    )
    sender = Sender(config, None, None, sleep)  # type: ignore[arg-type]
    await sender.backoff(1, Attempt(1, 0, 1, status=429, retry_after=retry_after))
    assert waits == [expected]


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("20", 20.0),
        (" 0 ", 0.0),
        ("Fri, 27 Nov 2026 12:00:30 GMT", 30.0),
        ("Fri, 27 Nov 2026 11:00:00 GMT", 0.0),  # past: at once
        ("soon", None),
        ("-5", None),
        ("\u00b2", None),  # a digit to str.isdigit, not to float: never a crash
        ("\u0663", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_is_read_as_seconds_or_an_http_date(header: str | None, seconds: float | None) -> None:
    now = int(dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC).timestamp() * 1000)
    assert retry_after_seconds(header, now) == seconds


def test_backoff_grows() -> None:
    delays = [backoff_seconds(n, 1.0, 1000.0) for n in range(1, 8)]
    # each step doubles the nominal delay: even worst-case jitter (1.0 then 0.8) keeps it growing
    assert all(later > earlier for earlier, later in itertools.pairwise(delays))
    assert isinstance(delays[0], float)


# --- alert titles ---------------------------------------------------------------------------------------


def attempt(number: int, **kwargs: Any) -> Attempt:
    return Attempt(number=number, at=1_000 * number, duration_ms=5, **kwargs)


def test_alert_title_for_a_timed_out_last_attempt() -> None:
    outcome = Outcome(
        delivered=False,
        attempts=[
            attempt(1, status=503, error="HTTP 503"),
            attempt(2, error="no answer within 30 s", timed_out=True),
        ],
    )
    assert outcome.alert_title == TIMEOUT_TITLE == "Request timeout"


def test_alert_title_for_an_http_status() -> None:
    outcome = Outcome(delivered=False, attempts=[attempt(1, status=502, error="HTTP 502")])
    assert outcome.alert_title == "Request failed: HTTP 502"
    # a status with no error text still says which status
    assert (
        Outcome(delivered=False, attempts=[attempt(1, status=500)]).alert_title == "Request failed: HTTP 500"
    )


def test_alert_title_for_an_error_string() -> None:
    outcome = Outcome(delivered=False, attempts=[attempt(1, error="connection refused")])
    assert outcome.alert_title == "Request failed: connection refused"


def test_alert_title_uses_only_the_last_attempt() -> None:
    outcome = Outcome(
        delivered=False,
        attempts=[
            attempt(1, error="no answer within 30 s", timed_out=True),
            attempt(2, error="OAuth token: invalid_client", token_failure=True),
        ],
    )
    assert outcome.alert_title == "Request failed: OAuth token: invalid_client"
    assert outcome.last.number == 2


def test_attempt_as_json() -> None:
    assert attempt(2, status=500, error="HTTP 500").as_json() == {
        "attempt": 2,
        "at": 2_000,
        "durationMs": 5,
        "status": 500,
        "error": "HTTP 500",
    }
