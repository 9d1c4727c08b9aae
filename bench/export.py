"""Export benchmarks: throughput beside a bare sender, end-to-end latency, memory while draining.

- throughput: N stored sessions (~8 KB) exported to an HTTPS receiver on loopback (its own
  process), beside a bare sender that PUTs the same pre-built bodies to the same receiver over
  the same TLS, in the same run (target: exporter >= 0.9 x bare);
- latency: a real server fed at a steady rate through the ingest API, flush interval 1 s;
  ingest acknowledged -> receiver got it, p50 and p99 (target: p99 <= 1.5 s);
- memory: peak RSS of a real server process draining a backlog (target: flat, <= 200 MB).

Throughput also shows the exporter's pipeline alone (bulks answered at once, nothing sent), the
exporter with its reads of the log served from memory (what reading the log costs it is the rest),
and the exporter with the ``compression: gzip`` knob (the receiver then inflates every body).

Each part runs on every backend of ``--backends`` (default sqlite): SQLite in a temporary
directory, and/or PostgreSQL at ``--database-url`` (default: $SESSIONEXPORT_TEST_DATABASE_URL, or
the local server of scripts/postgres), in a fresh schema per run.

Usage: python bench/export.py [--part throughput|latency|memory|all] [--sessions N]
                              [--backends sqlite,postgresql] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import httpx
import trustme

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.postgres import LOCAL_DATABASE_URL, fresh_schema

from cpu import own_cpu_seconds, tree_cpu_seconds
from sessionexport.clock import now_ms
from sessionexport.content_encoding import GZIP_LEVEL, gzipped
from sessionexport.export.batching import Batcher
from sessionexport.export.config import ExportConfig
from sessionexport.export.delivery import Attempt, Sender
from sessionexport.export.exchange import ssl_context
from sessionexport.export.exporter import READ_BATCH, Exporter
from sessionexport.export.formats import bulk_body, encoded_size
from sessionexport.export.metrics import ExportMetrics
from sessionexport.export.notifier import LogNotifier
from sessionexport.export.tuning import ExportTuning
from sessionexport.generate.sessions import GeneratorOptions, generate_lines
from sessionexport.ingest.documents import parse_ndjson
from sessionexport.store import Store, create_store
from sessionexport.store.records import Claim, LogRead

HERE = Path(__file__).parent
EIGHT_KB = GeneratorOptions(kind="web", actions=(5, 6))
CLI = [sys.executable, "-m", "sessionexport"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def database(backend: str, folder: Path, postgres_url: str) -> Iterator[str | None]:
    """The database URL of one run: None (SQLite in ``folder``) or a fresh PostgreSQL schema."""
    if backend == "sqlite":
        yield None
        return
    with fresh_schema(postgres_url) as url:
        yield url


def shown(url: str | None) -> str:
    """A database for a heading, without credentials."""
    return "SQLite" if url is None else "PostgreSQL at " + url.rsplit("@", 1)[-1].split("?")[0]


@contextmanager
def https_receiver(
    folder: Path, arrivals_log: Path | None = None, delay: float = 0.0
) -> Iterator[tuple[str, Path]]:
    """The bench receiver in its own process (answering ``delay`` s late); yields (endpoint URL, CA file)."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(HERE), "BENCH_RECEIVER_DELAY": str(delay)}
    if arrivals_log:
        env["BENCH_RECEIVER_LOG"] = str(arrivals_log)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "_receiver:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--ssl-certfile",
            str(cert_file),
            "--ssl-keyfile",
            str(key_file),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"https://127.0.0.1:{port}"
    wait_until(lambda: _answers(f"{base}/count", ca_file), "receiver")
    try:
        yield f"{base}/export/events", ca_file
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def _answers(url: str, ca_file: Path) -> bool:
    try:
        return httpx.get(url, verify=ssl_context(ca_file), timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def wait_until(condition: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


async def fill(store: Store, count: int, options: GeneratorOptions) -> int:
    """Store ``count`` generated sessions, finished a minute ago (a backlog); return their bytes."""
    total = 0
    for start in range(0, count, 1000):
        lines = list(generate_lines(min(1000, count - start), seed=start + 1, options=options))
        total += sum(len(line) for line in lines)
        await store.append_sessions(parse_ndjson(b"\n".join(lines)), now_ms() - 60_000)
    return total


def cpu_split() -> tuple[float, float]:
    """CPU seconds so far of this process (the bare sender or the exporter, all its threads) and
    of its children (the receiver)."""
    own = own_cpu_seconds()
    return own, tree_cpu_seconds(os.getpid()) - own


def plain_config(url: str, export_id: str = "bench", tuning: ExportTuning | None = None) -> ExportConfig:
    return ExportConfig(
        export_id, url, True, "application/json", False, None, None, None, True, tuning or ExportTuning()
    )


# -- throughput ----------------------------------------------------------------------------------


async def bulks_of(store: Store, tuning: ExportTuning) -> list[bytes]:
    """The bodies the exporter will send, pre-built (for the bare sender)."""
    batcher, bodies, position = Batcher(tuning), [], 0
    while entries := await store.read_log(position, 1000):
        for entry in entries:
            position = entry.seq
            bodies += [bulk_body(b.entries, None) for b in batcher.offer(entry, encoded_size(entry, None))]
    if batcher.pending:
        bodies.append(bulk_body(batcher.take().entries, None))
    return bodies


class _LogInMemory:
    """A store whose reads of the log are answered from reads made beforehand (everything else
    is the real store's): the exporter as it would be if reading the log cost nothing."""

    def __init__(self, store: Store, reads: dict[int, LogRead]) -> None:
        self._store, self._reads = store, reads

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def read_shard(self, after_seq: int, limit: int, shard: int, shards: int) -> LogRead:
        return self._reads.get(after_seq) or LogRead([], after_seq)


async def log_in_memory(store: Store) -> Store:
    reads, position = {}, 0
    while (read := await store.read_shard(position, READ_BATCH, 0, 1)).entries:
        reads[position], position = read, read.end
    return cast(Store, _LogInMemory(store, reads))


async def bare_send(url: str, ca_file: Path, bodies: list[bytes]) -> float:
    async with httpx.AsyncClient(verify=ssl_context(ca_file)) as client:
        started = time.perf_counter()
        for body in bodies:
            response = await client.put(url, content=body, headers={"Content-Type": "application/json"})
            response.raise_for_status()
        return time.perf_counter() - started


async def export_all(
    store: Store,
    url: str,
    ca_file: Path,
    last_seq: int,
    export_id: str,
    *,
    network: bool = True,
    tuning: ExportTuning | None = None,
) -> float:
    """Seconds for an exporter to deliver the whole log; without ``network``, to a sender that
    answers every bulk at once (what the exporter's own pipeline costs: read, batch, decide)."""
    config = plain_config(url, export_id, tuning)
    claim = Claim(export_id, 0, 1, "bench")
    assert await store.claim_lease(export_id, 0, claim.owner, lease_ms=3_600_000)
    async with httpx.AsyncClient(verify=ssl_context(ca_file)) as client:
        sender = (Sender if network else _Instant)(config, client, _NoAuth())
        exporter = Exporter(store, config, sender, LogNotifier(), ExportMetrics(), claim)
        started = time.perf_counter()
        task = asyncio.create_task(exporter.run(0))
        while True:
            cursor = await store.get_cursor(export_id)
            if cursor is not None and cursor.position >= last_seq:
                break
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return elapsed


class _Instant(Sender):
    """Answers every bulk at once, sending nothing."""

    async def attempt(
        self, number: int, body: bytes, content_type: str | None = None, *, read_answer: bool = False
    ) -> tuple[Attempt, bytes]:
        return Attempt(number, now_ms(), 0, status=200), b""


class _NoAuth:
    async def headers(self) -> dict[str, str]:
        return {}

    async def refresh(self) -> bool:
        return False

    def secrets(self) -> tuple[str, ...]:
        return ()


async def throughput(count: int, rounds: int, database_url: str | None) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = create_store(Path(folder), database_url)
        await store.open()
        print(f"storing {count} sessions of ~8 KB ...", flush=True)
        total = await fill(store, count, EIGHT_KB)
        bodies = await bulks_of(store, ExportTuning())
        last = await store.log_position()
        bare, exported, pipeline = [], [], []
        costs: dict[str, list[tuple[float, float]]] = {"bare": [], "exporter": []}
        with https_receiver(Path(folder)) as (url, ca_file):
            for n in range(rounds):  # alternated: the machine is shared and noisy
                before = cpu_split()
                bare.append(await bare_send(url, ca_file, bodies))
                middle = cpu_split()
                exported.append(await export_all(store, url, ca_file, last, f"bench-{n}"))
                after = cpu_split()
                costs["bare"].append((middle[0] - before[0], middle[1] - before[1]))
                costs["exporter"].append((after[0] - middle[0], after[1] - middle[1]))
                pipeline.append(await export_all(store, url, ca_file, last, f"alone-{n}", network=False))
            in_memory = await log_in_memory(store)
            memory_seconds = await export_all(in_memory, url, ca_file, last, "in-memory")
            del in_memory
            before = cpu_split()
            gzip_seconds = await export_all(
                store, url, ca_file, last, "gzip", tuning=ExportTuning(compression="gzip")
            )
            after = cpu_split()
        await store.close()
    mb = total / 1e6
    print(
        f"\nthroughput ({shown(database_url)}): {count} sessions, {mb:,.0f} MB, {len(bodies)} bulks (avg {total / len(bodies) / 1e3:,.0f} KB),"
        f" {rounds} alternating rounds"
    )
    for n, (b_s, e_s) in enumerate(zip(bare, exported, strict=True), start=1):
        print(
            f"  round {n}: bare {count / b_s:>8,.0f} sessions/s, exporter {count / e_s:>8,.0f} sessions/s,"
            f" ratio {b_s / e_s:.2f}x"
        )
    best_bare, best_export = min(bare), min(exported)
    print(
        f"  best of each: bare {count / best_bare:,.0f} sessions/s ({mb / best_bare:,.1f} MB/s),"
        f" exporter {count / best_export:,.0f} sessions/s ({mb / best_export:,.1f} MB/s)"
    )
    print(
        f"  exporter / bare = {best_bare / best_export:.2f}x best-to-best,"
        f" {statistics.median(b / e for b, e in zip(bare, exported, strict=True)):.2f}x median round (target >= 0.9)"
    )
    per_session = {
        name: tuple(statistics.median(c[i] for c in runs) / count * 1e6 for i in (0, 1))
        for name, runs in costs.items()
    }
    print(
        "  CPU per session, median round (sending process + receiver process): "
        + ", ".join(f"{name} {s:.0f} + {r:.0f} µs" for name, (s, r) in per_session.items())
    )
    sample = bodies[:: max(1, len(bodies) // 20)]
    shrink = sum(len(b) for b in sample) / sum(len(gzipped(b)) for b in sample)
    print(
        f"  with compression gzip (level {GZIP_LEVEL}): {count / gzip_seconds:,.0f} sessions/s,"
        f" {statistics.median(exported) / gzip_seconds:.2f}x the uncompressed exporter's median round;"
        f" bodies {shrink:.1f}x smaller on the wire ({mb / shrink / gzip_seconds:,.1f} MB/s sent);"
        f" CPU per session {(after[0] - before[0]) / count * 1e6:.0f} + {(after[1] - before[1]) / count * 1e6:.0f} µs"
    )
    print(
        f"  with the log read from memory (the rest as above): {count / memory_seconds:,.0f} sessions/s,"
        f" {best_bare / memory_seconds:.2f}x the bare sender (what reading the log from the database costs is the difference)"
    )
    alone = min(pipeline)
    print(
        f"  the exporter's pipeline alone (read, batch, decide; bulks answered at once, nothing sent):"
        f" {count / alone:,.0f} sessions/s, {best_bare / alone:.2f}x the bare sender"
    )


# -- latency and memory: a real server process -----------------------------------------------------


class Server:
    def __init__(self, data_dir: Path, ca_file: Path, database_url: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        where = ["--data-dir", str(data_dir)] + (["--database-url", database_url] if database_url else [])
        created = subprocess.run(
            [
                *CLI,
                "tokens",
                "create",
                *where,
                "--name",
                "bench",
                "--scopes",
                "sessions.ingest,settings.read,settings.write,exports.manage",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        self.headers = {"Authorization": f"Api-Token {created.stdout.strip().splitlines()[-1]}"}
        self.proc = subprocess.Popen(
            [
                *CLI,
                "serve",
                "--port",
                str(self.port),
                *where,
                "--ca-bundle",
                str(ca_file),
                "--max-body-bytes",
                str(64 << 20),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._healthy, "server")

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def create_export(self, endpoint: str, tuning: dict[str, object]) -> str:
        value = {
            "endpointDefinition": {"endpointUrl": endpoint},
            "exportBehavior": {"customConfiguration": json.dumps(tuning)},
        }
        response = httpx.post(
            f"{self.url}/api/v2/settings/objects",
            headers=self.headers,
            json=[
                {
                    "schemaId": "builtin:elasticsearch.user-session-export-settings-v2",
                    "scope": "environment",
                    "value": value,
                }
            ],
        )
        response.raise_for_status()
        export_id: str = response.json()[0]["objectId"]
        wait_until(lambda: self.status(export_id)["state"] == "running", "exporter")
        return export_id

    def status(self, export_id: str) -> dict[str, object]:
        return dict(httpx.get(f"{self.url}/api/v2/exports/{export_id}/status", headers=self.headers).json())

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


def latency(rate: int, seconds: int, database_url: str | None) -> None:
    with tempfile.TemporaryDirectory() as folder:
        arrivals = Path(folder) / "arrivals.txt"
        with https_receiver(Path(folder), arrivals) as (endpoint, ca_file):
            server = Server(Path(folder) / "data", ca_file, database_url)
            try:
                server.create_export(endpoint, {"flushIntervalSeconds": 1})
                acked = feed(server, rate, seconds)
                time.sleep(3)
            finally:
                server.stop()
        received: dict[str, float] = {}
        for line in arrivals.read_text().splitlines():
            sid, at = line.split()
            received.setdefault(sid, float(at))
    delays = sorted(received[sid] - at for sid, at in acked.items() if sid in received)
    missing = len(acked) - len(delays)
    p50, p99 = statistics.median(delays), delays[int(len(delays) * 0.99) - 1]
    print(
        f"\nlatency ({shown(database_url)}): {len(acked)} sessions at {rate}/s for {seconds} s, flush interval 1 s ({missing} missing)"
    )
    print(
        f"  ingest acknowledged -> receiver acknowledged: p50 {p50:.3f} s, p99 {p99:.3f} s (target p99 <= 1.5)"
    )


def feed(server: Server, rate: int, seconds: int) -> dict[str, float]:
    """Post ``rate`` sessions per second in 10 batches a second; when each was acknowledged."""
    per_tick = rate // 10
    lines = list(generate_lines(rate * seconds, seed=5, options=GeneratorOptions(kind="mixed")))
    acked: dict[str, float] = {}
    headers = {**server.headers, "Content-Type": "application/x-ndjson"}
    with httpx.Client(base_url=server.url, headers=headers) as client:
        start = time.monotonic()
        for tick in range(seconds * 10):
            batch = lines[tick * per_tick : (tick + 1) * per_tick]
            client.post("/api/v2/usersessions", content=b"\n".join(batch)).raise_for_status()
            now = time.time()
            acked.update((json.loads(line)["userSessionId"], now) for line in batch)
            time.sleep(max(0.0, start + (tick + 1) / 10 - time.monotonic()))
    return acked


def memory(count: int, database_url: str | None) -> None:
    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder) / "data"

        async def prefill() -> int:
            store = create_store(data_dir, database_url)
            await store.open()
            total = await fill(store, count, EIGHT_KB)
            await store.close()
            return total

        print(f"\nstoring {count} sessions of ~8 KB for the memory test ...", flush=True)
        total = asyncio.run(prefill())
        with https_receiver(Path(folder)) as (endpoint, ca_file):
            server = Server(data_dir, ca_file, database_url)
            try:
                idle = server.rss_mb()
                export_id = server.create_export(endpoint, {})
                httpx.put(
                    f"{server.url}/api/v2/exports/{export_id}/position",
                    headers=server.headers,
                    json={"start": "oldest"},
                ).raise_for_status()
                samples = []
                started = time.monotonic()

                def drained() -> bool:
                    samples.append(server.rss_mb())
                    return server.status(export_id)["backlog"] == 0

                wait_until(drained, "backlog drained", timeout=1800)
                elapsed = time.monotonic() - started
                peak = server.peak_rss_mb()
            finally:
                server.stop()
    print(
        f"memory ({shown(database_url)}): drained {count} sessions ({total / 1e6:,.0f} MB) in {elapsed:.0f} s"
        f" ({count / elapsed:,.0f} sessions/s)"
    )
    print(
        f"  server RSS: idle {idle:.0f} MB, during drain median {statistics.median(samples):.0f} MB,"
        f" peak {peak:.0f} MB (target <= 200 MB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["throughput", "latency", "memory", "all"], default="all")
    parser.add_argument("--sessions", type=int, default=100_000, help="sessions for the throughput test")
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare/exporter rounds")
    parser.add_argument("--backlog", type=int, default=200_000, help="sessions for the memory test")
    parser.add_argument("--rate", type=int, default=500, help="sessions/s for the latency test")
    parser.add_argument("--seconds", type=int, default=20, help="duration of the latency test")
    parser.add_argument("--backends", default="sqlite", help="sqlite, postgresql or both (comma-separated)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("SESSIONEXPORT_TEST_DATABASE_URL") or LOCAL_DATABASE_URL,
        help="PostgreSQL server (each run in a fresh schema of it)",
    )
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not backends or set(backends) - {"sqlite", "postgresql"}:
        parser.error("--backends takes sqlite, postgresql or both")
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}")
    for backend in backends:
        run_parts(args, backend)


def run_parts(args: argparse.Namespace, backend: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        if args.part in ("throughput", "all"):
            with database(backend, Path(folder), args.database_url) as url:
                asyncio.run(throughput(args.sessions, args.rounds, url))
        if args.part in ("latency", "all"):
            with database(backend, Path(folder), args.database_url) as url:
                latency(args.rate, args.seconds, url)
        if args.part in ("memory", "all"):
            with database(backend, Path(folder), args.database_url) as url:
                memory(args.backlog, url)


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
