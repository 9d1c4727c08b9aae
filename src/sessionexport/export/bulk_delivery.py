"""Delivering one bulk of sessions: what was delivered, what was rejected item by item, what failed whole.

attempt ──2xx──▶ plain endpoint: every session delivered
   │             Elasticsearch: per item ─ ok ──────────▶ delivered
   │                                     ├ 429 / 5xx ───▶ sent again (only those) in the next attempt
   │                                     └ other ───────▶ rejected (dead letters, one per kind)
   ├─413 (more than one session)──▶ split in halves, each delivered on its own
   ├─413 (one session), Elasticsearch 400/401/403/404──▶ failed whole at once (refused for good; no retry)
   └─other failure──▶ backoff, next attempt ... out of attempts ──▶ failed whole (one dead letter)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sessionexport.export.config import SendDirect
from sessionexport.export.delivery import Attempt, Outcome, Sender, refused_for_good
from sessionexport.export.elasticsearch import BulkResponseError, ItemOutcome
from sessionexport.export.formats import bulk_body, encoded_size
from sessionexport.store.records import LogEntry


@dataclass(frozen=True, slots=True)
class Rejected:
    entry: LogEntry
    item: ItemOutcome  # the last answer, for good
    refusals: tuple[Attempt, ...]  # every attempt that refused it, with what Elasticsearch said of it


def rejection_attempts(rejected: Sequence[Rejected]) -> list[Attempt]:
    """The attempts in which these sessions were refused (busy, then for good), each with what
    Elasticsearch answered for the first of them (the request itself got a 2xx): a dead letter's
    history says why it is one."""
    first: dict[int, Attempt] = {}
    for r in rejected:
        for refusal in r.refusals:
            first.setdefault(refusal.number, refusal)
    return [attempt for _, attempt in sorted(first.items())]


@dataclass
class BulkResult:
    delivered: list[LogEntry] = field(default_factory=list)
    delivered_bytes: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    unsent: list[LogEntry] = field(default_factory=list)  # failed whole, every attempt
    retried: int = 0  # items sent again after a 429 / 5xx
    attempts: list[Attempt] = field(default_factory=list)
    failed_attempts: list[Attempt] = field(default_factory=list)  # those of the groups that failed whole
    on_attempt: Callable[[Attempt], None] | None = None  # told of each attempt as it ends

    def add_attempt(self, attempt: Attempt) -> None:
        self.attempts.append(attempt)
        if self.on_attempt is not None:
            self.on_attempt(attempt)

    @property
    def complete(self) -> bool:
        return not self.rejected and not self.unsent

    def failure(self) -> Outcome:
        """The whole-request failure of ``unsent``, as the alert and dead letter describe it: the
        attempts of the sessions that failed (after a 413 split, those of every half that failed,
        not those of a half that was delivered)."""
        return Outcome(delivered=False, attempts=list(self.failed_attempts or self.attempts))

    def outcome(self) -> Outcome:
        """The bulk's fate as one outcome: delivered whole, or why not."""
        if self.complete:
            return Outcome(delivered=True, attempts=list(self.attempts))
        if self.unsent:
            return self.failure()
        first = self.rejected[0].item  # the reason a replayed letter keeps: with Elasticsearch's own words
        reason = f"{len(self.rejected)} session(s) rejected by Elasticsearch, the first: {first.describe()}"
        return Outcome(delivered=False, attempts=rejection_attempts(self.rejected), reason=reason)


def rejection(rejected: Sequence[Rejected]) -> str:
    first = rejected[0].item
    return (
        f"{len(rejected)} session(s) rejected by Elasticsearch ({first.error_type or f'HTTP {first.status}'})"
    )


async def deliver_bulk(
    sender: Sender,
    entries: Sequence[LogEntry],
    direct: SendDirect | None,
    retries: int | None = None,
    on_attempt: Callable[[Attempt], None] | None = None,
) -> BulkResult:
    """``on_attempt``: told of each attempt as it ends (metrics show a failing endpoint at once,
    not once the bulk's last retry is over)."""
    result = BulkResult(on_attempt=on_attempt)
    await _deliver(
        sender, list(entries), direct, result, sender.config.tuning.retries if retries is None else retries
    )
    return result


async def _deliver(
    sender: Sender, pending: list[LogEntry], direct: SendDirect | None, result: BulkResult, retries: int
) -> None:
    items: list[tuple[LogEntry, ItemOutcome]] = []  # the retryable items of the last attempt
    mine: list[Attempt] = []  # this group's attempts
    refusals: dict[int, list[Attempt]] = {}  # by seq: the attempts that refused a session, busy or for good
    for number in range(1, retries + 2):
        if number > 1:
            await sender.backoff(number - 1, mine[-1] if mine else None)
        body = bulk_body(pending, direct)
        attempt, answer = await sender.attempt(number, body, read_answer=direct is not None)
        if attempt.status == 413 and len(pending) > 1:
            result.add_attempt(attempt)
            half = len(pending) // 2
            await _deliver(sender, pending[:half], direct, result, retries)
            await _deliver(sender, pending[half:], direct, result, retries)
            return
        if attempt.ok and direct is not None:
            attempt, items = _read_items(sender, attempt, answer, pending, direct, result, refusals)
        result.add_attempt(attempt)
        mine.append(attempt)
        if not attempt.ok:
            items = []
            if refused_for_good(attempt, elasticsearch=direct is not None):
                break
            continue
        if direct is None:
            result.delivered += pending
            result.delivered_bytes += len(body)
            return
        if not items:
            return
        pending = [entry for entry, _ in items]
        if number <= retries:
            result.retried += len(pending)
    if items:  # still busy after the last attempt: final for these items too
        result.rejected += [Rejected(entry, item, tuple(refusals[entry.seq])) for entry, item in items]
    else:
        result.unsent += pending
        result.failed_attempts += mine


def _read_items(
    sender: Sender,
    attempt: Attempt,
    answer: bytes,
    pending: list[LogEntry],
    direct: SendDirect,
    result: BulkResult,
    refusals: dict[int, list[Attempt]],
) -> tuple[Attempt, list[tuple[LogEntry, ItemOutcome]]]:
    """Sort a 2xx Elasticsearch answer's items: delivered and rejected into ``result``, each
    refusal into ``refusals``; return the retryable."""
    try:
        outcomes = sender.item_outcomes(answer, len(pending))
    except BulkResponseError as exc:
        return dataclasses.replace(attempt, error=str(exc)), []
    retry = []
    for entry, item in zip(pending, outcomes, strict=True):
        if item.ok:
            result.delivered.append(entry)
            result.delivered_bytes += encoded_size(entry, direct)  # its action line too: bytes sent
            continue
        refused = dataclasses.replace(attempt, status=item.status, error=item.describe())
        refusals.setdefault(entry.seq, []).append(refused)
        if item.retryable:
            retry.append((entry, item))
        else:
            result.rejected.append(Rejected(entry, item, tuple(refusals[entry.seq])))
    return attempt, retry
