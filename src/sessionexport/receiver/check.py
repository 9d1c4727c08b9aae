"""``check-endpoint``: send an endpoint what an exporter sends, and report what it does wrong.

    tls ─▶ oauth token ─▶ samples (PUT/POST, json/ndjson) ─▶ large bulk ─▶ re-sent bulk
        ─▶ gzip bulk ─▶ auth: no credentials ─▶ auth: wrong credentials ─▶ invalid body
        ─▶ response time

Requests go through the exporter's own code: its TLS context (certificates always verified), its
``Sender`` and credentials (Basic, or the OAuth2 client-credentials token request), its flush rule
and bulk body, so a PASS means the real exporter will get on with the endpoint. With ``--index``,
bodies are Elasticsearch bulks (an ``index`` action before each session, as an export with
``sendDirect`` sends them), and an answer counts as accepted only when every item succeeded. Each check is a
probe (I/O, through ``Probe``) followed by a judge, a pure function from what came back to a
``Verdict``; the list of checks is data (``CHECKS``). A failed ``tls`` or ``oauth token`` ends the
run, since every later request would fail the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx
import msgspec
import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sessionexport.cli_options import env, loadable_ca_bundle
from sessionexport.clock import now_ms
from sessionexport.export.auth import (
    BasicCredentials,
    Credentials,
    NoCredentials,
    TokenError,
    credentials_for,
    usable_token,
)
from sessionexport.export.batching import Batcher
from sessionexport.export.config import BasicAuth, ExportConfig, OAuth2, SendDirect
from sessionexport.export.delivery import Attempt, Sender
from sessionexport.export.exchange import describe_transport_error, exporter_client, ssl_context
from sessionexport.export.formats import bulk_body, encoded_size
from sessionexport.export.tuning import DYNATRACE_MAX_BYTES, DYNATRACE_MAX_SESSIONS, ExportTuning
from sessionexport.generate.sessions import GeneratorOptions, Kind, generate_sessions
from sessionexport.media_types import JSON, NDJSON
from sessionexport.model.elasticsearch_names import index_name_problem
from sessionexport.model.samples import MOBILE, WEB_SYNTHETIC, doc_sample
from sessionexport.store.records import LogEntry

DEFAULT_TIMEOUT = ExportTuning().timeoutSeconds  # the exporter's request timeout
RESEND_SESSIONS = 20
GZIP_SESSIONS = 10
GARBAGE = b"this line is not JSON {\n"

TLS = "tls"
OAUTH = "oauth token"
RESPONSE_TIME = "response time"


class Outcome(StrEnum):
    PASS = "PASS"  # noqa: S105 (an outcome, not a password)
    WARN = "WARN"
    FAIL = "FAIL"


SEVERITY = {Outcome.PASS: 0, Outcome.WARN: 1, Outcome.FAIL: 2}


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    detail: str


@dataclass(frozen=True, slots=True)
class CheckResult:
    check: str
    outcome: Outcome
    detail: str


@dataclass(frozen=True, slots=True)
class CheckOptions:
    url: str
    timeout: float = DEFAULT_TIMEOUT
    ca_bundle: Path | None = None
    allow_http: bool = False
    auth: BasicAuth | OAuth2 | None = None
    count_url: str | None = None
    count_key: str = "sessions"
    seed: int | None = None  # of the generated sessions; random by default, so every run sends new ones
    index: str | None = None  # an Elasticsearch _bulk endpoint: the index the bulks' actions name

    @property
    def direct(self) -> SendDirect | None:
        return SendDirect(self.index, None) if self.index else None


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request the checker made and what came of it."""

    label: str
    attempt: Attempt


@dataclass(frozen=True, slots=True)
class Counts:
    """The endpoint's session count before the bulk, after it, and after the same bulk again."""

    before: int
    after_first: int
    after_again: int


class CountError(Exception):
    """The count URL did not give a number."""


# -- judges: pure rules from what came back to a verdict ---------------------------------------------


def is_2xx(attempt: Attempt) -> bool:
    return attempt.status is not None and 200 <= attempt.status < 300


def judge_scheme(url: str) -> Verdict | None:
    """None when the URL is https; the exporter refuses anything else."""
    if urlsplit(url).scheme == "https":
        return None
    return Verdict(
        Outcome.FAIL,
        f"{url} is not https: exports are sent over HTTPS only (Dynatrace refuses http:// endpoints)",
    )


def judge_accepted(attempt: Attempt, what: str) -> Verdict:
    """The exporter counts a bulk as delivered on 2xx only; anything else is retried, then dead-lettered."""
    if attempt.status is None:
        return Verdict(Outcome.FAIL, f"{what}: {attempt.error}")
    status = attempt.status
    if is_2xx(attempt) and attempt.error:  # an Elasticsearch bulk whose items failed
        return Verdict(Outcome.FAIL, f"HTTP {status} for {what}, but {attempt.error}")
    if status == 200:
        return Verdict(Outcome.PASS, f"HTTP 200 for {what}")
    if 200 <= status < 300:
        return Verdict(
            Outcome.WARN, f"HTTP {status} for {what}: sessionexport takes any 2xx, Dynatrace documents 200"
        )
    if status == 413:
        return Verdict(
            Outcome.FAIL,
            f"HTTP 413 for {what}: exporters send bodies up to {DYNATRACE_MAX_BYTES:,} bytes",
        )
    if status in (401, 403):
        return Verdict(Outcome.FAIL, f"HTTP {status} for {what}: not authorized (are the credentials right?)")
    # The sender's error names the status and what the answer said (a redirect: where it leads).
    answered = f"{what}: {attempt.error}" if attempt.error else f"HTTP {status} for {what}"
    if 300 <= status < 400 and attempt.error:
        return Verdict(Outcome.FAIL, answered)
    return Verdict(Outcome.FAIL, f"{answered}; exporters need 2xx: they retry, then give the bulk up")


def judge_rejected(attempt: Attempt, what: str) -> Verdict:
    """A request with missing or wrong credentials must be refused with 401 or 403."""
    if attempt.status is None:
        return Verdict(Outcome.FAIL, f"{what}: {attempt.error}")
    if attempt.status in (401, 403):
        return Verdict(Outcome.PASS, f"HTTP {attempt.status} for {what}")
    if is_2xx(attempt):
        return Verdict(Outcome.FAIL, f"HTTP {attempt.status}: accepts {what}")
    return Verdict(Outcome.WARN, f"HTTP {attempt.status} for {what}; expected 401 or 403")


# Answers that refuse a body for what it holds (malformed, of a type not taken, unprocessable).
BODY_REFUSED = (400, 415, 422)


def judge_invalid_body(attempt: Attempt) -> Verdict:
    what = "a line that is not JSON"
    if attempt.status is None:
        return Verdict(Outcome.FAIL, f"{what}: {attempt.error}")
    if is_2xx(attempt):
        return Verdict(
            Outcome.WARN, f"HTTP {attempt.status} for {what}: garbage is silently accepted, not refused"
        )
    if attempt.status in BODY_REFUSED:
        return Verdict(Outcome.PASS, f"HTTP {attempt.status} for {what}")
    if attempt.status in (408, 429):
        return Verdict(
            Outcome.WARN,
            f"HTTP {attempt.status} for {what}: an exporter retries that, so garbage is sent again,"
            " not refused (400 would say that the body is at fault)",
        )
    if 400 <= attempt.status < 500:  # 401, 404, 405...: refused before the body was judged
        return Verdict(
            Outcome.WARN, f"HTTP {attempt.status} for {what}: that says nothing of the body (400 would)"
        )
    return Verdict(
        Outcome.WARN, f"HTTP {attempt.status} for {what}: a 400 would say that the body is at fault"
    )


def counts_of(readings: Sequence[int | CountError]) -> Counts | CountError | None:
    """The three readings of the count (none without --count-url), or the first error among them."""
    if not readings:
        return None
    numbers = [r for r in readings if not isinstance(r, CountError)]
    if len(numbers) < len(readings):
        return next(r for r in readings if isinstance(r, CountError))
    before, after_first, after_again = numbers
    return Counts(before, after_first, after_again)


def judge_resend(
    first: Attempt, again: Attempt, counts: Counts | CountError | None, sessions: int
) -> Verdict:
    """Exporters deliver at least once: a re-sent bulk must be accepted, and not stored twice."""
    for attempt, what in ((first, "the bulk"), (again, "the same bulk sent again")):
        if not attempt.ok:
            return judge_accepted(attempt, what)
    if counts is None:
        return Verdict(
            Outcome.PASS, "both sends answered 2xx (give --count-url to check that nothing is stored twice)"
        )
    if isinstance(counts, CountError):
        return Verdict(Outcome.WARN, f"both sends answered 2xx; duplicates not checked: {counts}")
    trail = f"count {counts.before} → {counts.after_first} → {counts.after_again}"
    if counts.after_again > counts.after_first:
        return Verdict(
            Outcome.FAIL,
            f"duplicates stored twice: the same {sessions} sessions sent again raised the count ({trail})",
        )
    if counts.after_first <= counts.before:
        return Verdict(
            Outcome.WARN,
            f"the count did not rise for {sessions} new sessions ({trail}): are --count-url/--count-key right?",
        )
    return Verdict(Outcome.PASS, f"{trail}: the re-send stored nothing new")


def judge_gzip(
    attempt: Attempt,
    readings: Sequence[int | CountError],
    sessions: int,
    plain: Attempt | None = None,
    plain_counted: bool | None = None,
) -> Verdict:
    """Compression is a knob, off by default: an endpoint that does not take gzip only warns. With
    --count-url, the count read before and after the bulk tells whether its sessions were read.
    ``plain`` and ``plain_counted``: how the same kind of bulk uncompressed fared (its answer, and
    whether the count rose for it), so that what is not about compression is not blamed on it."""
    what = "a gzip body (the compression knob)"
    if attempt.status is None:
        return Verdict(Outcome.WARN, f"{what}: {attempt.error}; leave compression at none")
    if is_2xx(attempt) and attempt.error:  # read, but its items failed: the other checks say why
        return Verdict(Outcome.WARN, f"HTTP {attempt.status} for {what}, but {attempt.error}")
    if not is_2xx(attempt) and plain is not None and plain.status == attempt.status:
        return Verdict(
            Outcome.WARN,
            f"HTTP {attempt.status} for {what}, as for the same bulk uncompressed: not about"
            " compression (see the checks above)",
        )
    if not is_2xx(attempt):
        return Verdict(Outcome.WARN, f"HTTP {attempt.status} for {what}: leave compression at none")
    if not readings:
        return Verdict(
            Outcome.PASS, f"HTTP {attempt.status} for {what} (give --count-url to check it was read)"
        )
    counted = [r for r in readings if not isinstance(r, CountError)]
    if len(counted) < len(readings):
        error = next(r for r in readings if isinstance(r, CountError))
        return Verdict(
            Outcome.WARN, f"HTTP {attempt.status} for {what}; not checked that it was read: {error}"
        )
    before, after = counted
    if after - before != sessions and plain_counted is False:
        return Verdict(
            Outcome.WARN,
            f"HTTP {attempt.status} for {what}; the count went {before} → {after} for {sessions} new"
            " sessions, and did not rise for uncompressed ones either: are --count-url/--count-key right?",
        )
    if after - before != sessions:
        return Verdict(
            Outcome.WARN,
            f"HTTP {attempt.status} for {what}, but the count went {before} → {after} for {sessions} new"
            " sessions: it may not read gzip; leave compression at none",
        )
    return Verdict(Outcome.PASS, f"{what}: its {sessions} sessions were counted ({before} → {after})")


def judge_token_response(status: int | None, data: object) -> Verdict:
    """Whether the exporter can use the answer (read as it reads it: a PASS here means a token the
    exporter takes), and how well it can: a token_type said, and expires_in to cache it by."""
    if status != 200:
        return Verdict(Outcome.FAIL, f"token endpoint answered HTTP {status}; expected 200")
    if not isinstance(data, dict):
        return Verdict(Outcome.FAIL, "token response is not a JSON object")
    try:
        token = usable_token(data)
    except TokenError as exc:
        return Verdict(Outcome.FAIL, str(exc))
    present = Verdict(Outcome.PASS, "access_token present")
    return combine([present, _judge_token_type(token), _judge_expires_in(token)])


def _judge_token_type(token: dict[str, Any]) -> Verdict:
    if token_type := token.get("token_type"):
        return Verdict(Outcome.PASS, f"token_type {token_type}")
    # RFC 6749 §5.1 requires it; the exporter takes a token without one as Bearer.
    return Verdict(Outcome.WARN, "no token_type (RFC 6749 requires it; taken as Bearer)")


def _judge_expires_in(token: dict[str, Any]) -> Verdict:
    expires_in = token.get("expires_in")
    if expires_in is not None and expires_in > 0:
        return Verdict(Outcome.PASS, f"expires_in {expires_in} s")
    # Without it the exporter keeps the token until the endpoint answers 401 with it.
    return Verdict(Outcome.WARN, f"expires_in {expires_in!r} is not a positive number of seconds")


def judge_response_times(exchanges: Sequence[Exchange], timeout: float) -> Verdict:
    """The exporter gives up after ``timeout``; an answer taking half of it is close to that edge."""
    timed_out = [e.label for e in exchanges if e.attempt.timed_out]
    if timed_out:
        return Verdict(Outcome.FAIL, f"no answer within {timeout:g} s to: {', '.join(timed_out)}")
    answered = [e for e in exchanges if e.attempt.status is not None]
    if not answered:  # the other checks say why; no answer is no pass
        return Verdict(Outcome.WARN, "not measured: no request was answered")
    slowest = max(answered, key=lambda e: e.attempt.duration_ms)
    took = f"{slowest.label} took {slowest.attempt.duration_ms / 1000:.2f} s"
    if slowest.attempt.duration_ms > timeout * 1000 / 2:
        return Verdict(Outcome.WARN, f"slow: {took}, more than half of the {timeout:g} s timeout")
    return Verdict(Outcome.PASS, f"{len(answered)} answers; slowest: {took}")


def combine(verdicts: Iterable[Verdict]) -> Verdict:
    """The worst outcome; the details that explain it (all of them when everything passed)."""
    verdicts = list(verdicts)
    worst = max((v.outcome for v in verdicts), key=SEVERITY.__getitem__)
    return Verdict(worst, "; ".join(v.detail for v in verdicts if v.outcome == worst))


def count_at(data: object, key: str) -> int:
    """The number at ``key`` (dots go into nested objects: ``stats.sessions``)."""
    value = data
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise CountError(f"the count response has no {key!r}")
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CountError(f"{key!r} in the count response is {value!r}, not a number")
    return int(value)


def exit_code(results: Sequence[CheckResult]) -> int:
    return 1 if any(r.outcome is Outcome.FAIL for r in results) else 0


# -- what is sent: the exporter's bytes ----------------------------------------------------------------


def log_entry(seq: int, session: dict[str, Any]) -> LogEntry:
    """A generated session as the exporter reads it from the log: compact JSON bytes, stored once."""
    return LogEntry(
        seq=seq,
        received_at=now_ms(),
        tenant_id=session["tenantId"],
        user_session_id=session["userSessionId"],
        start_time=session["startTime"],
        user_type=session.get("userType"),
        application_type=session.get("applicationType"),
        country=session.get("country"),
        applications=(),
        body=orjson.dumps(session),
    )


def generated_entries(count: int, seed: int, kind: Kind, end_ms: int) -> list[LogEntry]:
    options = GeneratorOptions(kind=kind, end_ms=end_ms)
    return [log_entry(seq, session) for seq, session in enumerate(generate_sessions(count, seed, options))]


def samples_body(direct: SendDirect | None) -> bytes:
    """The two sample sessions of the original documentation (mobile, and synthetic web), as one
    body, byte for byte as published."""
    samples = [doc_sample(name) for name in (MOBILE, WEB_SYNTHETIC)]
    entries = [
        msgspec.structs.replace(log_entry(seq, orjson.loads(raw)), body=raw)
        for seq, raw in enumerate(samples)
    ]
    return bulk_body(entries, direct)


def large_bulk_body(seed: int, end_ms: int, direct: SendDirect | None) -> bytes:
    """The first bulk the exporter's flush rules make: full up to 896,000 bytes (or 1000 sessions)."""
    batcher = Batcher(ExportTuning())
    options = GeneratorOptions(kind="mixed", end_ms=end_ms)
    for seq, session in enumerate(generate_sessions(DYNATRACE_MAX_SESSIONS, seed, options)):
        entry = log_entry(seq, session)
        for bulk in batcher.offer(entry, encoded_size(entry, direct)):
            return bulk_body(bulk.entries, direct)
    return bulk_body(batcher.take().entries, direct)


@dataclass(frozen=True, slots=True)
class Bodies:
    samples: bytes
    large: bytes
    resend: bytes
    gzip: bytes  # sent compressed

    @classmethod
    def generate(cls, seed: int, direct: SendDirect | None) -> Bodies:
        # Different seeds: the bodies hold different sessions, so each can add to a count.
        end = now_ms()
        return cls(
            samples=samples_body(direct),
            large=large_bulk_body(seed + 2, end, direct),
            resend=bulk_body(generated_entries(RESEND_SESSIONS, seed + 3, "mixed", end), direct),
            gzip=bulk_body(generated_entries(GZIP_SESSIONS, seed + 4, "mixed", end), direct),
        )


# -- the I/O side ------------------------------------------------------------------------------------


class FixedHeaders:
    """Credentials that never change: a bogus bearer token, say."""

    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = headers

    async def headers(self) -> dict[str, str]:
        return self._headers

    async def refresh(self) -> bool:
        return False

    def secrets(self) -> tuple[str, ...]:
        return ()  # a bogus token: nothing to hide


@dataclass
class TokenAnswer:
    status: int | None = None
    data: object = None


class Probe:
    """Sends with the exporter's client, credentials and timeout; keeps every exchange for timing."""

    def __init__(self, options: CheckOptions, client: httpx.AsyncClient, token_answer: TokenAnswer) -> None:
        self.options = options
        self.client = client
        self.token_answer = token_answer
        seed = options.seed if options.seed is not None else secrets.randbits(31)
        self.bodies = Bodies.generate(seed, options.direct)
        self.config = ExportConfig(
            export_id="check-endpoint",
            endpoint_url=options.url,
            enabled=True,
            content_type=JSON,
            use_post=False,
            auth=options.auth,
            send_direct=options.direct,
            management_zone=None,
            disable_notification=True,
            tuning=ExportTuning(timeoutSeconds=options.timeout, retries=0),
        )
        self.credentials = credentials_for(options.auth, client, options.timeout)
        self.exchanges: list[Exchange] = []
        self.plain: Attempt | None = None  # the re-sent bulk's first send, for the gzip check
        self.plain_counted: bool | None = None  # whether the count rose for it (None: not counted)

    async def send(
        self,
        label: str,
        body: bytes,
        *,
        method: str = "PUT",
        content_type: str = JSON,
        credentials: Credentials | None = None,
        compressed: bool = False,
    ) -> Attempt:
        config = replace(self.config, use_post=method == "POST")
        if compressed:
            config = replace(config, tuning=msgspec.structs.replace(config.tuning, compression="gzip"))
        sender = Sender(config, self.client, credentials or self.credentials)
        # An Elasticsearch bulk holds two lines per session: its items are read and judged too.
        items = body.count(b"\n") // 2 if self.options.direct else None
        attempt = (await sender.send(body, retries=0, content_type=content_type, items=items)).last
        self.exchanges.append(Exchange(label, attempt))
        return attempt

    async def count(self) -> int | CountError:
        """The endpoint's session count from --count-url, or why there is none."""
        assert self.options.count_url is not None
        try:
            headers = {"Accept": JSON, **await self.credentials.headers()}
            response = await self.client.get(
                self.options.count_url, headers=headers, timeout=self.options.timeout
            )
        except httpx.HTTPError as exc:
            return CountError(f"count URL: {describe_transport_error(exc)}")
        except TokenError as exc:
            return CountError(f"count URL: OAuth token: {exc}")
        if response.status_code != 200:
            return CountError(f"count URL answered HTTP {response.status_code}")
        try:
            return count_at(response.json(), self.options.count_key)
        except ValueError:
            return CountError("count URL answered something other than JSON")
        except CountError as exc:
            return exc


@contextlib.asynccontextmanager
async def open_probe(options: CheckOptions) -> AsyncIterator[Probe]:
    token_answer = TokenAnswer()
    token_url = options.auth.token_url if isinstance(options.auth, OAuth2) else None

    async def keep_token_answer(response: httpx.Response) -> None:
        # The exporter's token code only says whether the token was usable; the check reports the raw answer.
        if token_url is not None and response.request.url == httpx.URL(token_url):
            await response.aread()
            token_answer.status = response.status_code
            with contextlib.suppress(ValueError):
                token_answer.data = response.json()

    # As the exporter's client: certificates verified, no redirects, no proxy settings from the environment.
    async with exporter_client(ssl_context(options.ca_bundle), keep_token_answer) as client:
        yield Probe(options, client, token_answer)


async def tls_handshake(url: str, context: ssl.SSLContext) -> str:
    """The negotiated TLS version; raises what the handshake raised."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    _, writer = await asyncio.open_connection(host, parts.port or 443, ssl=context, server_hostname=host)
    ssl_object = writer.get_extra_info("ssl_object")
    version = str(ssl_object.version()) if ssl_object is not None else "TLS"
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()
    return version


# -- the checks ----------------------------------------------------------------------------------------


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
        return judge_accepted(attempt, f"2 sessions ({method}, {content_type})")

    return check


async def check_large_bulk(probe: Probe) -> Verdict:
    body = probe.bodies.large
    attempt = await probe.send("large bulk", body)
    return judge_accepted(attempt, f"a bulk of {len(body):,} bytes")


async def check_resent_bulk(probe: Probe) -> Verdict:
    readings: list[int | CountError] = []

    async def read_count() -> None:
        if probe.options.count_url is not None:
            readings.append(await probe.count())

    await read_count()
    first = await probe.send("re-sent bulk (first)", probe.bodies.resend)
    await read_count()
    again = await probe.send("re-sent bulk (again)", probe.bodies.resend)
    await read_count()
    counts = counts_of(readings)
    probe.plain = first
    if isinstance(counts, Counts):
        probe.plain_counted = counts.after_first > counts.before
    return judge_resend(first, again, counts, RESEND_SESSIONS)


async def check_gzip_bulk(probe: Probe) -> Verdict:
    counting = probe.options.count_url is not None
    readings = [await probe.count()] if counting else []
    attempt = await probe.send("gzip bulk", probe.bodies.gzip, compressed=True)
    if counting and attempt.ok:
        readings.append(await probe.count())
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
        verdict = judge_response_times(probe.exchanges, options.timeout)
        results.append(CheckResult(RESPONSE_TIME, verdict.outcome, verdict.detail))
    return results


# -- the command -------------------------------------------------------------------------------------

STYLES = {Outcome.PASS: "green", Outcome.WARN: "yellow", Outcome.FAIL: "bold red"}


def results_table(url: str, results: Sequence[CheckResult]) -> Table:
    table = Table("check", "outcome", "detail", title=f"check-endpoint {url}", title_justify="left")
    for result in results:
        # Details quote what endpoints said, brackets included: text, not markup.
        table.add_row(result.check, f"[{STYLES[result.outcome]}]{result.outcome}[/]", escape(result.detail))
    return table


def summary(results: Sequence[CheckResult]) -> str:
    counted = {outcome: sum(1 for r in results if r.outcome is outcome) for outcome in Outcome}
    return f"{counted[Outcome.PASS]} passed, {counted[Outcome.WARN]} warned, {counted[Outcome.FAIL]} failed"


def parse_basic(text: str | None) -> BasicAuth | None:
    if text is None:
        return None
    user, colon, password = text.partition(":")  # RFC 7617: the user name has no colon, the password may
    if not colon or not user:
        raise typer.BadParameter("takes USER:PASS", param_hint="--basic")
    return BasicAuth(user, password)


def parse_oauth(
    token_url: str | None, client_id: str | None, client_secret: str | None, scope: str | None
) -> OAuth2 | None:
    given = {"--token-url": token_url, "--client-id": client_id, "--client-secret": client_secret}
    if not any(given.values()) and scope is None:
        return None
    missing = [name for name, value in given.items() if not value]
    if missing:
        raise typer.BadParameter(f"OAuth2 needs {', '.join(given)}; missing {', '.join(missing)}")
    assert token_url is not None and client_id is not None and client_secret is not None
    check_absolute_url(token_url, "--token-url")
    return OAuth2(token_url, client_id, client_secret, scope or None)


def check_absolute_url(url: str, hint: str) -> None:
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # also what .port raises for a port out of range or not a number
        valid = False
    if not valid:
        raise typer.BadParameter(f"{url!r} is not an absolute http(s) URL with a valid port", param_hint=hint)


def cli_options(
    url: str,
    *,
    timeout: float,
    ca_bundle: Path | None,
    allow_http: bool,
    basic: str | None,
    oauth: OAuth2 | None,
    count_url: str | None,
    count_key: str,
    index: str | None = None,
) -> CheckOptions:
    """The options, or a usage error (exit code 2) saying which one is wrong."""
    check_absolute_url(url, "URL")
    if index is not None and (reason := index_name_problem(index)):
        raise typer.BadParameter(f"{index!r}: {reason}", param_hint="--index")
    basic_auth = parse_basic(basic)
    if basic_auth is not None and oauth is not None:
        raise typer.BadParameter("give either --basic or OAuth2 (--token-url ...), not both")
    if count_url is not None:
        check_absolute_url(count_url, "--count-url")
        if judge_scheme(count_url) is not None and not allow_http:
            raise typer.BadParameter("must be https (or give --allow-http)", param_hint="--count-url")
    return CheckOptions(
        url=url,
        timeout=timeout,
        ca_bundle=ca_bundle,
        allow_http=allow_http,
        auth=basic_auth or oauth,
        count_url=count_url,
        count_key=count_key,
        index=index,
    )


def check_endpoint(
    url: Annotated[
        str, typer.Argument(help="Where exports go, e.g. https://host/export/events.", show_default=False)
    ],
    timeout: Annotated[
        float,
        typer.Option(
            envvar=env("CHECK_TIMEOUT"),
            min=0.1,
            max=300,
            help="The exporter's request timeout in seconds: slower than half of it warns, no answer fails.",
        ),
    ] = DEFAULT_TIMEOUT,
    ca_bundle: Annotated[
        Path | None,
        typer.Option(
            envvar=env("CHECK_CA_BUNDLE"),
            exists=True,
            dir_okay=False,
            callback=loadable_ca_bundle,
            show_default=False,
            help="Extra CA certificates (PEM) trusted for the endpoint, token and count URLs.",
        ),
    ] = None,
    allow_http: Annotated[
        bool,
        typer.Option(
            "--allow-http",
            envvar=env("CHECK_ALLOW_HTTP"),
            help="Run the checks over http:// too (still reported as FAIL: exports need https).",
        ),
    ] = False,
    basic: Annotated[
        str | None,
        typer.Option(
            envvar=env("CHECK_BASIC"), metavar="USER:PASS", show_default=False, help="Basic authentication."
        ),
    ] = None,
    token_url: Annotated[
        str | None,
        typer.Option(envvar=env("CHECK_TOKEN_URL"), show_default=False, help="OAuth2 access token URL."),
    ] = None,
    client_id: Annotated[
        str | None, typer.Option(envvar=env("CHECK_CLIENT_ID"), show_default=False, help="OAuth2 client id.")
    ] = None,
    client_secret: Annotated[
        str | None,
        typer.Option(
            envvar=env("CHECK_CLIENT_SECRET"),
            show_default=False,
            help="OAuth2 client secret (prefer the environment variable to the command line).",
        ),
    ] = None,
    scope: Annotated[
        str | None, typer.Option(envvar=env("CHECK_SCOPE"), show_default=False, help="OAuth2 scope, if any.")
    ] = None,
    count_url: Annotated[
        str | None,
        typer.Option(
            envvar=env("CHECK_COUNT_URL"),
            show_default=False,
            help="A GET returning JSON with the number of sessions stored: checks re-sends are not stored twice.",
        ),
    ] = None,
    count_key: Annotated[
        str,
        typer.Option(
            envvar=env("CHECK_COUNT_KEY"),
            help="Where the number is in the count JSON (dots for nested keys).",
        ),
    ] = "sessions",
    index: Annotated[
        str | None,
        typer.Option(
            envvar=env("CHECK_INDEX"),
            show_default=False,
            help="Check an Elasticsearch _bulk endpoint: bulks name this index, as an export with sendDirect"
            " sends them, and every item of an answer must succeed.",
        ),
    ] = None,
) -> None:
    """Check that an endpoint receives session exports properly.

    Sends what an exporter sends (samples with PUT and POST, JSON and NDJSON; a bulk filled to just
    under 896,000 bytes; the same bulk twice; a gzip bulk; requests without and with wrong credentials; a line
    that is not JSON) and reports every check as PASS, WARN or FAIL. Exits 1 when any check fails.
    With --index, the endpoint is Elasticsearch's _bulk, and an answer's failed items fail its check.
    """
    options = cli_options(
        url,
        timeout=timeout,
        ca_bundle=ca_bundle,
        allow_http=allow_http,
        basic=basic,
        oauth=parse_oauth(token_url, client_id, client_secret, scope),
        count_url=count_url,
        count_key=count_key,
        index=index,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the table says it all; not a line per request
    with Console(stderr=True, emoji=False).status("checking") as status:  # shown on a terminal only
        results = asyncio.run(run_checks(options, lambda check: status.update(f"checking: {check}")))
    console = Console(emoji=False)
    console.print(results_table(url, results))
    console.print(summary(results))
    raise typer.Exit(exit_code(results))
