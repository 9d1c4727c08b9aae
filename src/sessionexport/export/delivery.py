"""Sending one bulk: the request, its retries with backoff, and the outcome of every attempt.

    attempt 1 ──fail──▶ wait backoff ──▶ attempt 2 ... attempt 1+retries ──fail──▶ Outcome(failed)
        │ 2xx                                   │ 2xx
        └──────────────▶ Outcome(delivered) ◀───┘

A 401 with OAuth drops the cached token and retries at once, within the same attempt.

An attempt ends at ``timeoutSeconds`` whatever the endpoint does (an answer that trickles in a byte
at a time included), and reads at most what it needs of the answer: its reason, or Elasticsearch's
items. A 429 or 503 with ``Retry-After`` is waited out (up to ``RETRY_AFTER_MAX_SECONDS``) before
the next attempt; a 413 is final for the body that got it (the exporter splits bulks before that).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from sessionexport.clock import now_ms
from sessionexport.content_encoding import gzipped
from sessionexport.export.answers import WHOLE_BYTES, http_error, retry_after_seconds
from sessionexport.export.auth import Credentials, TokenError
from sessionexport.export.config import ExportConfig
from sessionexport.export.elasticsearch import BulkResponseError, ItemOutcome, item_outcomes
from sessionexport.export.exchange import TRANSPORT_ERRORS, describe_transport_error, exchange
from sessionexport.export.masking import masked, sent_secret

TIMEOUT_TITLE = "Request timeout"
# Of the exchange's timeout, what connecting (TCP and TLS) may take: it gives up first, so that a
# connection never made is not taken for a request sent and left unanswered.
CONNECT_SHARE = 0.9
OAUTH_FAILURE_PREFIX = "OAuth token: "  # how an attempt's error says the token endpoint failed
# What Elasticsearch answers a bulk request it will never take (a bad request, credentials or
# rights it refuses, no such index, too large): trying it again changes nothing.
FINAL_ELASTICSEARCH_STATUSES = frozenset({400, 401, 403, 404, 413})
RETRY_AFTER_MAX_SECONDS = 120.0  # an endpoint asking for longer is tried again after this
ANSWER_BYTES = WHOLE_BYTES + 1  # of an answer, what its reason is read from (and whether there is more)
BULK_ANSWER_BYTES = 64 * 1024 * 1024  # of an Elasticsearch bulk answer: an item per document


def refused_for_good(attempt: Attempt, elasticsearch: bool) -> bool:
    """Whether sending the same body again is pointless: it is too large for the endpoint (413), or
    Elasticsearch refused the whole request for good."""
    return attempt.status == 413 or (elasticsearch and attempt.status in FINAL_ELASTICSEARCH_STATUSES)


@dataclass(frozen=True, slots=True)
class Attempt:
    number: int
    at: int
    duration_ms: int
    status: int | None = None
    error: str | None = None
    timed_out: bool = False
    token_failure: bool = False
    retry_after: float | None = None  # seconds the endpoint asked to wait (429, 503)
    sent: bool = False  # the request went out whole, answered or not

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300 and self.error is None

    def as_json(self) -> dict[str, object]:
        return {
            "attempt": self.number,
            "at": self.at,
            "durationMs": self.duration_ms,
            "status": self.status,
            "error": self.error,
        }


@dataclass
class Outcome:
    delivered: bool
    attempts: list[Attempt] = field(default_factory=list)
    status: int | None = None
    reason: str | None = None  # why it failed, when no attempt says it (items Elasticsearch rejected)

    @property
    def last(self) -> Attempt:
        return self.attempts[-1]

    @property
    def alert_title(self) -> str:
        """Dynatrace's alert texts: "Request timeout", else "Request failed: <reason>"."""
        if self.reason is not None:
            return f"Request failed: {self.reason}"
        if self.last.timed_out:
            return TIMEOUT_TITLE
        return f"Request failed: {self.last.error or f'HTTP {self.last.status}'}"


class Sender:
    def __init__(
        self,
        config: ExportConfig,
        client: httpx.AsyncClient,
        credentials: Credentials,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.config = config
        self._client = client
        self._credentials = credentials
        self._sleep = sleep

    async def send(
        self,
        body: bytes,
        retries: int | None = None,
        content_type: str | None = None,
        items: int | None = None,
    ) -> Outcome:
        """Send one body until a 2xx or out of attempts (1 + ``retries``). With ``items`` (an
        Elasticsearch bulk of that many documents), a 2xx counts only when every item succeeded,
        and a whole request refused for good (``FINAL_ELASTICSEARCH_STATUSES``) is not tried again."""
        retries = self.config.tuning.retries if retries is None else retries
        outcome = Outcome(delivered=False)
        for number in range(1, retries + 2):
            if number > 1:
                await self.backoff(number - 1, outcome.last)
            attempt, answer = await self.attempt(number, body, content_type, read_answer=items is not None)
            if attempt.ok and items is not None:
                attempt = self._every_item_ok(attempt, answer, items)
            outcome.attempts.append(attempt)
            if attempt.ok:
                outcome.delivered, outcome.status = True, attempt.status
                break
            if refused_for_good(attempt, elasticsearch=items is not None):
                break
        return outcome

    def item_outcomes(self, answer: bytes, expected: int) -> list[ItemOutcome]:
        """An Elasticsearch answer's items, their reasons masked (they are logged and kept)."""
        return item_outcomes(answer, expected, self._credentials.secrets())

    def _every_item_ok(self, attempt: Attempt, answer: bytes, items: int) -> Attempt:
        try:
            failed = [item for item in self.item_outcomes(answer, items) if not item.ok]
        except BulkResponseError as exc:
            return dataclasses.replace(attempt, error=str(exc))
        if not failed:
            return attempt
        first = failed[0].describe()
        return dataclasses.replace(attempt, error=f"{len(failed)} item(s) failed, first: {first}")

    async def backoff(self, retry: int, previous: Attempt | None = None) -> None:
        """Wait before retry number ``retry``: the backoff, or what the endpoint asked for in the
        previous attempt's ``Retry-After`` when longer (within ``RETRY_AFTER_MAX_SECONDS``)."""
        tuning = self.config.tuning
        delay = backoff_seconds(retry, tuning.backoffSeconds, tuning.backoffMaxSeconds)
        if previous is not None and previous.retry_after is not None:
            delay = max(delay, min(previous.retry_after, RETRY_AFTER_MAX_SECONDS))
        await self._sleep(delay)

    async def attempt(
        self, number: int, body: bytes, content_type: str | None = None, *, read_answer: bool = False
    ) -> tuple[Attempt, bytes]:
        """One request (a 401 with OAuth refreshes the token and tries once more); its answer is read
        as far as needed: its reason, or with ``read_answer`` Elasticsearch's items. With the ``compression``
        knob, the body goes out gzipped (compressed off the event loop: a bulk takes milliseconds)."""
        compressed = self.config.tuning.compression == "gzip"
        content = await asyncio.to_thread(gzipped, body) if compressed else body
        timeout = self.config.tuning.timeoutSeconds
        connect_timeout = timeout * CONNECT_SHARE
        started, at = time.perf_counter(), now_ms()

        sent_with: tuple[str, ...] = ()  # the credential of the request sent last

        def done(
            answer: bytes = b"",
            *,
            error: str | None = None,
            status: int | None = None,
            timed_out: bool = False,
            token_failure: bool = False,
            retry_after: float | None = None,
            sent: bool = False,
        ) -> tuple[Attempt, bytes]:
            took = int((time.perf_counter() - started) * 1000)
            if error is not None:  # kept in dead letters and alerts, logged: never a secret in it
                error = masked(error, (*self._credentials.secrets(), *sent_with))
            attempt = Attempt(
                number,
                at,
                took,
                status=status,
                error=error,
                timed_out=timed_out,
                token_failure=token_failure,
                retry_after=retry_after,
                sent=sent,
            )
            return attempt, answer

        refreshed = False
        while True:
            try:
                headers = {
                    "Content-Type": content_type or self.config.content_type,
                    **({"Content-Encoding": "gzip"} if compressed else {}),
                    **await self._credentials.headers(),
                }
            except TokenError as exc:
                return done(error=f"{OAUTH_FAILURE_PREFIX}{exc}", token_failure=True)
            sent_with = sent_secret(headers)
            try:
                request = self._client.build_request(
                    self.config.method,
                    self.config.endpoint_url,
                    content=content,
                    headers=headers,
                    timeout=httpx.Timeout(timeout, connect=connect_timeout),
                )
                async with asyncio.timeout(timeout):
                    response, answer = await exchange(
                        self._client, request, BULK_ANSWER_BYTES if read_answer else ANSWER_BYTES
                    )
            except httpx.ConnectTimeout:
                unmade = f"no connection within {connect_timeout:g} s (no TCP or TLS handshake)"
                return done(error=unmade, timed_out=True)
            except (TimeoutError, httpx.TimeoutException) as exc:
                return done(error=f"no answer within {timeout:g} s", timed_out=True, sent=went_out(exc))
            except TRANSPORT_ERRORS as exc:
                return done(error=describe_transport_error(exc), sent=went_out(exc))
            except (httpx.InvalidURL, ValueError) as exc:  # stored before validation refused such URLs
                return done(error=f"the request could not be made: {exc}")
            if response.status_code == 401 and not refreshed and await self._credentials.refresh():
                refreshed = True
                continue
            status = response.status_code
            secrets = (*self._credentials.secrets(), *sent_with)
            error = None if 200 <= status < 300 else http_error(status, answer, secrets)
            if 300 <= status < 400 and (location := response.headers.get("location")):
                shown = masked(location, secrets)[:200]
                error = (
                    f"HTTP {status}: redirects to {shown} (not followed: set endpointUrl to where it leads)"
                )
            wait = (
                retry_after_seconds(response.headers.get("retry-after"), now_ms())
                if status in (429, 503)
                else None
            )
            return done(answer, status=status, error=error, retry_after=wait, sent=True)


def went_out(exc: Exception) -> bool:
    """Whether a request that failed so had gone out whole: the connection broke, or time ran out,
    while its answer was awaited (a timeout of the whole exchange is taken as such)."""
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout | httpx.WriteTimeout):
        return False
    return isinstance(
        exc, TimeoutError | httpx.ReadTimeout | httpx.ReadError | httpx.RemoteProtocolError | ssl.SSLError
    )


def backoff_seconds(retry: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter: about base, 2*base, 4*base ... never above cap."""
    delay = min(cap, base * 2 ** (retry - 1))
    return float(delay * random.uniform(0.8, 1.0))
