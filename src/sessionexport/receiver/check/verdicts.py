"""Verdicts: what a check found, and the judges, pure rules from what came back to a verdict."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from sessionexport.export.auth import (
    TokenError,
    usable_token,
)
from sessionexport.export.delivery import Attempt
from sessionexport.export.tuning import DYNATRACE_MAX_BYTES


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
    if counts.after_first <= counts.before:
        return Verdict(
            Outcome.WARN,
            f"the count did not rise for {sessions} new sessions ({trail}): are --count-url/--count-key right?",
        )
    # Fewer than sent is loss (a re-send that then raises the count stores what the first lost);
    # more is others' traffic.
    if counts.after_first - counts.before < sessions:
        return Verdict(
            Outcome.FAIL,
            f"sessions lost: {sessions} new sessions answered 2xx raised the count by only"
            f" {counts.after_first - counts.before} ({trail})",
        )
    if counts.after_again > counts.after_first:
        return Verdict(
            Outcome.FAIL,
            f"duplicates stored twice: the same {sessions} sessions sent again raised the count ({trail})",
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
            " sessions, and did not rise by all of them for uncompressed ones either: not about"
            " compression (see the re-sent bulk)",
        )
    if after - before != sessions:
        return Verdict(
            Outcome.WARN,
            f"HTTP {attempt.status} for {what}, but the count went {before} → {after} for {sessions} new"
            " sessions: it may not read gzip; leave compression at none",
        )
    return Verdict(Outcome.PASS, f"{what}: its {sessions} sessions were counted ({before} → {after})")


def judge_token_reuse(refused: int) -> Verdict:
    """A token must serve until its expires_in runs out: the exporter caches it that long. An
    endpoint that refuses it before costs a token request and a second send each time."""
    if refused:
        return Verdict(
            Outcome.WARN,
            f"the endpoint refused a token it had issued {refused} time(s) (HTTP 401) before its"
            " expires_in ran out: exporters then ask for a new one and send again, each time",
        )
    return Verdict(Outcome.PASS, "every request was taken with the cached token")


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
