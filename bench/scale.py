"""Scale-out: export throughput with 1, 2 and 4 worker processes on one PostgreSQL, network-bound.

The receiver (bench/_receiver.py in its own process, HTTPS on loopback) answers every request
100 ms late, as a distant endpoint does, and serves requests concurrently. One export, split in 8
shards (the ``shards`` knob), bulks of 50 sessions, one bulk in flight per shard. Each worker is a
real ``sessionexport worker`` process capped at 2 bulks in flight (``--max-in-flight 2``): the
capacity one worker brings, here set by the cap where in production it is set by the worker's core.
The workers share the shards through leases (fair share: 8, 4+4, 2+2+2+2).

For each worker count: a fresh schema, a backlog of 12,000 sessions per worker, the export
enabled once every worker is up, and the rate at which deliveries are recorded between 10% and 90%
of the backlog (leaving out the start and the tail). Printed: sessions/s and the ratio to linear
(workers x the 1-worker rate; target >= 0.8). Last, one worker without the cap, for scale: in the
network-bound case, shards are what sends in parallel; workers add the capacity to do so.

Usage: python bench/scale.py [--database-url URL] [--workers 1,2,4] [--per-worker N]
                             [--shards 8] [--cap 2] [--bulk 50] [--delay 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from export import CLI, https_receiver, shown, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.postgres import LOCAL_DATABASE_URL, fresh_schema

from sessionexport.clock import now_ms
from sessionexport.generate.sessions import GeneratorOptions, generate_lines
from sessionexport.ingest.documents import parse_ndjson
from sessionexport.settings.objects import NewObject, SettingsService
from sessionexport.settings.schemas import EXPORT_SCHEMA
from sessionexport.settings.secrets import load_secret_box, new_key
from sessionexport.store import Store, create_store

SMALL = GeneratorOptions(kind="mobile", actions=(1, 1))  # ~1.9 KB: the bench is about requests, not bytes


@dataclass(frozen=True)
class Setup:
    shards: int
    cap: int  # bulks in flight per worker process
    bulk: int  # flushMaxSessions
    delay: float  # the receiver's answer time
    endpoint: str
    ca_file: Path
    folder: Path
    secret_key: str


# -- one run ------------------------------------------------------------------------------------------
def run(setup: Setup, server_url: str, workers: int, sessions: int, cap: int | None = None) -> float:
    """Sessions/s delivered by ``workers`` worker processes, between 10% and 90% of the backlog."""
    with fresh_schema(server_url) as url:
        export_id = asyncio.run(prepare(setup, url, sessions))
        processes = [start_worker(setup, url, cap or setup.cap, n) for n in range(workers)]
        try:
            wait_until(lambda: live_workers(url) == workers, "workers registered")
            asyncio.run(enable(setup, url, export_id))
            return delivery_rate(url, sessions)
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                process.wait(30)


async def prepare(setup: Setup, url: str, sessions: int) -> str:
    """A backlog of ``sessions``, and the export (paused) with its cursor before all of them."""
    store = create_store(setup.folder, url)
    await store.open()
    try:
        for start in range(0, sessions, 1000):
            lines = generate_lines(min(1000, sessions - start), seed=start + 1, options=SMALL)
            await store.append_sessions(parse_ndjson(b"\n".join(lines)), now_ms() - 60_000)
        result = await settings(setup, store).create(
            NewObject(EXPORT_SCHEMA, "environment", export_value(setup, enabled=False)), "bench", now_ms()
        )
        assert result.ok and result.object_id is not None, result
        await store.move_cursor(result.object_id, 0, now_ms())
        return result.object_id
    finally:
        await store.close()


async def enable(setup: Setup, url: str, export_id: str) -> None:
    store = create_store(setup.folder, url)
    await store.open()
    try:
        result = await settings(setup, store).update(
            export_id, export_value(setup, enabled=True), None, "bench", now_ms()
        )
        assert result.ok, result
    finally:
        await store.close()


def settings(setup: Setup, store: Store) -> SettingsService:
    return SettingsService(store, load_secret_box(setup.folder, setup.secret_key))


def export_value(setup: Setup, *, enabled: bool) -> dict[str, Any]:
    tuning = f'{{"shards": {setup.shards}, "flushMaxSessions": {setup.bulk}, "flushIntervalSeconds": 0.2}}'
    return {
        "endpointDefinition": {"endpointUrl": setup.endpoint, "enableUserSessionExport": enabled},
        "exportBehavior": {"customConfiguration": tuning},
    }


def start_worker(setup: Setup, url: str, cap: int, n: int) -> subprocess.Popen[bytes]:
    log = (setup.folder / f"worker-{time.monotonic_ns()}-{n}.log").open("wb")
    where = [
        "--database-url",
        url,
        "--data-dir",
        str(setup.folder / "data"),
        "--ca-bundle",
        str(setup.ca_file),
    ]
    return subprocess.Popen(
        [*CLI, "worker", *where, "--max-in-flight", str(cap)],
        env={**os.environ, "SESSIONEXPORT_SECRET_KEY": setup.secret_key},
        stdout=log,
        stderr=log,
    )


# -- what the database says -------------------------------------------------------------------------
def live_workers(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM export_workers"
            " WHERE expires_at > (extract(epoch FROM clock_timestamp()) * 1000)::bigint"
        ).fetchone()
    return int(row[0]) if row else 0


def delivered(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT coalesce(sum(delivered), 0) FROM export_cursors").fetchone()
    return int(row[0]) if row else 0


def delivery_rate(url: str, sessions: int) -> float:
    low, high = int(sessions * 0.1), int(sessions * 0.9)
    samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + 600
    while not samples or samples[-1][1] < high:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {samples[-1][1] if samples else 0} of {sessions} delivered")
        samples.append((time.monotonic(), delivered(url)))
        time.sleep(0.1)
    start = next((t, n) for t, n in samples if n >= low)
    end = samples[-1]
    return (end[1] - start[1]) / (end[0] - start[0])


# -- all runs ---------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("SESSIONEXPORT_TEST_DATABASE_URL") or LOCAL_DATABASE_URL,
        help="PostgreSQL server (each run in a fresh schema of it)",
    )
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated")
    parser.add_argument("--per-worker", type=int, default=12_000, help="backlog per worker")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--cap", type=int, default=2, help="bulks in flight per worker (--max-in-flight)")
    parser.add_argument("--bulk", type=int, default=50, help="sessions per bulk (flushMaxSessions)")
    parser.add_argument("--delay", type=float, default=0.1, help="seconds the receiver takes to answer")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}")
    print(
        f"{shown(args.database_url)}; receiver answers after {args.delay * 1000:.0f} ms; one export in"
        f" {args.shards} shards, bulks of {args.bulk}; each worker caps its bulks in flight at {args.cap}"
    )
    with tempfile.TemporaryDirectory() as folder, https_receiver(Path(folder), delay=args.delay) as receiver:
        endpoint, ca_file = receiver
        setup = Setup(
            args.shards, args.cap, args.bulk, args.delay, endpoint, ca_file, Path(folder), new_key()
        )
        rates = {}
        for workers in counts:
            rates[workers] = run(setup, args.database_url, workers, args.per_worker * workers)
            linear = workers * rates[counts[0]] / counts[0]
            print(
                f"  {workers} worker(s): {rates[workers]:>7,.0f} sessions/s,"
                f" {rates[workers] / linear:.2f}x linear (target >= 0.8)",
                flush=True,
            )
        uncapped = run(setup, args.database_url, 1, args.per_worker * max(counts), cap=args.shards)
        print(
            f"  1 worker, cap {args.shards} (every shard in flight at once): {uncapped:,.0f} sessions/s"
            f" ({args.shards} x {args.bulk} sessions per {args.delay * 1000:.0f} ms at most:"
            f" {args.shards * args.bulk / args.delay:,.0f})"
        )


if __name__ == "__main__":
    main()
