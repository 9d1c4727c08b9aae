"""check-endpoint against real endpoints on loopback: a well-behaved one, and the same with planted faults."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from sessionexport.export.config import BasicAuth, OAuth2
from sessionexport.export.delivery import Attempt
from sessionexport.export.tuning import DYNATRACE_MAX_BYTES
from sessionexport.receiver.check import probe as probe_module
from sessionexport.receiver.check.checks import run_checks
from sessionexport.receiver.check.command import check_endpoint
from sessionexport.receiver.check.probe import CheckOptions
from sessionexport.receiver.check.verdicts import (
    CheckResult,
    CountError,
    Counts,
    Exchange,
    Outcome,
    judge_accepted,
    judge_resend,
    judge_response_times,
    judge_token_response,
)
from tests.support.broken_endpoint import BrokenEndpoint, Faults, parse_lines
from tests.support.receiver import Tls

TIMEOUT = 2.0  # seconds; short so that the slow-endpoint tests stay fast
USER, PASSWORD = "exporter", "s3cret:with-colon"
CLIENT, SECRET = "dynatrace", "client-secret"

SAMPLES = [f"samples {m} {t}" for m in ("PUT", "POST") for t in ("application/json", "application/x-ndjson")]
EVERY_CHECK = [
    "tls",
    *SAMPLES,
    "large bulk",
    "re-sent bulk",
    "gzip bulk",
    "auth: no credentials",
    "auth: wrong credentials",
    "invalid body",
    "response time",
]

Serve = Callable[..., BrokenEndpoint]


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    return Tls.create(tmp_path)


@pytest.fixture
def serve(tls: Tls) -> Iterator[Serve]:
    """Start endpoints (Basic auth unless told otherwise); all are stopped after the test."""
    started: list[BrokenEndpoint] = []

    def start(faults: Faults | None = None, **kwargs: Any) -> BrokenEndpoint:
        kwargs.setdefault("tls", tls)
        if "oauth_clients" not in kwargs:
            kwargs.setdefault("basic", (USER, PASSWORD))
        endpoint = BrokenEndpoint(faults=faults or Faults(), **kwargs).start()
        started.append(endpoint)
        return endpoint

    yield start
    for endpoint in started:
        endpoint.stop()


@pytest.fixture(autouse=True)
def counts_hold_still_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The endpoints here count what they stored at once (but where a test says otherwise): the
    count is not watched for a second before it is taken."""
    monkeypatch.setattr(probe_module, "SETTLE_MIN_SECONDS", 0.0)
    monkeypatch.setattr(probe_module, "SETTLE_STEP_SECONDS", 0.01)


def options(endpoint: BrokenEndpoint, tls: Tls, **overrides: Any) -> CheckOptions:
    auth: BasicAuth | OAuth2 | None = (
        OAuth2(endpoint.token_url, CLIENT, SECRET, "session-export")
        if endpoint.oauth_clients
        else BasicAuth(USER, PASSWORD)
        if endpoint.basic
        else None
    )
    values: dict[str, Any] = {
        "url": endpoint.url,
        "timeout": TIMEOUT,
        "ca_bundle": tls.ca_file,
        "auth": auth,
        "count_url": endpoint.count_url,
    }
    return CheckOptions(**{**values, **overrides})


def by_check(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.check: r for r in results}


def outcomes(results: list[CheckResult]) -> dict[str, Outcome]:
    return {r.check: r.outcome for r in results}


# -- a well-behaved endpoint passes everything ----------------------------------------------------------


async def test_well_behaved_endpoint_with_basic_auth_passes_every_check(serve: Serve, tls: Tls) -> None:
    endpoint = serve()
    started: list[str] = []
    results = await run_checks(options(endpoint, tls), started.append)
    assert [r.check for r in results] == EVERY_CHECK
    assert started == EVERY_CHECK[:-1]  # each said as it starts; the response times are judged after
    assert all(r.outcome is Outcome.PASS for r in results), results
    # What was sent is what an exporter sends: two different sessions with each method and content type,
    # a bulk filled up to the byte limit, and a re-sent bulk (deduplicated by this endpoint).
    assert [f"samples {method} {content_type}" for method, content_type in endpoint.requests[:4]] == SAMPLES
    samples, garbage = parse_lines(endpoint.bodies[0])
    assert len(samples) == 2 and garbage == 0
    assert {s["applicationType"] for s in samples} == {"MOBILE_APPLICATION", "WEB_APPLICATION"}
    assert endpoint.stored[:2] == [(s["tenantId"], s["userSessionId"], s["startTime"]) for s in samples]
    large = max(endpoint.bodies, key=len)
    assert DYNATRACE_MAX_BYTES * 0.9 < len(large) <= DYNATRACE_MAX_BYTES
    assert large.endswith(b"\n") and b"\n\n" not in large
    stored = len(endpoint.stored)
    assert len(set(endpoint.stored)) == stored
    assert f"{stored - 30} → {stored - 10} → {stored - 10}" in by_check(results)["re-sent bulk"].detail
    gzipped = by_check(results)["gzip bulk"].detail
    assert (
        gzipped
        == f"a gzip body (the compression knob): its 10 sessions were counted ({stored - 10} → {stored})"
    )


async def test_well_behaved_endpoint_with_oauth2_passes_every_check(serve: Serve, tls: Tls) -> None:
    endpoint = serve(oauth_clients={CLIENT: SECRET})
    results = await run_checks(options(endpoint, tls))
    assert [r.check for r in results] == [
        "tls",
        "oauth token",
        *EVERY_CHECK[1:-1],
        "oauth token reuse",
        "response time",
    ]
    assert all(r.outcome is Outcome.PASS for r in results), results
    assert len(endpoint.token_requests) == 1  # one token served the whole run
    assert endpoint.token_requests[0] == {
        "grant_type": "client_credentials",
        "scope": "session-export",
        "client_id": CLIENT,
        "client_secret": SECRET,
    }


async def test_without_auth_or_count_url_the_auth_checks_are_left_out(serve: Serve, tls: Tls) -> None:
    endpoint = serve(basic=None)
    results = await run_checks(options(endpoint, tls, count_url=None))
    assert [r.check for r in results] == [c for c in EVERY_CHECK if not c.startswith("auth")]
    assert all(r.outcome is Outcome.PASS for r in results), results
    assert "--count-url" in by_check(results)["re-sent bulk"].detail


# -- each planted fault is reported on its check --------------------------------------------------------


@pytest.mark.parametrize(
    ("faults", "said"),
    [
        (
            Faults(refuses_gzip=True),
            "HTTP 415 for a gzip body (the compression knob): leave compression at none",
        ),
        (Faults(ignores_gzip=True), "for 10 new sessions: it may not read gzip; leave compression at none"),
    ],
)
async def test_an_endpoint_that_does_not_read_gzip_warns_to_leave_compression_off(
    serve: Serve, tls: Tls, faults: Faults, said: str
) -> None:
    results = await run_checks(options(serve(faults), tls))
    assert {r.check for r in results if r.outcome is not Outcome.PASS} == {"gzip bulk"}
    assert by_check(results)["gzip bulk"].outcome is Outcome.WARN
    assert said in by_check(results)["gzip bulk"].detail


async def test_a_post_only_endpoint_is_not_said_to_judge_bodies_nor_to_refuse_gzip(
    serve: Serve, tls: Tls
) -> None:
    """Its 405 for every PUT is the fault; the checks of bodies and of compression do not claim it
    as theirs (the invalid body was refused before it was read; gzip fared as the plain bulks)."""
    results = by_check(await run_checks(options(serve(Faults(post_only=True)), tls)))
    assert results["large bulk"].outcome is Outcome.FAIL
    assert results["invalid body"].outcome is Outcome.WARN
    assert (
        "HTTP 405 for a line that is not JSON: that says nothing of the body"
        in results["invalid body"].detail
    )
    assert results["gzip bulk"].outcome is Outcome.WARN
    assert "as for the same bulk uncompressed: not about compression" in results["gzip bulk"].detail


async def test_bulks_go_as_the_export_sends_them_and_another_way_refused_only_warns(
    serve: Serve, tls: Tls
) -> None:
    endpoint = serve(Faults(post_only=True))
    results = await run_checks(options(endpoint, tls, use_post=True))
    assert not [r for r in results if r.outcome is Outcome.FAIL], results
    for label in ("samples PUT application/json", "samples PUT application/x-ndjson"):
        assert by_check(results)[label].outcome is Outcome.WARN
        assert "(an export to it must send POST application/json)" in by_check(results)[label].detail
    bulks = [request for request in endpoint.requests if request[0] == "POST"]
    # a content type as an export may be saved with: parameters and all
    typed = serve()
    await run_checks(options(typed, tls, content_type="application/json; charset=utf-8"))
    assert typed.requests[4] == ("PUT", "application/json; charset=utf-8")  # the large bulk
    assert len(bulks) >= 6 and ("PUT", "application/json") not in endpoint.requests[4:]  # after the samples


async def test_with_an_index_bulks_go_as_send_direct_sends_them(serve: Serve, tls: Tls) -> None:
    """POST and NDJSON, as the settings require of an export with sendDirect."""
    endpoint = serve()
    await run_checks(options(endpoint, tls, index="sessions"))
    assert set(endpoint.requests[4:]) == {("POST", "application/x-ndjson")}  # after the 4 samples


async def test_a_count_that_rises_a_moment_later_is_waited_for(
    serve: Serve, tls: Tls, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As Elasticsearch's _count, which counts documents from the index's next refresh."""
    monkeypatch.setattr(probe_module, "SETTLE_MIN_SECONDS", 1.2)
    monkeypatch.setattr(probe_module, "SETTLE_STEP_SECONDS", 0.4)
    results = by_check(await run_checks(options(serve(Faults(counted_after=1.0)), tls)))
    assert results["re-sent bulk"].outcome is Outcome.PASS, results["re-sent bulk"]
    assert results["gzip bulk"].outcome is Outcome.PASS, results["gzip bulk"]


async def test_sessions_lost_from_an_answered_bulk_fail_and_are_not_blamed_on_gzip(
    serve: Serve, tls: Tls
) -> None:
    """It answers 200 and keeps only the shorter lines of a bulk."""
    results = by_check(await run_checks(options(serve(Faults(drops_lines_over=6000)), tls, seed=1)))
    assert results["re-sent bulk"].outcome is Outcome.FAIL
    assert (
        "sessions lost: 20 new sessions answered 2xx raised the count by only"
        in results["re-sent bulk"].detail
    )
    assert results["gzip bulk"].outcome is Outcome.WARN
    assert "not about compression" in results["gzip bulk"].detail


async def test_an_endpoint_that_keeps_nothing_is_not_said_to_refuse_gzip(serve: Serve, tls: Tls) -> None:
    results = by_check(await run_checks(options(serve(Faults(stores_nothing=True)), tls)))
    assert "are --count-url/--count-key right?" in results["re-sent bulk"].detail
    assert "not about compression (see the re-sent bulk)" in results["gzip bulk"].detail
    assert "may not read gzip" not in results["gzip bulk"].detail


async def test_post_answering_500_fails_the_post_samples(serve: Serve, tls: Tls) -> None:
    results = outcomes(await run_checks(options(serve(Faults(post_fails=True)), tls)))
    assert {name: results[name] for name in SAMPLES} == {
        "samples PUT application/json": Outcome.PASS,
        "samples PUT application/x-ndjson": Outcome.PASS,
        "samples POST application/json": Outcome.FAIL,
        "samples POST application/x-ndjson": Outcome.FAIL,
    }


async def test_413_on_a_full_bulk_fails_the_large_bulk(serve: Serve, tls: Tls) -> None:
    results = by_check(await run_checks(options(serve(Faults(max_body_bytes=500_000)), tls)))
    assert results["large bulk"].outcome is Outcome.FAIL
    assert "HTTP 413" in results["large bulk"].detail
    assert all(results[name].outcome is Outcome.PASS for name in SAMPLES)


async def test_an_answer_slower_than_half_the_timeout_warns(serve: Serve, tls: Tls) -> None:
    endpoint = serve(Faults(slow_seconds=TIMEOUT * 0.6, slow_over_bytes=500_000))
    results = by_check(await run_checks(options(endpoint, tls)))
    assert results["response time"].outcome is Outcome.WARN
    assert "large bulk" in results["response time"].detail
    assert results["large bulk"].outcome is Outcome.PASS


async def test_no_answer_within_the_timeout_fails(serve: Serve, tls: Tls) -> None:
    endpoint = serve(Faults(slow_seconds=TIMEOUT + 0.5, slow_over_bytes=500_000))
    results = by_check(await run_checks(options(endpoint, tls)))
    assert results["response time"].outcome is Outcome.FAIL
    assert results["large bulk"].outcome is Outcome.FAIL
    assert "no answer within 2 s" in results["large bulk"].detail


async def test_storing_a_resent_bulk_twice_fails(serve: Serve, tls: Tls) -> None:
    results = by_check(await run_checks(options(serve(Faults(stores_duplicates=True)), tls)))
    assert results["re-sent bulk"].outcome is Outcome.FAIL
    assert "duplicates stored twice" in results["re-sent bulk"].detail


async def test_a_count_that_cannot_be_read_warns(serve: Serve, tls: Tls) -> None:
    endpoint = serve()
    results = by_check(await run_checks(options(endpoint, tls, count_key="stats.total")))
    assert results["re-sent bulk"].outcome is Outcome.WARN
    assert "no 'stats.total'" in results["re-sent bulk"].detail


async def test_accepting_requests_without_credentials_fails(serve: Serve, tls: Tls) -> None:
    results = outcomes(await run_checks(options(serve(Faults(accepts_without_credentials=True)), tls)))
    assert results["auth: no credentials"] is Outcome.FAIL
    assert results["auth: wrong credentials"] is Outcome.PASS


@pytest.mark.parametrize("auth", ["basic", "oauth2"])
async def test_accepting_wrong_credentials_fails(serve: Serve, tls: Tls, auth: str) -> None:
    faults = Faults(accepts_wrong_credentials=True)
    endpoint = serve(faults, oauth_clients={CLIENT: SECRET}) if auth == "oauth2" else serve(faults)
    results = outcomes(await run_checks(options(endpoint, tls)))
    assert results["auth: wrong credentials"] is Outcome.FAIL
    assert results["auth: no credentials"] is Outcome.PASS


async def test_accepting_garbage_warns(serve: Serve, tls: Tls) -> None:
    results = by_check(await run_checks(options(serve(Faults(accepts_garbage=True)), tls)))
    assert results["invalid body"].outcome is Outcome.WARN
    assert [r.check for r in results.values() if r.outcome is not Outcome.PASS] == ["invalid body"]


async def test_a_token_without_expires_in_warns(serve: Serve, tls: Tls) -> None:
    endpoint = serve(Faults(token_fields={"expires_in": None}), oauth_clients={CLIENT: SECRET})
    results = by_check(await run_checks(options(endpoint, tls)))
    assert results["oauth token"].outcome is Outcome.WARN
    assert "expires_in" in results["oauth token"].detail
    assert results["large bulk"].outcome is Outcome.PASS  # the token still works


async def test_a_token_with_an_expires_at_of_its_own_is_used_by_its_expires_in(
    serve: Serve, tls: Tls
) -> None:
    """No field of RFC 6749: not read (it crashed the check, as it did the exporter)."""
    endpoint = serve(Faults(token_fields={"expires_at": {"a": 1}}), oauth_clients={CLIENT: SECRET})
    results = by_check(await run_checks(options(endpoint, tls)))
    assert results["oauth token"].outcome is Outcome.PASS
    assert results["large bulk"].outcome is Outcome.PASS


async def test_a_token_refused_before_it_expires_warns(serve: Serve, tls: Tls) -> None:
    """The exporter asks for a new token on a 401 and sends again: nothing is lost, but each
    refusal costs a token request and a second send."""
    endpoint = serve(Faults(tokens_used_once=True), oauth_clients={CLIENT: SECRET})
    results = by_check(await run_checks(options(endpoint, tls)))
    assert results["large bulk"].outcome is Outcome.PASS  # sent again with a new token
    assert results["oauth token reuse"].outcome is Outcome.WARN
    assert "the endpoint refused a token it had issued" in results["oauth token reuse"].detail
    assert len(endpoint.token_requests) > 5


async def test_a_token_that_is_not_bearer_fails_and_stops(serve: Serve, tls: Tls) -> None:
    endpoint = serve(Faults(token_fields={"token_type": "mac"}), oauth_clients={CLIENT: SECRET})
    results = await run_checks(options(endpoint, tls))
    assert outcomes(results) == {"tls": Outcome.PASS, "oauth token": Outcome.FAIL}
    assert "not Bearer" in results[-1].detail
    assert endpoint.bodies == []


async def test_wrong_client_secret_fails_the_token_check(serve: Serve, tls: Tls) -> None:
    endpoint = serve(oauth_clients={CLIENT: "another secret"})
    results = await run_checks(options(endpoint, tls))
    assert outcomes(results) == {"tls": Outcome.PASS, "oauth token": Outcome.FAIL}
    assert "HTTP 401" in results[-1].detail


async def test_a_client_secret_the_token_endpoint_echoes_escaped_is_not_shown(serve: Serve, tls: Tls) -> None:
    secret = 'Geheim-"Pässwort&2024'  # JSON escapes two of its characters: a byte search misses it
    endpoint = serve(Faults(echoes_wrong_secret=True), oauth_clients={CLIENT: "another secret"})
    auth = OAuth2(endpoint.token_url, CLIENT, secret, None)
    results = await run_checks(options(endpoint, tls, auth=auth))
    assert outcomes(results) == {"tls": Outcome.PASS, "oauth token": Outcome.FAIL}
    assert results[-1].detail.endswith("HTTP 401: invalid_client (***** is not the secret of dynatrace)")
    assert "Pässwort" not in results[-1].detail


# -- TLS ------------------------------------------------------------------------------------------------


async def test_an_untrusted_certificate_fails_tls_and_stops(serve: Serve, tls: Tls) -> None:
    endpoint = serve()
    results = await run_checks(options(endpoint, tls, ca_bundle=None))
    assert [(r.check, r.outcome) for r in results] == [("tls", Outcome.FAIL)]
    assert "not trusted" in results[0].detail and "certificate" in results[0].detail
    assert endpoint.bodies == []


async def test_http_fails_tls_and_stops_unless_allowed(serve: Serve, tls: Tls) -> None:
    endpoint = serve(tls=None)
    refused = await run_checks(options(endpoint, tls))
    assert [(r.check, r.outcome) for r in refused] == [("tls", Outcome.FAIL)]
    assert "https" in refused[0].detail
    assert endpoint.bodies == []

    allowed = await run_checks(options(endpoint, tls, allow_http=True))
    assert [r.check for r in allowed] == EVERY_CHECK
    assert [r.check for r in allowed if r.outcome is not Outcome.PASS] == ["tls"]


# -- pure rules -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "data", "expected"),
    [
        (200, {"access_token": "t", "token_type": "bearer", "expires_in": 300}, Outcome.PASS),
        # as the exporter reads it: a string of seconds is taken, a missing type is Bearer
        (200, {"access_token": "t", "token_type": "Bearer", "expires_in": "300"}, Outcome.PASS),
        (200, {"access_token": "t", "expires_in": 300}, Outcome.WARN),
        (200, {"access_token": "t", "token_type": "Bearer", "expires_in": "soon"}, Outcome.FAIL),
        (200, {"access_token": "", "token_type": "Bearer", "expires_in": 300}, Outcome.FAIL),
        (200, {"access_token": "t\n", "token_type": "Bearer", "expires_in": 300}, Outcome.FAIL),
        (200, ["not", "an", "object"], Outcome.FAIL),
        (400, {"error": "invalid_request"}, Outcome.FAIL),
    ],
)
def test_token_response_rules(status: int, data: object, expected: Outcome) -> None:
    assert judge_token_response(status, data).outcome is expected


@pytest.mark.parametrize(
    ("counts", "expected", "words"),
    [
        (Counts(5, 25, 25), Outcome.PASS, "5 → 25 → 25"),
        (Counts(5, 25, 45), Outcome.FAIL, "duplicates stored twice"),
        (Counts(5, 5, 5), Outcome.WARN, "did not rise"),
        (
            Counts(5, 18, 18),
            Outcome.FAIL,
            "sessions lost: 20 new sessions answered 2xx raised the count by only 13",
        ),
        (Counts(5, 31, 31), Outcome.PASS, "5 → 31 → 31"),  # others' sessions arrived meanwhile
        (Counts(104, 123, 124), Outcome.FAIL, "sessions lost"),  # the re-send stored the one lost
        (CountError("count URL answered HTTP 404"), Outcome.WARN, "HTTP 404"),
        (None, Outcome.PASS, "--count-url"),
    ],
)
def test_resend_rules(counts: Counts | CountError | None, expected: Outcome, words: str) -> None:
    ok = Attempt(number=1, at=0, duration_ms=3, status=200)
    verdict = judge_resend(ok, ok, counts, 20)
    assert verdict.outcome is expected and words in verdict.detail


@pytest.mark.parametrize(
    ("status", "error", "detail"),
    [
        (
            307,
            "HTTP 307: redirects to https://elsewhere/events (not followed: set endpointUrl to where it leads)",
            "the sample: HTTP 307: redirects to https://elsewhere/events (not followed",
        ),
        (500, "HTTP 500: disk full", "the sample: HTTP 500: disk full; exporters need 2xx"),
        (502, None, "HTTP 502 for the sample; exporters need 2xx: they retry, then give the bulk up"),
    ],
)
def test_a_refusal_shows_what_the_endpoint_said(status: int, error: str | None, detail: str) -> None:
    verdict = judge_accepted(Attempt(1, 0, 5, status=status, error=error), "the sample")
    assert verdict.outcome is Outcome.FAIL and detail in verdict.detail


def test_response_times_are_not_passed_when_nothing_was_answered() -> None:
    broken = [Exchange("samples", Attempt(1, 0, 5, error="connection failed (refused)"))]
    assert judge_response_times(broken, 30).outcome is Outcome.WARN
    answered = [Exchange("samples", Attempt(1, 0, 5, status=200))]
    assert judge_response_times(answered, 30).outcome is Outcome.PASS


def test_a_refused_resend_fails_whatever_the_counts() -> None:
    ok, refused = Attempt(1, 0, 3, status=200), Attempt(1, 0, 3, status=503)
    verdict = judge_resend(ok, refused, Counts(5, 25, 25), 20)
    assert verdict.outcome is Outcome.FAIL and "HTTP 503" in verdict.detail


# -- the command ----------------------------------------------------------------------------------------


def run_command(args: list[str], env: dict[str, str]) -> Any:
    app = typer.Typer()
    app.command("check-endpoint")(check_endpoint)
    return CliRunner().invoke(app, args, env={"COLUMNS": "200", **env})


def test_the_command_renders_the_table_and_exits_by_the_outcomes(
    serve: Serve, tls: Tls, caplog: pytest.LogCaptureFixture
) -> None:
    good, broken = serve(), serve(Faults(post_fails=True))
    env = {  # every option can come from the environment
        "SESSIONEXPORT_CHECK_CA_BUNDLE": str(tls.ca_file),
        "SESSIONEXPORT_CHECK_BASIC": f"{USER}:{PASSWORD}",
        "SESSIONEXPORT_CHECK_TIMEOUT": str(TIMEOUT),
    }
    with caplog.at_level(logging.INFO):
        passed = run_command([good.url, "--count-url", good.count_url], env)
    assert not [r for r in caplog.records if r.name == "httpx"]  # the table, not a line per request
    assert passed.exit_code == 0, passed.output
    assert "large bulk" in passed.output and "PASS" in passed.output and "FAIL" not in passed.output
    assert f"{len(EVERY_CHECK)} passed, 0 warned, 0 failed" in passed.output

    failed = run_command([broken.url], env)
    assert failed.exit_code == 1, failed.output
    assert "samples POST application/json" in failed.output and "FAIL" in failed.output


@pytest.mark.parametrize(
    "args",
    [
        ["https://127.0.0.1:1/export/events", "--basic", "no-colon"],
        ["https://127.0.0.1:1/export/events", "--token-url", "https://127.0.0.1:1/token"],
        ["not a url"],
        ["https://127.0.0.1:1/export/events", "--count-url", "http://127.0.0.1:1/count"],
        ["https://127.0.0.1:1/export/events", "--content-type", "not a media type"],
        ["https://127.0.0.1:1/_bulk", "--index", "s", "--content-type", "application/json"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = run_command(args, {})
    assert result.exit_code == 2, result.output


@pytest.mark.parametrize(
    "args",
    [
        ["https://u:UrlPw999@127.0.0.1:1/export/events"],
        ["https://127.0.0.1:1/export/events", "--count-url", "https://u:UrlPw999@127.0.0.1:1/count"],
        [
            "https://127.0.0.1:1/x",
            "--token-url",
            "https://u:UrlPw999@127.0.0.1:1/t",
            "--client-id",
            "c",
            "--client-secret",
            "s",
        ],
    ],
)
def test_credentials_in_a_url_are_refused_and_not_shown(args: list[str]) -> None:
    """As the export settings refuse them: the client would send them in place of --basic, and
    the report would show the password."""
    result = run_command(args, {})
    assert result.exit_code == 2 and "must not contain credentials" in result.output, result.output
    assert "UrlPw999" not in result.output
