"""Delivering one bulk, with a scripted endpoint in place of the network: splits, item retries, and
which attempt a failure is blamed on."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import orjson
import pytest

from sessionexport.export.bulk_delivery import deliver_bulk, rejection_attempts
from sessionexport.export.config import ExportConfig, SendDirect
from sessionexport.export.deadletters import letter_entries
from sessionexport.export.delivery import Attempt, Outcome
from sessionexport.export.elasticsearch import ItemOutcome, item_outcomes
from sessionexport.export.exporter import _alert_message
from sessionexport.export.formats import bulk_body
from sessionexport.export.tuning import ExportTuning
from sessionexport.store.records import DeadLetter, LogEntry


def entry(seq: int) -> LogEntry:
    body = orjson.dumps({"tenantId": "t", "userSessionId": f"s{seq}", "startTime": 1_700_000_000_000 + seq})
    return LogEntry(seq, 0, "t", f"s{seq}", 1_700_000_000_000 + seq, None, None, None, (), body)


@dataclass
class Endpoint:
    """Answers each request by a rule on the sessions it holds; records what it was sent."""

    limit: int = 1000  # more sessions than this: 413
    failing: set[int] = field(default_factory=set)  # a request holding any of these seqs: connection error
    items: deque[list[int]] = field(default_factory=deque)  # Elasticsearch item statuses, per request
    whole: int | None = None  # every request answered with this status
    sent: list[list[int]] = field(default_factory=list)
    config: ExportConfig = field(
        default_factory=lambda: ExportConfig(
            "x", "https://e", True, "application/json", True, None, None, None, False, ExportTuning(retries=2)
        )
    )

    async def backoff(self, retry: int, previous: Attempt | None = None) -> None:
        return None

    def item_outcomes(self, answer: bytes, expected: int) -> list[ItemOutcome]:
        return item_outcomes(answer, expected)

    async def attempt(
        self, number: int, body: bytes, content_type: str | None = None, *, read_answer: bool = False
    ) -> tuple[Attempt, bytes]:
        seqs = [
            int(orjson.loads(line)["userSessionId"][1:])
            for line in body.splitlines()
            if b"userSessionId" in line
        ]
        self.sent.append(seqs)
        if len(seqs) > self.limit:
            return Attempt(number, 0, 1, status=413, error="HTTP 413"), b""
        if self.whole is not None:
            return Attempt(number, 0, 1, status=self.whole, error=f"HTTP {self.whole}"), b"{}"
        if self.failing & set(seqs):
            return Attempt(number, 0, 1, error="connection reset"), b""
        if not self.items:
            return Attempt(number, 0, 1, status=200), b'{"errors":false,"items":[]}'
        statuses = self.items.popleft()
        answer = {
            "errors": True,
            "items": [{"index": {"status": s, "error": {"type": "t", "reason": "r"}}} for s in statuses],
        }
        return Attempt(number, 0, 1, status=200), orjson.dumps(answer)


async def test_a_413_split_blames_the_failing_half_not_the_last_request() -> None:
    endpoint = Endpoint(limit=2, failing={1})
    result = await deliver_bulk(endpoint, [entry(n) for n in (1, 2, 3, 4)], None)  # type: ignore[arg-type]
    assert [e.seq for e in result.delivered] == [3, 4]
    assert [e.seq for e in result.unsent] == [1, 2]
    assert result.failure().alert_title == "Request failed: connection reset"
    assert len(result.failure().attempts) == 3  # the failing half's own attempts: 1 + 2 retries
    assert endpoint.sent[0] == [1, 2, 3, 4]


async def test_after_a_413_split_the_failure_holds_the_attempts_of_every_failing_half() -> None:
    endpoint = Endpoint(limit=2, failing={1, 3})
    result = await deliver_bulk(endpoint, [entry(n) for n in (1, 2, 3, 4)], None)  # type: ignore[arg-type]
    assert [e.seq for e in result.unsent] == [1, 2, 3, 4] and not result.delivered
    assert len(result.failure().attempts) == 6  # both halves: 1 + 2 retries each


async def test_busy_items_are_sent_again_alone_and_others_rejected_at_once() -> None:
    endpoint = Endpoint(items=deque([[201, 429, 400, 503], [201, 201]]))
    direct = SendDirect("idx", None)
    result = await deliver_bulk(endpoint, [entry(n) for n in (1, 2, 3, 4)], direct)  # type: ignore[arg-type]
    assert endpoint.sent == [[1, 2, 3, 4], [2, 4]]
    assert sorted(e.seq for e in result.delivered) == [1, 2, 4]
    assert [(r.entry.seq, r.item.status) for r in result.rejected] == [(3, 400)]
    assert result.retried == 2 and not result.unsent


async def test_a_rejected_session_s_history_holds_every_attempt_that_refused_it() -> None:
    endpoint = Endpoint(items=deque([[201, 429, 503], [503, 429], [400, 429]]))
    direct = SendDirect("idx", None)
    result = await deliver_bulk(endpoint, [entry(n) for n in (1, 2, 3)], direct)  # type: ignore[arg-type]
    assert endpoint.sent == [[1, 2, 3], [2, 3], [2, 3]]
    refused = {r.entry.seq: [(a.number, a.status) for a in r.refusals] for r in result.rejected}
    assert refused == {2: [(1, 429), (2, 503), (3, 400)], 3: [(1, 503), (2, 429), (3, 429)]}
    assert [(a.number, a.status) for a in rejection_attempts(result.rejected)] == [
        (1, 429),
        (2, 503),
        (3, 400),
    ]


async def test_elasticsearch_bytes_delivered_are_those_sent_action_lines_included() -> None:
    endpoint = Endpoint(items=deque([[201, 400, 201]]))
    direct = SendDirect("idx", None)
    entries = [entry(n) for n in (1, 2, 3)]
    result = await deliver_bulk(endpoint, entries, direct)  # type: ignore[arg-type]
    assert result.delivered_bytes == len(bulk_body([entries[0], entries[2]], direct))


@pytest.mark.parametrize(("status", "requests"), [(400, 1), (403, 1), (413, 1), (429, 3), (503, 3)])
async def test_elasticsearch_refusing_a_request_for_good_is_not_asked_again(
    status: int, requests: int
) -> None:
    endpoint = Endpoint(whole=status)
    result = await deliver_bulk(endpoint, [entry(1)], SendDirect("i", None))  # type: ignore[arg-type]
    assert [e.seq for e in result.unsent] == [1]
    assert len(endpoint.sent) == requests  # 429 and 5xx: busy for now, so 1 + 2 retries


async def test_a_plain_endpoint_is_asked_again_whatever_it_answered() -> None:
    endpoint = Endpoint(whole=400)
    result = await deliver_bulk(endpoint, [entry(1)], None)  # type: ignore[arg-type]
    assert [e.seq for e in result.unsent] == [1] and len(endpoint.sent) == 3


async def test_a_single_session_the_endpoint_finds_too_large_is_not_sent_again() -> None:
    """A 413 for one session is final: retrying the same body cannot change the answer."""
    endpoint = Endpoint(limit=0)
    result = await deliver_bulk(endpoint, [entry(1), entry(2)], None)  # type: ignore[arg-type]
    assert endpoint.sent == [[1, 2], [1], [2]]  # split once, then each half once: no retries
    assert [e.seq for e in result.unsent] == [1, 2]
    assert result.failure().alert_title == "Request failed: HTTP 413"


def test_an_alert_names_the_first_and_last_attempts_of_a_long_story() -> None:
    outcome = Outcome(False, [Attempt(n % 4 + 1, 0, 1, status=413 + n) for n in range(40)])
    message = _alert_message(outcome)
    assert message.startswith(
        "The bulk was kept as a dead letter after 40 attempt(s) (#1: 413; #2: 414; #3: 415;"
    )
    assert "; 34 more; " in message and message.endswith("#2: 450; #3: 451; #4: 452).")
    short = _alert_message(Outcome(False, [Attempt(1, 0, 1, error="reset")]))
    assert short == "The bulk was kept as a dead letter after 1 attempt(s) (#1: reset)."


def letter(body: bytes, count: int) -> DeadLetter:
    sessions = [("t", f"s{n}", 1_700_000_000_000 + n) for n in range(1, count + 1)]
    return DeadLetter("x", 5, 1, count, sessions, "application/json", body, "Request timeout", [])


@pytest.mark.parametrize("direct", [None, SendDirect("sessions", None)], ids=["plain", "elasticsearch"])
def test_a_letter_s_sessions_are_read_back_from_either_format(direct: SendDirect | None) -> None:
    entries = [entry(n) for n in (1, 2, 3)]
    read = letter_entries(letter(bulk_body(entries, direct), 3))
    assert read is not None
    assert [(e.tenant_id, e.user_session_id, e.start_time, e.body) for e in read] == [
        (e.tenant_id, e.user_session_id, e.start_time, e.body) for e in entries
    ]
    assert bulk_body(read, None) == bulk_body(entries, None)  # as a plain endpoint now takes them


def test_a_letter_whose_body_does_not_hold_its_sessions_is_not_read_back() -> None:
    assert letter_entries(letter(b'{"a":1}\n{"b":2}\n{"c":3}\n', 2)) is None


async def test_a_bulk_elasticsearch_rejects_in_part_says_why_in_elasticsearch_s_words() -> None:
    endpoint = Endpoint(items=deque([[200, 400]]))
    direct = SendDirect("sessions", None)
    outcome = (await deliver_bulk(endpoint, [entry(1), entry(2)], direct)).outcome()  # type: ignore[arg-type]
    assert not outcome.delivered
    assert (
        outcome.alert_title == "Request failed: 1 session(s) rejected by Elasticsearch, the first: 400 t: r"
    )
