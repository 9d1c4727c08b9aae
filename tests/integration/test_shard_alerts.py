"""Alerts of an export split in shards: each shard alerts on its own, so that one shard's successes
never close the alert of another shard that keeps failing (real SQLite store, real HTTPS receivers)."""

from __future__ import annotations

import asyncio
from collections import deque
from contextlib import AsyncExitStack

import pytest

import sessionexport.export.exporter as exporter_module
from sessionexport.export.tuning import ExportTuning
from sessionexport.ingest.documents import parse_ndjson
from sessionexport.store import Store
from sessionexport.store.records import Alert
from tests.support.engine import sessions, until
from tests.support.exporter import exporter_for, plain_config, run_in_background
from tests.support.receiver import Receiver, Tls

EXPORT = "split-export"
TUNING = ExportTuning(flushMaxSessions=1, retries=0, flushIntervalSeconds=0.05)


async def run_shard(
    stack: AsyncExitStack, store: Store, tls: Tls, receiver: Receiver, shard: int, shards: int
) -> None:
    """Export shard ``shard`` to ``receiver`` until the test ends (each shard its own receiver, so
    that one can fail alone)."""
    exporter = await exporter_for(stack, store, tls, plain_config(EXPORT, receiver, TUNING), shard, shards)
    run_in_background(stack, asyncio.create_task(exporter.run(0)))


async def open_alerts(store: Store) -> list[Alert]:
    return await store.list_alerts(open_only=True)


async def test_one_shards_success_leaves_another_shards_alert_open(store: Store, tls: Tls) -> None:
    healthy, failing = Receiver(tls).start(), Receiver(tls).start()
    failing.behaviour.script = deque([503] * 1000)
    try:
        async with AsyncExitStack() as stack:
            await run_shard(stack, store, tls, failing, 0, 2)
            await run_shard(stack, store, tls, healthy, 1, 2)
            await check_alerts_per_shard(store, healthy, failing)
    finally:
        healthy.stop()
        failing.stop()


async def check_alerts_per_shard(store: Store, healthy: Receiver, failing: Receiver) -> None:
    await store.append_sessions(parse_ndjson(b"\n".join(sessions(6, seed=1))), received_at=1)
    await until(lambda: len(healthy.requests) >= 3 and len(failing.requests) >= 3, "both shards sent")
    await until(lambda: _count_letters(store, 3), "shard 0's bulks dead-lettered")
    [alert] = await open_alerts(store)
    assert alert.kind == "delivery:shard-0"
    assert alert.title == "Request failed: HTTP 503"
    assert "shard 0 of 2" in alert.message

    # more successes of shard 1 while shard 0 still fails: its alert stays open
    await store.append_sessions(parse_ndjson(b"\n".join(sessions(6, seed=2))), received_at=2)
    await until(lambda: len(healthy.requests) >= 6 and len(failing.requests) >= 6, "more sent")
    await until(lambda: _count_letters(store, 6), "shard 0's new bulks dead-lettered")
    [still] = await open_alerts(store)
    assert (still.id, still.kind) == (alert.id, "delivery:shard-0") and still.occurrences >= 2

    # shard 0 recovers: its own success closes its alert
    failing.behaviour.script.clear()
    await store.append_sessions(parse_ndjson(b"\n".join(sessions(6, seed=3))), received_at=3)
    await until(lambda: _no_open_alerts(store), "shard 0's alert closed")


async def test_a_shards_success_closes_the_exports_own_alert(store: Store, tls: Tls) -> None:
    """An alert of the whole export (the supervisor's refusal, or from before the split) is closed
    by whichever shard delivers first."""
    healthy = Receiver(tls).start()
    try:
        await store.raise_alert(EXPORT, "delivery", "Request failed: HTTP 500", "before the split", now=1)
        async with AsyncExitStack() as stack:
            await run_shard(stack, store, tls, healthy, 1, 2)
            await store.append_sessions(parse_ndjson(b"\n".join(sessions(4, seed=4))), received_at=1)
            await until(lambda: _no_open_alerts(store), "the export's alert closed")
    finally:
        healthy.stop()


async def _count_letters(store: Store, count: int) -> bool:
    return await store.count_dead_letters(EXPORT) >= count


async def _no_open_alerts(store: Store) -> bool:
    return await open_alerts(store) == []


async def test_a_success_closes_the_alerts_of_shards_the_export_no_longer_has(store: Store, tls: Tls) -> None:
    healthy = Receiver(tls).start()
    try:
        for kind in ("delivery:shard-3", "token:shard-2", "delivery:shard-1"):  # when it had 4 shards
            await store.raise_alert(EXPORT, kind, "Request failed: HTTP 500", "before the re-split", now=1)
        async with AsyncExitStack() as stack:
            await run_shard(stack, store, tls, healthy, 1, 2)  # now 2 shards: this is shard 1
            await store.append_sessions(parse_ndjson(b"\n".join(sessions(4, seed=5))), received_at=1)
            await until(lambda: _count_open(store, 0), "the alerts of shards 1 (its own), 2 and 3 closed")
        await store.raise_alert(EXPORT, "delivery:shard-0", "Request failed: HTTP 500", "shard 0's", now=2)
        async with AsyncExitStack() as stack:
            await run_shard(stack, store, tls, healthy, 1, 2)
            await store.append_sessions(parse_ndjson(b"\n".join(sessions(4, seed=6))), received_at=2)
            await until(lambda: len(healthy.requests) >= 4, "shard 1 delivered again")
            await asyncio.sleep(0.3)
            assert [a.kind for a in await open_alerts(store)] == [
                "delivery:shard-0"
            ]  # not shard 1's to close
    finally:
        healthy.stop()


async def test_a_running_export_closes_an_alert_raised_elsewhere_at_its_next_success(
    store: Store, tls: Tls, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention raises its alert outside the exporter, which may be succeeding all along."""
    monkeypatch.setattr(exporter_module, "ALERT_CHECK_MS", 0)
    healthy = Receiver(tls).start()
    try:
        async with AsyncExitStack() as stack:
            await run_shard(stack, store, tls, healthy, 0, 1)
            await store.append_sessions(parse_ndjson(b"\n".join(sessions(2, seed=7))), received_at=1)
            await until(lambda: len(healthy.requests) >= 2, "delivering")
            await store.raise_alert(EXPORT, "retention", "3 session(s) expired", "before export", now=3)
            await store.append_sessions(parse_ndjson(b"\n".join(sessions(2, seed=8))), received_at=2)
            await until(lambda: _count_open(store, 0), "the retention alert closed by the next success")
    finally:
        healthy.stop()


async def _count_open(store: Store, count: int) -> bool:
    return len(await open_alerts(store)) == count
