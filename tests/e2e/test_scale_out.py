"""Scale-out on PostgreSQL, as deployed: 3 ingesting processes and 3 `sessionexport worker`
processes share one database; one export (in 3 shards) goes to an HTTPS receiver (`sessionexport
receive`, its own process). Workers are killed with SIGKILL at random moments and restarted.

Every one of the 100,000 sessions arrives; none is skipped; the only duplicates are sessions of
the bulks a killed worker had in flight; and a killed worker's shards are exported again by
another worker within the lease bound.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest

from sessionexport.clock import now_ms
from sessionexport.generate.sessions import GeneratorOptions, generate_sessions
from sessionexport.receiver.store import DATABASE_FILE as RECEIVED_FILE
from sessionexport.settings.objects import NewObject, SettingsService
from sessionexport.settings.schemas import EXPORT_SCHEMA
from sessionexport.settings.secrets import load_secret_box, new_key
from sessionexport.store import create_store
from tests.support.engine import export_value
from tests.support.postgres import fresh_schema
from tests.support.processes import wait_for
from tests.support.receiver_process import ReceiverProcess

CLI = [sys.executable, "-m", "sessionexport"]
SESSIONS = 100_000
INGESTERS = WORKERS = SHARDS = 3
BULK = 500  # flushMaxSessions
LEASE_SECONDS = 3.0
# A lease expires LEASE_SECONDS after its last renewal at most; the takers notice at their next
# heartbeat (a third of the lease later) and claim it.
TAKEOVER_BOUND = LEASE_SECONDS + LEASE_SECONDS / 3
# Room for a loaded machine (2 shared cores run 3 workers, 3 ingesters, a receiver, PostgreSQL and
# this loop); a takeover that misses the lease's expiry still waits longer than this.
TAKEOVER_MARGIN = 6.0
KILLS = 5
# Small sessions (a few fields of generated ones): the test is about distribution, not bytes.
FIELDS = ("tenantId", "userSessionId", "startTime", "endTime", "duration", "userType", "applicationType")


@pytest.fixture
def url(postgres_url: str) -> Iterator[str]:
    with fresh_schema(postgres_url) as schema_url:
        yield schema_url


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[ReceiverProcess]:
    process = ReceiverProcess(tmp_path / "receiver").start()
    yield process
    process.stop()


@dataclass
class Worker:
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class Takeover:
    """A killed worker's shard, and when it was killed."""

    killed_at: float
    victim: int  # pid
    shard: int
    seconds: float | None = None  # until another worker held the shard's lease


@dataclass
class Cluster:
    url: str
    folder: Path
    env: dict[str, str]
    ca_file: Path
    workers: list[Worker] = field(default_factory=list)
    started: int = 0

    def start_worker(self) -> Worker:
        self.started += 1
        log = (self.folder / f"worker-{self.started}.log").open("wb")
        command = [*CLI, "worker", "--database-url", self.url, "--data-dir", str(self.folder / "data")]
        command += ["--ca-bundle", str(self.ca_file), "--lease-seconds", str(LEASE_SECONDS)]
        worker = Worker(subprocess.Popen(command, env=self.env, stdout=log, stderr=log))
        self.workers.append(worker)
        return worker

    def kill(self, worker: Worker) -> None:
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait(10)
        self.workers.remove(worker)

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.process.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.process.wait(15)
            except subprocess.TimeoutExpired:
                worker.process.kill()


# -- the database, as the test sees it ----------------------------------------------------------------
def leases(url: str, export_id: str) -> dict[int, str]:
    """Live leases of the export: shard -> owner (host/pid/random)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT shard, owner FROM export_leases WHERE export_id = %s"
            " AND expires_at > (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
            (export_id,),
        ).fetchall()
    return dict(rows)


def positions(url: str, export_id: str) -> dict[int, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT shard, position FROM export_cursors WHERE export_id = %s", (export_id,)
        ).fetchall()
    return dict(rows)


def log_end(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*), coalesce(max(seq), 0) FROM sessions").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def pid_of(owner: str) -> int:
    return int(owner.split("/")[-2])


# -- the receiver -------------------------------------------------------------------------------------
def received_sessions(receiver: ReceiverProcess) -> int:
    response = httpx.get(f"{receiver.base}/received/counts", verify=receiver.verify, timeout=10)
    return int(response.json()["sessions"])


def received(receiver: ReceiverProcess) -> tuple[set[str], int]:
    """(identities stored, sessions received again: duplicates), from the receiver's database."""
    with sqlite3.connect(f"file:{receiver.data_dir / RECEIVED_FILE}?mode=ro", uri=True) as conn:
        keys = {key for (key,) in conn.execute("SELECT key FROM documents WHERE kind = 'session'")}
        (duplicates,) = conn.execute("SELECT coalesce(sum(duplicates), 0) FROM requests").fetchone()
    return keys, int(duplicates)


# -- set-up ---------------------------------------------------------------------------------------------
def write_sessions(folder: Path) -> tuple[list[Path], set[str]]:
    """INGESTERS files of small sessions; the identities (the receiver's keys) of them all."""
    options = GeneratorOptions(kind="mobile", actions=(1, 1), end_ms=1_760_000_000_000)
    files, keys = [], set()
    for n in range(INGESTERS):
        path = folder / f"sessions-{n}.ndjson"
        with path.open("wb") as out:
            for doc in generate_sessions(
                SESSIONS // INGESTERS + (n < SESSIONS % INGESTERS), 100 + n, options
            ):
                doc["userSessionId"] = f"{n}-{doc['userSessionId']}"  # unique across the files
                out.write(orjson.dumps({k: doc[k] for k in FIELDS}) + b"\n")
                keys.add(f"{doc['tenantId']}-{doc['userSessionId']}-{doc['startTime']}")
        files.append(path)
    return files, keys


def create_export(url: str, folder: Path, secret_key: str, endpoint: str) -> str:
    async def create() -> str:
        store = create_store(folder, url)
        await store.open()
        try:
            settings = SettingsService(store, load_secret_box(folder, secret_key))
            tuning = {"shards": SHARDS, "flushMaxSessions": BULK, "flushIntervalSeconds": 0.5}
            value = export_value(endpoint, tuning)
            result = await settings.create(NewObject(EXPORT_SCHEMA, "environment", value), "test", now_ms())
            assert result.ok and result.object_id is not None, result
            return result.object_id
        finally:
            await store.close()

    return asyncio.run(create())


# -- chaos ----------------------------------------------------------------------------------------------
class Chaos:
    """Kills a lease-holding worker at random moments, restarts it, and times the takeovers."""

    def __init__(self, cluster: Cluster, export_id: str, seed: int) -> None:
        self.cluster, self.export_id = cluster, export_id
        self.rng = random.Random(seed)
        self.next_kill = time.monotonic() + self.rng.uniform(1.0, 2.5)
        self.restarts: list[float] = []
        self.takeovers: list[Takeover] = []
        self.kills = 0

    @property
    def interrupted(self) -> int:
        """Shards whose worker was killed (with up to two bulks of each in flight)."""
        return len(self.takeovers)

    def step(self) -> None:
        now = time.monotonic()
        if self.kills < KILLS and now >= self.next_kill:
            self.kill_a_holder()
        while self.restarts and self.restarts[0] <= now:
            self.restarts.pop(0)
            self.cluster.start_worker()
        self.time_takeovers(now)

    def kill_a_holder(self) -> None:
        held = leases(self.cluster.url, self.export_id)
        holders = [w for w in self.cluster.workers if w.pid in {pid_of(o) for o in held.values()}]
        if not holders:
            return
        victim = self.rng.choice(holders)
        self.cluster.kill(victim)
        self.kills += 1
        killed_at = time.monotonic()
        for shard, owner in held.items():
            if pid_of(owner) == victim.pid:
                self.takeovers.append(Takeover(killed_at, victim.pid, shard))
        self.restarts.append(killed_at + self.rng.uniform(0.2, 1.0))
        self.next_kill = killed_at + self.rng.uniform(1.5, 3.0)

    def time_takeovers(self, now: float) -> None:
        """A takeover is timed when another worker holds the shard's lease. (That it then goes on
        from the durable cursor is what the delivery checks at the end show.)"""
        pending = [t for t in self.takeovers if t.seconds is None]
        if not pending:
            return
        held = leases(self.cluster.url, self.export_id)
        for takeover in pending:
            owner = held.get(takeover.shard)
            if owner is not None and pid_of(owner) != takeover.victim:
                takeover.seconds = now - takeover.killed_at


def test_workers_killed_at_random_lose_nothing_and_hand_over_within_the_lease(
    tmp_path: Path, url: str, receiver: ReceiverProcess
) -> None:
    secret_key = new_key()
    env = {**os.environ, "SESSIONEXPORT_SECRET_KEY": secret_key}
    cluster = Cluster(url, tmp_path, env, receiver.ca_file)
    files, keys = write_sessions(tmp_path)
    assert len(keys) == SESSIONS
    try:
        for _ in range(WORKERS):
            cluster.start_worker()
        export_id = create_export(url, tmp_path, secret_key, receiver.url)
        wait_for(lambda: len(set(leases(url, export_id).values())) == WORKERS, "a shard per worker", 30)
        wait_for(lambda: len(positions(url, export_id)) == SHARDS, "the shards' cursors", 10)
        ingesters = [
            subprocess.Popen([*CLI, "ingest", str(f), "--database-url", url], env=env, stderr=subprocess.PIPE)
            for f in files
        ]
        chaos = Chaos(cluster, export_id, seed=20)
        deadline = time.monotonic() + 100
        while received_sessions(receiver) < SESSIONS or any(i.poll() is None for i in ingesters):
            assert time.monotonic() < deadline, f"{received_sessions(receiver)} of {SESSIONS} arrived"
            chaos.step()
            time.sleep(0.05)
        for ingester in ingesters:
            assert ingester.wait() == 0, ingester.stderr.read() if ingester.stderr else ""
        count, last_seq = log_end(url)
        assert count == SESSIONS
        # Every shard's cursor reaches the end of the log: none stays behind a session it skipped.
        wait_for(lambda: min(positions(url, export_id).values()) == last_seq, "every cursor at the end", 15)
    finally:
        cluster.stop_all()

    stored, duplicates = received(receiver)
    assert stored == keys  # every session delivered, nothing else
    # A killed worker re-sends nothing itself; its shards' next holders send again at most the
    # bulks it had in flight (one being sent, one delivered but not yet recorded, per shard).
    assert chaos.kills >= 2 and chaos.takeovers, f"{chaos.kills} kill(s): too few to test anything"
    assert duplicates <= chaos.interrupted * 2 * BULK, (
        f"{duplicates} duplicates for {chaos.interrupted} shards"
    )
    timed = [t.seconds for t in chaos.takeovers if t.seconds is not None]
    assert timed, "no takeover could be timed (the backlog ran out)"
    assert max(timed) <= TAKEOVER_BOUND + TAKEOVER_MARGIN, f"takeovers took {sorted(timed)} s"
