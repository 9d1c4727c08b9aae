"""Where the cursor may move, and what a restart does: the exporter's guarantees that a session
is passed over only once its bulk is decided (real SQLite store, real HTTPS receiver)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from contextlib import AsyncExitStack

import pytest

from sessionexport.clock import now_ms
from sessionexport.export.exporter import Exporter
from sessionexport.export.tuning import ExportTuning
from sessionexport.store import Store, StoreError
from sessionexport.store.records import BulkDecision, Claim
from tests.integration.test_store_backends import session
from tests.support.engine import until
from tests.support.exporter import exporter_for, plain_config, run_in_background
from tests.support.receiver import STALL, Receiver, Tls

EXPORT = "decisions"


@pytest.fixture
def receiver(tls: Tls) -> Iterator[Receiver]:
    receiver = Receiver(tls).start()
    yield receiver
    receiver.stop()


async def position(store: Store) -> int:
    cursor = await store.get_cursor(EXPORT)
    return cursor.position if cursor is not None else -1


async def test_a_bulk_followed_by_another_moves_the_cursor_only_up_to_it(
    store: Store, tls: Tls, receiver: Receiver
) -> None:
    """A small session waits; a large one closes its bulk and goes alone: two bulks from one
    offer. Once the first is delivered, the cursor must not pass the second while it is sent."""
    small = session("small", body=b'{"s":"' + b"x" * 100 + b'"}')
    large = session("large", body=b'{"s":"' + b"x" * 2000 + b'"}')
    await store.append_sessions([small, large], received_at=1)
    [small_seq, large_seq] = [e.seq for e in await store.read_log(0, 10)]
    receiver.behaviour.stall_seconds = 6
    receiver.behaviour.script = deque([200, STALL])  # the large session's bulk is answered late
    tuning = ExportTuning(flushMaxBytes=1024, flushIntervalSeconds=60, timeoutSeconds=30, retries=0)
    async with AsyncExitStack() as stack:
        exporter = await exporter_for(stack, store, tls, plain_config(EXPORT, receiver, tuning))
        run_in_background(stack, asyncio.create_task(exporter.run(0)))
        await until(lambda: len(receiver.requests) == 2, "both bulks sent")
        await until(lambda: _at(store, small_seq), "the first bulk decided")
        assert receiver.requests[0].lines == [small.body]
        assert await position(store) == small_seq  # not large_seq: its bulk is still in flight
        await until(lambda: _at(store, large_seq), "the large session's bulk decided", within=15)


async def test_a_restart_after_a_failed_decision_skips_nothing(
    store: Store, tls: Tls, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decision of a failed bulk (its dead letter) cannot be written once: the exporter fails
    and runs again. It must not then decide what the failed run left in flight (that would move
    the cursor past the failed bulk, with no dead letter): it starts afresh from the cursor."""
    lines = [session(f"s{n}") for n in range(4)]
    await store.append_sessions(lines, received_at=1)
    seqs = [e.seq for e in await store.read_log(0, 10)]
    receiver.behaviour.delay_seconds = 0.2  # two bulks in flight at once
    receiver.behaviour.script = deque([503])  # the first bulk fails, every later request succeeds
    tuning = ExportTuning(flushMaxSessions=1, concurrency=2, retries=0, flushIntervalSeconds=0.05)
    record_bulk = store.record_bulk
    failures: list[int] = []

    async def fails_once(claim: Claim, at: int, decision: BulkDecision, now: int) -> list[int]:
        if decision.letters and not failures:
            failures.append(at)
            raise StoreError("database is locked")
        return await record_bulk(claim, at, decision, now)

    monkeypatch.setattr(store, "record_bulk", fails_once)
    async with AsyncExitStack() as stack:
        exporter = await exporter_for(stack, store, tls, plain_config(EXPORT, receiver, tuning))
        run_in_background(stack, asyncio.create_task(keep_running(exporter)))
        await until(lambda: _at(store, seqs[-1]), "every session decided")
    # The 503 goes to whichever of the two bulks in flight reaches the receiver first.
    assert len(failures) == 1 and failures[0] in seqs[:2]
    failed = seqs.index(failures[0])
    delivered = {line for r in receiver.requests if getattr(r, "answered", 0) == 200 for line in r.lines}
    letters = await store.count_dead_letters(EXPORT)
    assert lines[failed].body in delivered or letters == 1  # sent again after the restart, or kept
    assert {s.body for n, s in enumerate(lines) if n != failed} <= delivered


async def keep_running(exporter: Exporter) -> None:
    """As the supervisor does: the same exporter runs again after a failure."""
    while True:
        try:
            await exporter.run(0)
            return
        except StoreError:
            await asyncio.sleep(0.05)


async def _at(store: Store, seq: int) -> bool:
    return await position(store) >= seq


async def test_a_backlog_goes_out_in_full_bulks(store: Store, tls: Tls, receiver: Receiver) -> None:
    """Every session of a backlog has waited longer than the flush interval: the sessions already
    read fill the bulk (up to 1000) before it goes, rather than one bulk per read of the log."""
    await store.append_sessions([session(f"s{n}") for n in range(1200)], received_at=1)
    tuning = ExportTuning(flushIntervalSeconds=0.05)
    async with AsyncExitStack() as stack:
        exporter = await exporter_for(stack, store, tls, plain_config(EXPORT, receiver, tuning))
        run_in_background(stack, asyncio.create_task(exporter.run(0)))
        await until(lambda: sum(len(r.lines) for r in receiver.requests) == 1200, "the backlog sent")
    assert [len(r.lines) for r in receiver.requests] == [1000, 200]


async def test_a_clock_an_hour_behind_the_log_holds_no_bulk_for_an_hour(
    store: Store, tls: Tls, receiver: Receiver
) -> None:
    """Sessions joined the log by a host whose clock is ahead (or before this one was stepped
    back): they wait the flush interval, not the interval plus the difference."""
    await store.append_sessions([session("ahead")], received_at=now_ms())
    tuning = ExportTuning(flushIntervalSeconds=0.5, flushQuietSeconds=30)
    async with AsyncExitStack() as stack:
        exporter = await exporter_for(stack, store, tls, plain_config(EXPORT, receiver, tuning))
        exporter.clock = lambda: now_ms() - 3_600_000
        run_in_background(stack, asyncio.create_task(exporter.run(0)))
        await until(lambda: len(receiver.requests) == 1, "the session sent after its flush interval")


async def test_a_graceful_stop_sends_no_bulk_that_waits_for_a_free_request(
    store: Store, tls: Tls, receiver: Receiver
) -> None:
    """The next bulk is batched while one is sent, and waits ready for the request to end. A stop
    asked for meanwhile lets the bulk in flight be decided and sends nothing more: the sessions
    of the waiting bulk stay behind the cursor, for whoever exports the shard next."""
    await store.append_sessions([session(f"s{n}") for n in range(3)], received_at=1)
    first = (await store.read_log(0, 10))[0].seq
    receiver.behaviour.delay_seconds = 1.0
    tuning = ExportTuning(flushMaxSessions=1, concurrency=1, flushIntervalSeconds=0.05)
    async with AsyncExitStack() as stack:
        exporter = await exporter_for(stack, store, tls, plain_config(EXPORT, receiver, tuning))
        run = asyncio.create_task(exporter.run(0))
        run_in_background(stack, run)
        await until(lambda: len(exporter._sending) == 1, "the first bulk under way")
        await asyncio.sleep(0.2)  # and the second batched, waiting for the request to end
        exporter.stop_gracefully()
        await asyncio.wait_for(run, 10)
        await asyncio.sleep(1.5)  # anything sent after the stop would have arrived by now
    assert [r.lines for r in receiver.requests] == [[session("s0").body]]
    assert await position(store) == first
