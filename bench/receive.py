"""Receiver throughput: sessions/s stored durably by `sessionexport receive`, beside the parse floor.

For generated sessions of about 8 KB, in one run:
- the parse floor: plain ``orjson.loads`` of the same lines in this process (sessions/s, MB/s);
- receive: a real ``sessionexport receive`` process on loopback with its self-signed certificate,
  fed exporter-sized bulks (up to 896,000 bytes) over HTTPS by a few concurrent senders; every
  session is validated against the session model and durable (SQLite WAL, synchronous=FULL; or
  fsync'd NDJSON files) before the 200;
- the ratio receive / floor (target: >= 0.5);
- what bounds it, stage by stage in this process: the receiver's own parsing and validation of the
  same bulks (no HTTP, no storage), and its storage alone (the same documents saved bulk by bulk,
  one writer, durable as in the receiver; no HTTP, no validation).
Rounds alternate floor, stages and receiver (the machine is shared and noisy).

With ``--stored N`` (SQLite) the receiver's database, and the store alone's, already hold N
documents when a round starts, as a receiver's does after a while: sessions of the tenants of
those sent, started over the last 7 days, with small bodies (what the indexes see is realistic).

Usage: python bench/receive.py [--sessions N] [--senders N] [--storage sqlite|files|postgresql://...]
                              [--workers N] [--stored N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shutil
import sqlite3
import ssl
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.receiver_process import ReceiverProcess

from cpu import budget, own_cpu_seconds, tree_cpu_seconds
from sessionexport.clock import now_ms
from sessionexport.generate.sessions import GeneratorOptions, generate_lines
from sessionexport.model.elasticsearch_names import document_id
from sessionexport.receiver.documents import parse_events_body
from sessionexport.receiver.store import DATABASE_FILE, create_received_store
from sessionexport.receiver.store.records import SESSION, Document, RequestInfo
from sessionexport.receiver.store.sqlite import key_locality

EIGHT_KB = GeneratorOptions(kind="web", actions=(5, 6))
TARGET = 0.5  # x the parse floor
MAX_BULK = 896_000


def bulks(lines: list[bytes]) -> list[bytes]:
    """Bodies as the exporter builds them: lines joined by newlines, each body at most 896,000 bytes."""
    bodies: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for line in lines:
        if current and size + len(line) + 1 > MAX_BULK:
            bodies.append(b"\n".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    if current:
        bodies.append(b"\n".join(current))
    return bodies


def parse_floor(lines: list[bytes]) -> float:
    started = time.perf_counter()
    for line in lines:
        orjson.loads(line)
    return time.perf_counter() - started


def validate_only(bodies: list[bytes]) -> float:
    """The receiver's parsing and validation of every bulk, in this process (results dropped at
    once, as the receiver does once they are stored)."""
    started = time.perf_counter()
    for body in bodies:
        parse_events_body(body)
    return time.perf_counter() - started


def store_only(folder: Path, storage: str, documents: list[list[Document]]) -> float:
    """The receiver's storage alone: each bulk's documents saved in turn, as one request each."""

    async def save_all() -> float:
        store = create_received_store(folder, None if storage == "sqlite" else storage)
        await store.open()
        try:
            started = time.perf_counter()
            for docs in documents:
                info = RequestInfo(now_ms(), "PUT", "/export/events", "application/x-ndjson", 0, "bench")
                await store.save(info, docs)
            return time.perf_counter() - started
        finally:
            await store.close()

    return asyncio.run(save_all())


def prefilled(folder: Path, count: int, tenants: list[str]) -> Path:
    """A receiver database holding ``count`` sessions received over the last 7 days (small bodies)."""
    asyncio.run(_created(folder))
    path, now, rnd = folder / DATABASE_FILE, now_ms(), random.Random(1)
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("BEGIN")
        request = conn.execute(
            "INSERT INTO requests (received_at, method, path, content_type, size, client, status)"
            " VALUES (?, 'PUT', '/export/events', 'application/x-ndjson', 0, 'bench', 200)",
            (now,),
        ).lastrowid
        for n in range(count):
            start = now - rnd.randrange(7 * 86_400_000)
            user = f"{rnd.randrange(10**6)}_{rnd.randrange(10**3)}"
            key = document_id(rnd.choice(tenants), user, start)
            conn.execute(
                "INSERT INTO documents (request_id, received_at, kind, key, locality, user_session_id, body)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (request, start + 600_000, SESSION, key, key_locality(key), user, b'{"stored":%d}' % n),
            )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


async def _created(folder: Path) -> None:
    store = create_received_store(folder)
    await store.open()
    await store.close()


def with_database(folder: Path, template: Path | None) -> Path:
    """``folder``, holding a copy of the prefilled database when there is one."""
    folder.mkdir(parents=True)
    if template is not None:
        shutil.copy(template, folder / DATABASE_FILE)
    return folder


def send_all(receiver: ReceiverProcess, bodies: list[bytes], senders: int) -> float:
    context = ssl.create_default_context(cafile=str(receiver.ca_file))
    queue = list(reversed(bodies))
    lock, failures = threading.Lock(), []

    def sender() -> None:
        with httpx.Client(verify=context, timeout=60) as client:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                response = client.put(
                    receiver.url, content=body, headers={"Content-Type": "application/x-ndjson"}
                )
                if response.status_code != 200:
                    failures.append(response.text[:200])

    threads = [threading.Thread(target=sender) for _ in range(senders)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"receiver refused a bulk: {failures[0]}")
    return elapsed


def fresh(storage: str, round_number: int) -> str:
    """PostgreSQL: an empty schema of its own for each round (counts start at zero)."""
    if not storage.startswith("postgresql"):
        return storage
    import psycopg

    schema = f"bench_receive_{os.getpid()}_{round_number}"
    with psycopg.connect(storage, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in storage else "?"
    return f"{storage}{separator}options=-csearch_path%3D{schema}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=20_000)
    parser.add_argument("--senders", type=int, default=2, help="concurrent HTTPS senders")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--storage", default="sqlite", help="sqlite (default), files, or a postgresql:// URL")
    parser.add_argument(
        "--workers", type=int, default=1, help="receiver processes (PostgreSQL scales with them)"
    )
    parser.add_argument("--stored", type=int, default=0, help="documents already stored (SQLite)")
    args = parser.parse_args()
    if args.stored and args.storage != "sqlite":
        parser.error("--stored fills SQLite storage only")

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    lines = list(generate_lines(args.sessions, seed=11, options=EIGHT_KB))
    total_mb = sum(len(line) for line in lines) / 1e6
    bodies = bulks(lines)
    shown = args.storage.rsplit("@", 1)[-1]  # never print credentials
    print(
        f"{args.sessions} sessions, avg {total_mb * 1e3 / args.sessions:.1f} KB, {len(bodies)} bulks,"
        f" storage {shown}, {args.workers} receiver process(es), {args.senders} senders,"
        f" {args.stored} documents stored at the start"
    )
    documents = [parse_events_body(body) for body in bodies]
    floors, receives, validations, stores = [], [], [], []
    costs: list[tuple[float, float]] = []  # CPU seconds of each round: receiver, senders
    with tempfile.TemporaryDirectory() as folder:
        template = None
        if args.stored:
            print(f"storing {args.stored} documents ...", flush=True)
            tenants = sorted({orjson.loads(line)["tenantId"] for line in lines})
            template = prefilled(Path(folder) / "template", args.stored, tenants)
        for n in range(args.rounds):
            floors.append(parse_floor(lines))
            validations.append(validate_only(bodies))
            alone = with_database(Path(folder) / f"store-{n}", template)
            stores.append(store_only(alone, fresh(args.storage, 1000 + n), documents))
            shutil.rmtree(alone)
            storage = [] if args.storage == "sqlite" else ["--storage", fresh(args.storage, n)]
            receiver = ReceiverProcess(
                with_database(Path(folder) / f"round-{n}", template), *storage, "--workers", str(args.workers)
            ).start()
            try:
                assert receiver.process is not None
                server_cpu, client_cpu = tree_cpu_seconds(receiver.process.pid), own_cpu_seconds()
                receives.append(send_all(receiver, bodies, args.senders))
                costs.append(
                    (tree_cpu_seconds(receiver.process.pid) - server_cpu, own_cpu_seconds() - client_cpu)
                )
                counts = httpx.get(f"{receiver.base}/received/counts", verify=receiver.verify).json()
                assert counts["sessions"] == args.stored + args.sessions, counts
            finally:
                receiver.stop()
                shutil.rmtree(receiver.data_dir)
            print(
                f"  round {n + 1}: floor {args.sessions / floors[-1]:>9,.0f} sessions/s,"
                f" receive {args.sessions / receives[-1]:>8,.0f} sessions/s, ratio {floors[-1] / receives[-1]:.2f}x"
            )
    floor, receive = min(floors), min(receives)
    validate, store = min(validations), min(stores)
    print(
        f"parse floor: {args.sessions / floor:,.0f} sessions/s ({total_mb / floor:,.0f} MB/s)\n"
        f"receive:     {args.sessions / receive:,.0f} sessions/s ({total_mb / receive:,.0f} MB/s),"
        f" durable, over HTTPS\n"
        f"receive / floor = {floor / receive:.2f}x best-to-best (target >= 0.5)\n"
        f"stages alone: validate {args.sessions / validate:,.0f} sessions/s ({floor / validate:.2f}x floor),"
        f" store {args.sessions / store:,.0f} sessions/s ({floor / store:.2f}x floor)\n"
        f"{budget(args.sessions, *min(costs), TARGET * args.sessions / floor)}"
    )


if __name__ == "__main__":
    main()
