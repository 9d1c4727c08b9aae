"""One export shard's loop: read the log from its cursor, batch, deliver, decide, move the cursor.

    read_shard(after position) ─▶ zone filter ─▶ Batcher ─▶ deliver_bulk ─▶ delivered: move cursor
                                                                         └▶ failed whole, or items rejected by
                                                                            Elasticsearch: dead letters + move
                                                                            cursor + alert (one transaction)

An exporter works on one shard of an export (the sessions whose seq % shards == shard; all of
them with one shard) under its ``Claim``: every cursor write is refused once the claim's lease is
lost (``LeaseLost`` ends ``run``), so a stale exporter never moves a cursor another has taken over.

The cursor only moves past a session once its fate is decided, in log order, even with several
bulks in flight; a crash at any point re-sends at most the bulks that were in flight. Reading the
log, batching the next bulk, sending and recording decisions overlap, each bounded, so memory stays flat.
``stop_gracefully`` lets the bulks in flight be decided and sends nothing more, so that handing a
shard to another worker sends nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sessionexport.clock import now_ms
from sessionexport.export.batching import Batcher, Bulk, FlushTimer
from sessionexport.export.bulk_delivery import (
    BulkResult,
    Rejected,
    deliver_bulk,
    rejection,
    rejection_attempts,
)
from sessionexport.export.config import ExportConfig
from sessionexport.export.delivery import Attempt, Outcome, Sender
from sessionexport.export.formats import bulk_body, encoded_size
from sessionexport.export.metrics import ExportMetrics
from sessionexport.export.notifier import LogNotifier
from sessionexport.export.zones import Zone
from sessionexport.store import Store
from sessionexport.store.records import BulkDecision, Claim, LogEntry, NewAlert, NewDeadLetter

log = logging.getLogger(__name__)

READ_BATCH = 500
READ_AHEAD = 2  # chunks read ahead of the batcher: memory stays bounded however large the backlog
IDLE_POLL_SECONDS = 1.0  # also catches sessions appended by other processes
ALERT_CHECK_MS = 10_000  # how often a succeeding exporter looks for alerts raised elsewhere


@dataclass
class _Chunk:
    entries: list[LogEntry]
    caught_up: bool  # the log had nothing more when this was read
    end: int = 0  # every session of the shard up to this seq is in entries or before them
    failure: Exception | None = None


@dataclass
class _InFlight:
    bulk: Bulk
    position: int  # where the cursor may move once this bulk and all before it are decided
    task: asyncio.Task[BulkResult]


class Exporter:
    def __init__(
        self,
        store: Store,
        config: ExportConfig,
        sender: Sender,
        notifier: LogNotifier,
        metrics: ExportMetrics,
        claim: Claim,
        zone: Zone | None = None,
        clock: Callable[[], int] = now_ms,
        slots: asyncio.Semaphore | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.claim = claim
        self.slots = slots  # the export's bulks in flight in this process, shared by its shards
        self.sender = sender
        self.notifier = notifier
        self.metrics = metrics
        self.zone = zone
        self.clock = clock
        self._sending: deque[_InFlight] = deque()  # bulks whose request is under way, oldest first
        self._deciding: asyncio.Queue[_InFlight] = asyncio.Queue(maxsize=max(1, config.tuning.concurrency))
        self._decider: asyncio.Task[None] | None = None
        self._alerting = True  # until known otherwise: the first success closes any open alert
        self._fresh_run = True  # until caught up in a run (see run)
        self._alerts_checked_at = 0  # when a success last looked for alerts to close (raised elsewhere)
        self._stopping = asyncio.Event()

    @property
    def export_id(self) -> str:
        return self.config.export_id

    def stop_gracefully(self) -> None:
        """Send nothing more; ``run`` returns once the bulks in flight are decided."""
        self._stopping.set()

    async def run(self, start_position: int) -> None:
        # A run after a failed one starts afresh: what that one left in flight was never decided,
        # and is sent again from the durable cursor (deciding it now could skip a failed bulk).
        self._sending = deque()
        self._deciding = asyncio.Queue(maxsize=max(1, self.config.tuning.concurrency))
        self._alerting = True  # the first success looks for alerts to close
        self._fresh_run = True  # until caught up: then an "Exporter failed" alert closes, idle or not
        position = decided = await self.store.start_shard(self.claim, start_position, self.clock())
        batcher, timer, backlog = Batcher(self.config.tuning), FlushTimer(self.config.tuning), False
        timer.arrived(self.clock(), self.clock(), time.monotonic())
        chunks: asyncio.Queue[_Chunk] = asyncio.Queue(maxsize=READ_AHEAD)
        reader = asyncio.create_task(self._read_ahead(position, chunks), name=f"read {self.export_id}")
        self._decider = asyncio.create_task(self._decide_in_order(), name=f"decide {self.export_id}")
        log.info("export %s: %s starting after seq %d", self.export_id, _shard_name(self.claim), position)
        try:
            while not self._stopping.is_set():
                # In a backlog every session has waited past the flush interval: the sessions
                # that follow fill the bulk before it goes, rather than one bulk per read.
                due = None if backlog or not batcher.pending else timer.seconds_left(time.monotonic())
                if due == 0:
                    await self._dispatch(batcher.take(), position)
                    continue
                chunk = await self._next_chunk(chunks, due)
                if chunk is None:
                    continue  # a flush rule came due, or a stop
                if chunk.failure is not None:
                    raise chunk.failure
                backlog = not chunk.caught_up
                if chunk.entries:
                    position, now, mono = chunk.entries[-1].seq, self.clock(), time.monotonic()
                    timer.arrived(chunk.entries[-1].received_at, now, mono)
                    first = batcher.pending[0] if batcher.pending else None
                    bulks = batcher.offer_all(*self._wanted(chunk.entries))
                    if batcher.pending and batcher.pending[0] is not first:
                        timer.started(batcher.pending[0], now, mono)
                    for bulk, settled in zip(
                        bulks, _settled_positions(bulks, batcher, position), strict=True
                    ):
                        if self._stopping.is_set():  # a hand-over: the rest is the next holder's
                            break
                        await self._dispatch(bulk, settled)
                if self._stopping.is_set():
                    break
                position = max(position, chunk.end)  # the rest up to there is other shards'
                if not chunk.caught_up:
                    continue
                await self._settle()  # caught up: decide what is in flight before idling
                if self._fresh_run:  # it read to the end: what stopped its last run is past
                    await self.store.close_alerts(self.export_id, self.alert_kind("exporter"), self.clock())
                    self._fresh_run = False
                if not batcher.pending and position > decided:
                    await self.store.record_skip(self.claim, position, self.clock())  # filtered out
                    decided = position
            await self._settle()  # stopping: what was sent is decided, what was not stays for the next
        finally:
            reader.cancel()
            self._decider.cancel()
            for flight in self._sending:
                flight.task.cancel()  # undecided: sent again after a restart

    def _wanted(self, entries: list[LogEntry]) -> tuple[list[LogEntry], list[int]]:
        """The sessions of a read that go out (those of the zone, if any), and the bytes each adds to a body."""
        if self.zone is not None:
            entries = [entry for entry in entries if self.zone.contains(entry)]
        direct = self.config.send_direct
        return entries, [encoded_size(entry, direct) for entry in entries]

    async def _read_ahead(self, position: int, chunks: asyncio.Queue[_Chunk]) -> None:
        """Read the shard's part of the log into a small queue, so that reading overlaps sending."""
        claim = self.claim
        try:
            while True:
                read = await self.store.read_shard(position, READ_BATCH, claim.shard, claim.shards)
                position = read.end
                caught_up = len(read.entries) < READ_BATCH
                await chunks.put(_Chunk(read.entries, caught_up, read.end))
                if caught_up:
                    await self.notifier.wait(IDLE_POLL_SECONDS)
        except Exception as exc:  # handed to the loop, which fails (and is restarted) with it
            await chunks.put(_Chunk([], True, failure=exc))

    async def _next_chunk(self, chunks: asyncio.Queue[_Chunk], seconds: float | None) -> _Chunk | None:
        """The next chunk read, or None when ``seconds`` pass or a stop is asked for first."""
        getter = asyncio.ensure_future(chunks.get())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait([getter, stopping], timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            getter.cancel()
            stopping.cancel()
        return getter.result() if getter.done() and not getter.cancelled() else None

    async def _dispatch(self, bulk: Bulk, position: int) -> None:
        """Send a bulk once fewer than ``concurrency`` requests are under way, and return at once:
        the next bulk is batched while this one is sent (one bulk waits ready, memory stays flat).

        Decisions (cursor, dead letters, alerts) are recorded in log order by ``_decide_in_order``
        while the next bulk is already being sent: the store stays off the sending path.
        """
        while self._sending and (
            len(self._sending) >= self.config.tuning.concurrency or self._sending[0].task.done()
        ):
            await asyncio.wait([self._sending[0].task])
            self._sending.popleft()
        if self._stopping.is_set():
            return  # asked to stop while waiting: left undecided, for whoever runs the shard next
        task = asyncio.create_task(self._deliver(bulk), name=f"deliver {self.export_id} {bulk.first_seq}")
        flight = _InFlight(bulk, position, task)
        self._sending.append(flight)
        await self._until_decider(self._deciding.put(flight))  # bounded: waits when deciding lags

    async def _deliver(self, bulk: Bulk) -> BulkResult:
        async with self.slots or contextlib.nullcontext():  # the process's cap for this export
            return await deliver_bulk(
                self.sender, bulk.entries, self.config.send_direct, on_attempt=self._observe
            )

    async def _settle(self) -> None:
        """Wait until every bulk sent so far is decided."""
        await self._until_decider(self._deciding.join())
        self._sending.clear()

    async def _until_decider(self, work: Awaitable[None]) -> None:
        """Await ``work``, unless the decider fails first (then fail with its error)."""
        assert self._decider is not None
        waiter = asyncio.ensure_future(work)
        try:
            await asyncio.wait([waiter, self._decider], return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()  # when this exporter is cancelled too: nothing is left pending
        if self._decider.done():  # it failed (a store error): nothing more may be sent or decided
            raise self._decider.exception() or RuntimeError("the decider stopped")

    async def _decide_in_order(self) -> None:
        while True:
            flight = await self._deciding.get()
            try:
                await self._decide(flight)
            finally:
                self._deciding.task_done()

    async def _decide(self, flight: _InFlight) -> None:
        result = await flight.task
        now = self.clock()
        letters = self._dead_letters(result, now)
        alerts = () if self.config.disable_notification else self._alerts(result)
        closes = await self._closes(now) if result.complete else ()
        decision = BulkDecision(len(result.delivered), result.retried, tuple(letters), alerts, closes)
        ids = await self.store.record_bulk(self.claim, flight.position, decision, now)
        self._count(result, decision)
        if result.complete:
            self._alerting = False  # what its success closes is closed
        if alerts:
            self._alerting = True
        for letter, letter_id in zip(letters, ids, strict=True):
            log.warning(
                "export %s: %d session(s) (seq %d-%d) kept as dead letter %d: %s",
                self.export_id,
                len(letter.sessions),
                letter.first_seq,
                letter.last_seq,
                letter_id,
                letter.reason,
            )

    def _dead_letters(self, result: BulkResult, now: int) -> list[NewDeadLetter]:
        """One for the sessions that failed whole, one per kind of rejection (status and error
        type) for those Elasticsearch rejected: a cluster busy past the last attempt, or a mapping
        every document breaks, makes one letter to replay, not one per session."""
        letters = []
        if result.unsent:
            failure = result.failure()
            tried = [a.as_json() for a in failure.attempts]
            letters.append(self._letter(result.unsent, failure.alert_title, tried, now))
        kinds: dict[tuple[int, str | None], list[Rejected]] = {}
        for rejected in result.rejected:
            kinds.setdefault((rejected.item.status, rejected.item.error_type), []).append(rejected)
        for group in kinds.values():
            reason = f"Rejected by Elasticsearch: {group[0].item.describe()}"
            tried = [a.as_json() for a in rejection_attempts(group)]
            letters.append(self._letter([r.entry for r in group], reason, tried, now))
        return letters

    def _letter(
        self, entries: list[LogEntry], reason: str, attempts: list[dict[str, object]], now: int
    ) -> NewDeadLetter:
        # In log order: items refused over several attempts (busy, then for good) come in the
        # order they were refused.
        entries = sorted(entries, key=lambda entry: entry.seq)
        return NewDeadLetter(
            export_id=self.export_id,
            created_at=now,
            first_seq=entries[0].seq,
            last_seq=entries[-1].seq,
            sessions=[(e.tenant_id, e.user_session_id, e.start_time) for e in entries],
            content_type=self.config.content_type,
            body=bulk_body(entries, self.config.send_direct),
            reason=reason,
            attempts=attempts,
        )

    def _alerts(self, result: BulkResult) -> tuple[NewAlert, ...]:
        """What a bulk that was not delivered whole raises (kept with its dead letters, at once)."""
        alerts = []
        if result.unsent:
            outcome = result.failure()
            kind = self.alert_kind("token" if outcome.last.token_failure else "delivery")
            alerts.append(NewAlert(kind, outcome.alert_title, self._where(_alert_message(outcome))))
        if result.rejected:
            first = result.rejected[0].item
            title = f"Request failed: {rejection(result.rejected)}"
            message = f"Kept as dead letters, one per kind of rejection; the first: {first.describe()}"
            alerts.append(NewAlert(self.alert_kind("delivery"), title, self._where(message)))
        return tuple(alerts)

    def alert_kind(self, kind: str) -> str:
        return alert_kind(kind, self.claim.shard, self.claim.shards)

    async def _closes(self, now: int) -> tuple[str, ...]:
        """The open alerts a success closes: after a failure at once, else now and then (retention
        or another process may have raised one meanwhile)."""
        if not self._alerting and now - self._alerts_checked_at < ALERT_CHECK_MS:
            return ()
        self._alerts_checked_at = now
        shard, shards = self.claim.shard, self.claim.shards
        return tuple(
            a.kind
            for a in await self.store.list_alerts(open_only=True)
            if a.export_id == self.export_id and closed_by_success(a.kind, shard, shards, SUCCESS_CLOSES)
        )

    def _where(self, message: str) -> str:
        return message if self.claim.shards == 1 else f"{message} ({_shard_name(self.claim)})"

    def _count(self, result: BulkResult, decision: BulkDecision) -> None:
        labels = self.metrics
        labels.sessions.labels(self.export_id).inc(decision.delivered)
        labels.bytes.labels(self.export_id).inc(result.delivered_bytes)
        labels.failed.labels(self.export_id).inc(decision.failed)
        labels.retried.labels(self.export_id).inc(decision.retried)
        outcome = (
            "delivered" if result.complete else "partly_delivered" if result.delivered else "dead_lettered"
        )
        labels.bulks.labels(self.export_id, outcome).inc()

    def _observe(self, attempt: Attempt) -> None:
        self.metrics.attempt_seconds.labels(self.export_id).observe(attempt.duration_ms / 1000)
        result = "ok" if attempt.error is None else "timeout" if attempt.timed_out else "error"
        self.metrics.attempts.labels(self.export_id, result).inc()


# What a delivery shows to be over: the endpoint refusing bulks or tokens (ENDPOINT_ALERTS); for
# the exporter's own success, also its runs failing, and sessions expiring unexported.
ENDPOINT_ALERTS = ("delivery", "token")
SUCCESS_CLOSES = (*ENDPOINT_ALERTS, "retention", "exporter", "zone")


def alert_kind(kind: str, shard: int, shards: int) -> str:
    """Each shard alerts on its own: one shard's success must not close another's alert."""
    return kind if shards == 1 else f"{kind}:shard-{shard}"


def closed_by_success(kind: str, shard: int, shards: int, bases: tuple[str, ...]) -> bool:
    """Whether a success of ``shard`` closes an alert of ``kind`` (of one of ``bases``): its own
    shard's; the export's own (raised before it was split, by the supervisor when it refused to
    start it, or by retention); those of shards it no longer has."""
    base, _, of_shard = kind.partition(":shard-")
    if base not in bases:
        return False
    if not of_shard:
        return True
    number = int(of_shard) if of_shard.isdigit() else -1
    return number == shard or number >= shards


def _settled_before(batcher: Batcher, position: int) -> int:
    """Everything before the first pending session is decided once the bulks before it are."""
    return batcher.pending[0].seq - 1 if batcher.pending else position


def _settled_positions(bulks: list[Bulk], batcher: Batcher, position: int) -> list[int]:
    """Where the cursor may move once each of the bulks of one offer is decided: a bulk that
    another follows, up to just before that one's first session (not past it while it is sent)."""
    if not bulks:
        return []
    return [following.first_seq - 1 for following in bulks[1:]] + [_settled_before(batcher, position)]


def _shard_name(claim: Claim) -> str:
    return f"shard {claim.shard} of {claim.shards}" if claim.shards > 1 else "exporter"


SHOWN_ATTEMPTS = 6  # of a bulk split many times over, the first and the last few attempts


def _alert_message(outcome: Outcome) -> str:
    attempts = outcome.attempts
    tries = [f"#{a.number}: {a.error or a.status}" for a in attempts]
    if len(tries) > SHOWN_ATTEMPTS:
        half = SHOWN_ATTEMPTS // 2
        tries = [*tries[:half], f"{len(tries) - 2 * half} more", *tries[-half:]]
    return f"The bulk was kept as a dead letter after {len(attempts)} attempt(s) ({'; '.join(tries)})."
