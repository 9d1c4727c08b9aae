"""Sending one bulk: the request, its retries with backoff, and the outcome of every attempt.

    attempt 1 ──fail──▶ wait backoff ──▶ attempt 2 ... attempt 1+retries ──fail──▶ Outcome(failed)
        │ 2xx                                   │ 2xx
        └──────────────▶ Outcome(delivered) ◀───┘

A 401 with OAuth drops the cached token and retries at once, within the same attempt.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from sessionexport.clock import now_ms
from sessionexport.content_encoding import gzipped
from sessionexport.export.answers import http_error
from sessionexport.export.auth import Credentials, TokenError, describe_transport_error
from sessionexport.export.config import ExportConfig
from sessionexport.export.elasticsearch import BulkResponseError, item_outcomes

TIMEOUT_TITLE = "Request timeout"
OAUTH_FAILURE_PREFIX = "OAuth token: "  # how an attempt's error says the token endpoint failed
# What Elasticsearch answers a bulk request it will never take (a bad request, credentials or
# rights it refuses, no such index, too large): trying it again changes nothing.
FINAL_ELASTICSEARCH_STATUSES = frozenset({400, 401, 403, 404, 413})


def refused_for_good(attempt: Attempt, elasticsearch: bool) -> bool:
    """Whether another attempt is pointless: Elasticsearch refused the whole request for good."""
    return elasticsearch and attempt.status in FINAL_ELASTICSEARCH_STATUSES


@dataclass(frozen=True, slots=True)
class Attempt:
    number: int
    at: int
    duration_ms: int
    status: int | None = None
    error: str | None = None
    timed_out: bool = False
    token_failure: bool = False

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

    @property
    def last(self) -> Attempt:
        return self.attempts[-1]

    @property
    def alert_title(self) -> str:
        """Dynatrace's alert texts: "Request timeout", else "Request failed: <reason>"."""
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
                await self.backoff(number - 1)
            attempt, answer = await self.attempt(number, body, content_type, read_answer=items is not None)
            if attempt.ok and items is not None:
                attempt = _every_item_ok(attempt, answer, items)
            outcome.attempts.append(attempt)
            if attempt.ok:
                outcome.delivered, outcome.status = True, attempt.status
                break
            if refused_for_good(attempt, elasticsearch=items is not None):
                break
        return outcome

    async def backoff(self, retry: int) -> None:
        tuning = self.config.tuning
        await self._sleep(backoff_seconds(retry, tuning.backoffSeconds, tuning.backoffMaxSeconds))

    async def attempt(
        self, number: int, body: bytes, content_type: str | None = None, *, read_answer: bool = False
    ) -> tuple[Attempt, bytes]:
        """One request (a 401 with OAuth refreshes the token and tries once more); the answer's body
        is read only when asked for (Elasticsearch's per-item results). With the ``compression``
        knob, the body goes out gzipped (compressed off the event loop: a bulk takes milliseconds)."""
        compressed = self.config.tuning.compression == "gzip"
        content = await asyncio.to_thread(gzipped, body) if compressed else body
        started, at = time.perf_counter(), now_ms()

        def done(answer: bytes = b"", **kwargs: object) -> tuple[Attempt, bytes]:
            took = int((time.perf_counter() - started) * 1000)
            return Attempt(number, at, took, **kwargs), answer  # type: ignore[arg-type]

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
            try:
                response = await self._client.request(
                    self.config.method,
                    self.config.endpoint_url,
                    content=content,
                    headers=headers,
                    timeout=self.config.tuning.timeoutSeconds,
                )
                try:
                    answer = await response.aread() if read_answer else b""
                finally:
                    await response.aclose()
            except httpx.TimeoutException:
                return done(error=f"no answer within {self.config.tuning.timeoutSeconds:g} s", timed_out=True)
            except httpx.HTTPError as exc:
                return done(error=describe_transport_error(exc))
            except (httpx.InvalidURL, ValueError) as exc:  # stored before validation refused such URLs
                return done(error=f"the request could not be made: {exc}")
            if response.status_code == 401 and not refreshed and await self._credentials.refresh():
                refreshed = True
                continue
            ok = 200 <= response.status_code < 300
            error = None if ok else http_error(response.status_code, response.content)
            return done(answer, status=response.status_code, error=error)


def _every_item_ok(attempt: Attempt, answer: bytes, items: int) -> Attempt:
    try:
        failed = [item for item in item_outcomes(answer, items) if not item.ok]
    except BulkResponseError as exc:
        return dataclasses.replace(attempt, error=str(exc))
    if not failed:
        return attempt
    return dataclasses.replace(attempt, error=f"{len(failed)} item(s) failed, first: {failed[0].describe()}")


def backoff_seconds(retry: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter: about base, 2*base, 4*base ... never above cap."""
    delay = min(cap, base * 2 ** (retry - 1))
    return float(delay * random.uniform(0.8, 1.0))
