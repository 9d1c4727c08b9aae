"""Several exporting workers on one PostgreSQL database (each with a store of its own, as separate
processes have): every shard of an export is exported by one of them at a time, the shards spread
evenly, a worker that stops hands its shards over, and one that lost a lease stops exporting at
once and takes the shard back only once it is free again."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from sessionexport.clock import now_ms
from sessionexport.export.metrics import ExportMetrics
from sessionexport.export.notifier import LogNotifier
from sessionexport.export.supervisor import STALE_WORKER_ALERT_SECONDS, ExportSupervisor
from sessionexport.ingest.documents import parse_ndjson
from sessionexport.settings.objects import NewObject, SettingsService
from sessionexport.settings.schemas import EXPORT_SCHEMA
from sessionexport.settings.secrets import SecretBox, load_secret_box, new_key
from sessionexport.store import Store, create_store
from tests.support.engine import export_value, sessions, until
from tests.support.postgres import fresh_schema
from tests.support.receiver import Receiver, Tls

LEASE_SECONDS = 1.5  # heartbeats every 0.5 s: quick takeovers, for the tests of who holds what
# For the tests that count every session once: a heartbeat late by a second on a loaded machine
# would lose a 1.5 s lease, and another worker send its shard's bulks again (at least once).
STEADY_LEASE_SECONDS = 6.0


@dataclass
class Worker:
    store: Store
    supervisor: ExportSupervisor
    task: asyncio.Task[None]

    def held(self, export_id: str) -> int:
        return sum(1 for unit in self.supervisor._held if unit[0] == export_id)

    async def stop(self) -> None:
        if not self.task.done():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
def url(postgres_url: str) -> Iterator[str]:
    with fresh_schema(postgres_url) as schema_url:
        yield schema_url


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    r = Receiver(Tls.create(tmp_path)).start()
    yield r
    r.stop()


@pytest.fixture
async def stack(url: str, receiver: Receiver) -> AsyncIterator[AsyncExitStack]:
    """Workers and stores, stopped and closed before their schema is dropped and their receiver stops."""
    async with AsyncExitStack() as exits:
        yield exits


async def start_worker(
    stack: AsyncExitStack,
    url: str,
    tmp_path: Path,
    receiver: Receiver,
    key: str | None = None,
    allow_http_loopback: bool = False,
    lease_seconds: float = LEASE_SECONDS,
) -> Worker:
    store = create_store(tmp_path, url)
    await store.open()
    stack.push_async_callback(store.close)
    settings = SettingsService(store, load_secret_box(tmp_path, key))
    supervisor = ExportSupervisor(
        store,
        settings,
        LogNotifier(),
        ExportMetrics(),
        ca_bundle=receiver.tls.ca_file,
        lease_seconds=lease_seconds,
        allow_http_loopback=allow_http_loopback,
    )
    worker = Worker(store, supervisor, asyncio.create_task(supervisor.run()))
    stack.push_async_callback(worker.stop)  # before the store closes
    return worker


async def create_export(store: Store, tmp_path: Path, receiver: Receiver, shards: int) -> str:
    settings = SettingsService(store, load_secret_box(tmp_path, None))
    value = export_value(receiver.url, {"shards": shards, "flushMaxSessions": 20})
    result = await settings.create(NewObject(EXPORT_SCHEMA, "environment", value), "test", now_ms())
    assert result.ok and result.object_id is not None, result
    return result.object_id


async def ingest(store: Store, count: int, seed: int) -> list[bytes]:
    lines = sessions(count, seed=seed, kind="mobile", actions=(1, 1))
    await store.append_sessions(parse_ndjson(b"\n".join(lines)), now_ms())
    return lines


async def test_shards_spread_evenly_and_every_session_arrives_once(
    stack: AsyncExitStack, url: str, tmp_path: Path, receiver: Receiver
) -> None:
    first = await start_worker(stack, url, tmp_path, receiver, lease_seconds=STEADY_LEASE_SECONDS)
    second = await start_worker(stack, url, tmp_path, receiver, lease_seconds=STEADY_LEASE_SECONDS)
    export_id = await create_export(first.store, tmp_path, receiver, shards=4)
    await until(lambda: first.held(export_id) == second.held(export_id) == 2, "two shards each")
    lines = await ingest(first.store, 200, seed=1)
    await until(lambda: len(receiver.sessions()) >= 200, "200 sessions delivered")
    await asyncio.sleep(0.5)  # anything sent twice would have arrived by now
    assert sorted(receiver.sessions()) == sorted(lines)
    cursor = await first.store.get_cursor(export_id)
    assert cursor is not None and cursor.delivered == 200 and cursor.shards == 4


async def test_a_stopping_worker_hands_its_shards_over(
    stack: AsyncExitStack, url: str, tmp_path: Path, receiver: Receiver
) -> None:
    first = await start_worker(stack, url, tmp_path, receiver, lease_seconds=STEADY_LEASE_SECONDS)
    second = await start_worker(stack, url, tmp_path, receiver, lease_seconds=STEADY_LEASE_SECONDS)
    export_id = await create_export(first.store, tmp_path, receiver, shards=4)
    await until(lambda: first.held(export_id) == second.held(export_id) == 2, "two shards each")
    await second.stop()  # gives its leases up: no need to wait for them to expire
    heartbeats = (
        2 * STEADY_LEASE_SECONDS / 3
    )  # the first sees them free at its next, takes them at the one after
    await until(lambda: first.held(export_id) == 4, "all four shards", within=heartbeats + 2)
    lines = await ingest(first.store, 100, seed=2)
    await until(lambda: len(receiver.sessions()) >= 100, "100 sessions delivered")
    await asyncio.sleep(0.5)
    assert sorted(receiver.sessions()) == sorted(lines)


async def test_a_worker_whose_key_cannot_read_an_export_stands_aside(
    stack: AsyncExitStack, url: str, tmp_path: Path, receiver: Receiver
) -> None:
    """Counted as a worker, it would be handed shards it never takes: they would stall while the
    status said running. It takes no share, says why, and the others export everything."""
    first = await start_worker(stack, url, tmp_path, receiver, lease_seconds=STEADY_LEASE_SECONDS)
    settings = SettingsService(first.store, load_secret_box(tmp_path, None))
    basic = {"active": True, "authType": "basic", "basicAuth": {"username": "u", "password": "pw"}}
    value = export_value(receiver.url, {"shards": 4, "flushMaxSessions": 20}, authentication=basic)
    created = await settings.create(NewObject(EXPORT_SCHEMA, "environment", value), "test", now_ms())
    assert created.object_id is not None
    export_id = created.object_id
    await until(lambda: first.held(export_id) == 4, "all four shards")
    stranger = await start_worker(stack, url, tmp_path, receiver, key=new_key())  # a stale key
    await asyncio.sleep(3 * LEASE_SECONDS)  # reconciled several times over
    assert (first.held(export_id), stranger.held(export_id)) == (4, 0)
    assert stranger.supervisor.owner not in {
        w for w in (await first.store.heartbeat(first.supervisor.owner, 5_000)).workers
    }
    lines = await ingest(first.store, 40, seed=5)
    await until(lambda: len(receiver.sessions()) >= 40, "every session delivered by the worker that can")
    assert sorted(receiver.sessions()) == sorted(lines)
    await asyncio.sleep(3 * LEASE_SECONDS)  # the other worker's successes do not close its alert

    async def open_alerts() -> list[str]:
        return [a.title for a in await first.store.list_alerts(open_only=True) if a.export_id == export_id]

    assert await open_alerts() == ["Exporter failed: its secrets cannot be decrypted with a worker's key"]
    await stranger.stop()  # a worker gone: nothing left to fix
    assert await open_alerts() == []


async def test_a_worker_that_may_not_send_to_an_export_s_endpoint_stands_aside(
    stack: AsyncExitStack, url: str, tmp_path: Path, receiver: Receiver
) -> None:
    """An http:// endpoint stored while loopback HTTP was allowed, read by a worker that does not
    allow it: it takes no shard (holding one would keep it from the worker that can send there)."""
    first = await start_worker(stack, url, tmp_path, receiver, allow_http_loopback=True)
    settings = SettingsService(first.store, load_secret_box(tmp_path, None), allow_http_loopback=True)
    value = export_value("http://127.0.0.1:9/events", {"shards": 4})
    created = await settings.create(NewObject(EXPORT_SCHEMA, "environment", value), "test", now_ms())
    assert created.ok and created.object_id is not None, created
    export_id = created.object_id
    await until(lambda: first.held(export_id) == 4, "all four shards")
    strict = await start_worker(stack, url, tmp_path, receiver)
    await asyncio.sleep(3 * LEASE_SECONDS)
    assert (first.held(export_id), strict.held(export_id)) == (4, 0)
    [alert] = [a for a in await first.store.list_alerts(open_only=True) if a.kind.startswith("worker:")]
    assert alert.title.startswith("Request failed: http:// URL refused") and alert.occurrences == 1
    assert strict.supervisor.owner in alert.message and "https://" in alert.message


async def test_a_paused_export_whose_secrets_a_worker_cannot_read_holds_nothing_up(
    stack: AsyncExitStack, url: str, tmp_path: Path, receiver: Receiver
) -> None:
    """Its secrets are not needed until it is resumed: the worker exports the others."""
    worker = await start_worker(stack, url, tmp_path, receiver)
    elsewhere = SettingsService(worker.store, SecretBox([new_key().encode()]))  # a key retired since
    basic = {"active": True, "authType": "basic", "basicAuth": {"username": "u", "password": "pw"}}
    paused = export_value(
        receiver.url, authentication=basic, endpointDefinition={"enableUserSessionExport": False}
    )
    assert (await elsewhere.create(NewObject(EXPORT_SCHEMA, "environment", paused), "test", now_ms())).ok
    export_id = await create_export(worker.store, tmp_path, receiver, shards=2)
    await until(lambda: worker.held(export_id) == 2, "the readable export's two shards")


async def test_a_lone_worker_standing_aside_says_so_on_the_export_it_holds_back(
    stack: AsyncExitStack, url: str, tmp_path: Path, receiver: Receiver
) -> None:
    """One process, and an enabled export whose secrets it cannot read: the export it could run
    waits too, and its alert says why (it sat stopped without a word); once the unreadable one is
    paused, it runs, and the alert closes."""
    worker = await start_worker(stack, url, tmp_path, receiver)
    elsewhere = SettingsService(worker.store, SecretBox([new_key().encode()]))  # a key retired since
    basic = {"active": True, "authType": "basic", "basicAuth": {"username": "u", "password": "pw"}}
    unreadable = await elsewhere.create(
        NewObject(EXPORT_SCHEMA, "environment", export_value(receiver.url, authentication=basic)),
        "test",
        now_ms(),
    )
    assert unreadable.object_id is not None
    export_id = await create_export(worker.store, tmp_path, receiver, shards=1)

    async def alerts() -> dict[str, str]:
        return {a.export_id: a.title for a in await worker.store.list_alerts(open_only=True)}

    async def both_said() -> bool:
        return len(await alerts()) == 2

    await until(both_said, "an alert on each export")
    said = await alerts()
    assert said[export_id] == "Exporter stopped: its worker cannot run another export"
    assert (
        said[unreadable.object_id] == "Exporter failed: its secrets cannot be decrypted with a worker's key"
    )
    assert worker.held(export_id) == 0
    paused = export_value(
        receiver.url, authentication=basic, endpointDefinition={"enableUserSessionExport": False}
    )
    assert (await elsewhere.update(unreadable.object_id, paused, None, "test", now_ms())).ok
    worker.supervisor.poke()
    await until(lambda: worker.held(export_id) == 1, "the readable export runs")

    async def none_said() -> bool:
        return await alerts() == {}

    await until(none_said, "the alerts closed")


async def execute(url: str, statement: str) -> None:
    """Run a statement from another connection, off the event loop: the worker under test may hold
    the row's lock in a transaction that needs the loop to finish (blocking the loop would deadlock)."""

    def run() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(statement)

    await asyncio.to_thread(run)


async def test_a_worker_that_lost_its_lease_stops_at_once(
    stack: AsyncExitStack, url: str, tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    worker = await start_worker(stack, url, tmp_path, receiver)
    export_id = await create_export(worker.store, tmp_path, receiver, shards=1)
    await until(lambda: worker.supervisor.is_running(export_id) and worker.held(export_id) == 1, "running")
    assert await worker.store.get_cursor(export_id) is not None  # placed when the export was first seen
    # another worker took it over meanwhile
    await execute(url, "UPDATE export_leases SET owner = 'other', expires_at = expires_at + 60000")
    await until(lambda: worker.held(export_id) == 0, "lease seen lost", within=1)
    assert [r.levelname for r in caplog.records if "lease lost to other" in r.getMessage()] == ["WARNING"]
    await asyncio.sleep(0.2)
    assert not any(unit[0] == export_id for unit in worker.supervisor._running)
    lines = await ingest(worker.store, 30, seed=3)
    await asyncio.sleep(1.0)
    assert receiver.sessions() == []  # "other" has the shard: this worker sends nothing
    await execute(url, "UPDATE export_leases SET expires_at = 0")  # "other" stopped: its lease expired
    await until(lambda: len(receiver.sessions()) >= 30, "taken back over and delivered")
    assert Counter(receiver.sessions()) == Counter(lines)


async def test_a_lease_revoked_is_no_warning(
    stack: AsyncExitStack, url: str, tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Moving an export's cursor (or deleting it) revokes its leases: an operator's doing, not a fault."""
    worker = await start_worker(stack, url, tmp_path, receiver)
    export_id = await create_export(worker.store, tmp_path, receiver, shards=1)
    await until(lambda: worker.supervisor.is_running(export_id) and worker.held(export_id) == 1, "running")
    caplog.set_level(logging.INFO, logger="sessionexport.export.supervisor")
    await execute(url, "DELETE FROM export_leases")  # as another process's move does
    await until(lambda: any("lease revoked" in r.getMessage() for r in caplog.records), "revocation seen")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_the_alert_of_a_worker_killed_while_standing_aside_is_closed_in_time(
    stack: AsyncExitStack, url: str, tmp_path: Path, receiver: Receiver
) -> None:
    """Raised again every minute while it stands aside; one left unrenewed for long is closed by a
    worker that runs, one still renewed is not."""
    before = create_store(
        tmp_path, url
    )  # in place before the worker's first look (its checks are minutes apart)
    await before.open()
    stack.push_async_callback(before.close)
    export_id = await create_export(before, tmp_path, receiver, shards=1)
    long_ago = now_ms() - int(STALE_WORKER_ALERT_SECONDS * 1000) - 1000
    await before.raise_alert(export_id, "worker:killed/1/a", "Exporter failed: x", "m", long_ago)
    await before.raise_alert(export_id, "worker:aside/2/b", "Exporter failed: y", "m", now_ms())
    worker = await start_worker(stack, url, tmp_path, receiver)

    async def open_kinds() -> set[str]:
        return {a.kind for a in await worker.store.list_alerts(open_only=True)}

    await until(lambda: _lacks(open_kinds, "worker:killed/1/a"), "the stale alert closed")
    assert "worker:aside/2/b" in await open_kinds()


async def _lacks(kinds: Callable[[], Awaitable[set[str]]], kind: str) -> bool:
    return kind not in await kinds()
