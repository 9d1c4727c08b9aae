"""The checks, in order: each a probe followed by a judge; the list of checks is data (``CHECKS``)."""

from __future__ import annotations

import asyncio
import secrets
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from sessionexport.export.auth import (
    BasicCredentials,
    Credentials,
    NoCredentials,
    TokenError,
)
from sessionexport.export.config import BasicAuth, OAuth2
from sessionexport.export.exchange import ssl_context
from sessionexport.media_types import JSON, NDJSON
from sessionexport.receiver.check.bodies import GARBAGE, GZIP_SESSIONS, RESEND_SESSIONS
from sessionexport.receiver.check.probe import CheckOptions, FixedHeaders, Probe, open_probe, tls_handshake
from sessionexport.receiver.check.verdicts import (
    CheckResult,
    CountError,
    Counts,
    Outcome,
    Verdict,
    combine,
    counts_of,
    judge_accepted,
    judge_gzip,
    judge_invalid_body,
    judge_rejected,
    judge_resend,
    judge_response_times,
    judge_scheme,
    judge_token_response,
    judge_token_reuse,
)

TLS = "tls"
OAUTH = "oauth token"
OAUTH_REUSE = "oauth token reuse"
RESPONSE_TIME = "response time"
REFUSED_KIND = (400, 404, 405, 415)  # a method or content type the endpoint does not take


async def check_tls(options: CheckOptions) -> tuple[Verdict, bool]:
    """The verdict, and whether the other checks can go on."""
    scheme = judge_scheme(options.url)
    if scheme is not None and not options.allow_http:
        return Verdict(scheme.outcome, f"{scheme.detail}; --allow-http runs the other checks anyway"), False
    if scheme is not None:
        return scheme, True
    verdict = await handshake_verdict(options)
    return verdict, verdict.outcome is not Outcome.FAIL


async def handshake_verdict(options: CheckOptions) -> Verdict:
    host = urlsplit(options.url).netloc
    try:
        version = await asyncio.wait_for(
            tls_handshake(options.url, ssl_context(options.ca_bundle)), options.timeout
        )
    except ssl.SSLCertVerificationError as exc:
        return Verdict(Outcome.FAIL, f"certificate of {host} not trusted: {exc.verify_message}")
    except ssl.SSLError as exc:
        return Verdict(Outcome.FAIL, f"TLS handshake with {host} failed: {exc.reason or exc}")
    except TimeoutError:
        return Verdict(Outcome.FAIL, f"no TLS handshake with {host} within {options.timeout:g} s")
    except OSError as exc:
        return Verdict(Outcome.FAIL, f"cannot connect to {host}: {exc.strerror or exc}")
    trust = "public CAs and --ca-bundle" if options.ca_bundle else "public CAs"
    return Verdict(Outcome.PASS, f"{version}, certificate of {host} verified ({trust})")


async def check_token(probe: Probe) -> tuple[Verdict, bool]:
    """The exporter's own token request, then what it relies on in the answer; go on with a token."""
    assert isinstance(probe.options.auth, OAuth2)
    scheme = judge_scheme(probe.options.auth.token_url)
    if scheme is not None and not probe.options.allow_http:
        return Verdict(Outcome.FAIL, f"token URL: {scheme.detail}"), False
    try:
        await probe.credentials.headers()
    except TokenError as exc:
        return Verdict(Outcome.FAIL, str(exc)), False
    answer = judge_token_response(probe.token_answer.status, probe.token_answer.data)
    return (combine([answer, scheme]) if scheme is not None else answer), True


def check_samples(method: str, content_type: str) -> Callable[[Probe], Awaitable[Verdict]]:
    async def check(probe: Probe) -> Verdict:
        label = f"samples {method} {content_type}"
        attempt = await probe.send(label, probe.bodies.samples, method=method, content_type=content_type)
        verdict = judge_accepted(attempt, f"2 sessions ({method}, {content_type})")
        exported = (probe.options.method, probe.options.bulk_type)
        if attempt.status in REFUSED_KIND and (method, content_type) != exported:
            # Not how the export is set to send (--use-post, --content-type, --index): a limit to know.
            return Verdict(Outcome.WARN, f"{verdict.detail} (an export to it must send {' '.join(exported)})")
        return verdict

    return check


async def check_large_bulk(probe: Probe) -> Verdict:
    body = probe.bodies.large
    attempt = await probe.send("large bulk", body)
    return judge_accepted(attempt, f"a bulk of {len(body):,} bytes")


async def check_resent_bulk(probe: Probe) -> Verdict:
    readings: list[int | CountError] = []

    async def read_count() -> None:
        if probe.options.count_url is not None:
            readings.append(await probe.settled_count())

    await read_count()
    first = await probe.send("re-sent bulk (first)", probe.bodies.resend)
    await read_count()
    again = await probe.send("re-sent bulk (again)", probe.bodies.resend)
    await read_count()
    counts = counts_of(readings)
    probe.plain = first
    if isinstance(counts, Counts):  # all of them, as the gzip bulk's must be
        probe.plain_counted = counts.after_first - counts.before >= RESEND_SESSIONS
    return judge_resend(first, again, counts, RESEND_SESSIONS)


async def check_gzip_bulk(probe: Probe) -> Verdict:
    counting = probe.options.count_url is not None
    readings = [await probe.settled_count()] if counting else []
    attempt = await probe.send("gzip bulk", probe.bodies.gzip, compressed=True)
    if counting and attempt.ok:
        readings.append(await probe.settled_count())
    return judge_gzip(attempt, readings, GZIP_SESSIONS, probe.plain, probe.plain_counted)


async def check_without_credentials(probe: Probe) -> Verdict:
    attempt = await probe.send("auth: no credentials", probe.bodies.samples, credentials=NoCredentials())
    return judge_rejected(attempt, "a request without credentials")


async def check_wrong_credentials(probe: Probe) -> Verdict:
    auth = probe.options.auth
    wrong: Credentials
    if isinstance(auth, BasicAuth):
        wrong = BasicCredentials(replace(auth, password="not-" + auth.password))
        what = "a wrong password"
    else:
        wrong = FixedHeaders({"Authorization": "Bearer " + secrets.token_urlsafe(24)})
        what = "a bogus bearer token"
    attempt = await probe.send("auth: wrong credentials", probe.bodies.samples, credentials=wrong)
    return judge_rejected(attempt, what)


async def check_invalid_body(probe: Probe) -> Verdict:
    return judge_invalid_body(await probe.send("invalid body", GARBAGE))


def always(_: CheckOptions) -> bool:
    return True


def with_auth(options: CheckOptions) -> bool:
    return options.auth is not None


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    applies: Callable[[CheckOptions], bool]
    run: Callable[[Probe], Awaitable[Verdict]]


CHECKS: tuple[Check, ...] = (
    *(
        Check(f"samples {method} {content_type}", always, check_samples(method, content_type))
        for method in ("PUT", "POST")
        for content_type in (JSON, NDJSON)
    ),
    Check("large bulk", always, check_large_bulk),
    Check("re-sent bulk", always, check_resent_bulk),
    Check("gzip bulk", always, check_gzip_bulk),
    Check("auth: no credentials", with_auth, check_without_credentials),
    Check("auth: wrong credentials", with_auth, check_wrong_credentials),
    Check("invalid body", always, check_invalid_body),
)


async def run_checks(
    options: CheckOptions, starting: Callable[[str], None] = lambda check: None
) -> list[CheckResult]:
    """Every check that applies, in order (``starting`` is told each one's name as it starts: an
    endpoint that hangs makes a check last the timeout); stops early when the endpoint cannot be
    reached properly."""
    starting(TLS)
    verdict, go_on = await check_tls(options)
    results = [CheckResult(TLS, verdict.outcome, verdict.detail)]
    if not go_on:
        return results
    async with open_probe(options) as probe:
        if isinstance(options.auth, OAuth2):
            starting(OAUTH)
            verdict, go_on = await check_token(probe)
            results.append(CheckResult(OAUTH, verdict.outcome, verdict.detail))
            if not go_on:
                return results
        for check in CHECKS:
            if check.applies(options):
                starting(check.name)
                verdict = await check.run(probe)
                results.append(CheckResult(check.name, verdict.outcome, verdict.detail))
        if isinstance(options.auth, OAuth2):
            verdict = judge_token_reuse(probe.credentials.refused)
            results.append(CheckResult(OAUTH_REUSE, verdict.outcome, verdict.detail))
        verdict = judge_response_times(probe.exchanges, options.timeout)
        results.append(CheckResult(RESPONSE_TIME, verdict.outcome, verdict.detail))
    return results
