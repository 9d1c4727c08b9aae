"""Ingest throughput through the HTTP API, beside the parse floor, measured in one run.

For generated sessions of about 2 KB and about 8 KB it prints, side by side:
- the parse floor: plain ``orjson.loads`` of the same lines in this process (sessions/s, MB/s);
- ingest: a real ``sessionexport serve`` on loopback, fed NDJSON batches over HTTP, every session
  validated and committed to SQLite (WAL, synchronous=FULL) before the 200;
- bare HTTP: the same bodies POSTed by the same client to a server that only reads them
  (uvicorn + Starlette, nothing parsed or stored): what the HTTP stack alone costs here;
- the ratio ingest / floor (target: >= 0.5 for 8 KB sessions);
- the stages of ingest alone, in this process: validation of the same bodies (parsed into log
  records, nothing stored), and the store alone (the same records appended batch by batch to a
  fresh SQLite log, durable as in the server; nothing parsed);
- ingest of the same bodies sent gzip (``Content-Encoding: gzip``, compressed beforehand): what
  inflating them costs the server, beside how much smaller they are.

With ``--stored N`` the log (of the server and of the store alone) already holds N sessions when
ingest starts, as a log in production does: they joined it evenly over the last 7 days, with
random session and user ids, the tenants of the sessions ingested and start times over the week up
to theirs, and small bodies (what the indexes see is realistic; it is quick to fill).

Usage: python bench/ingest.py [--sessions N] [--batch N] [--clients N] [--stored N]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import orjson

from cpu import budget, own_cpu_seconds, tree_cpu_seconds
from sessionexport.clock import DAY_MS, now_ms
from sessionexport.generate.sessions import TENANTS, GeneratorOptions, generate_lines
from sessionexport.ingest.documents import parse_ndjson
from sessionexport.store import create_store
from sessionexport.store.records import NewSession

TARGET = 0.5  # x the parse floor, for 8 KB sessions
SIZES = {
    "~2 KB": GeneratorOptions(kind="mobile", actions=(1, 2)),
    "~8 KB": GeneratorOptions(kind="web", actions=(5, 6)),
}


def parse_floor(lines: list[bytes], rounds: int = 3) -> float:
    """Best-of-N seconds for orjson.loads over all lines."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for line in lines:
            orjson.loads(line)
        best = min(best, time.perf_counter() - started)
    return best


def validate_only(bodies: list[bytes]) -> float:
    """Seconds to validate every body into log records, as the ingest route does."""
    started = time.perf_counter()
    for body in bodies:
        parse_ndjson(body)
    return time.perf_counter() - started


def prefill(data_dir: Path, count: int) -> None:
    """A log already holding ``count`` sessions that joined it over the last 7 days."""
    if not count:
        return
    rnd, now = random.Random(7), now_ms()
    step = 7 * DAY_MS // count
    first_start = GeneratorOptions().end_ms - 7 * DAY_MS  # the week up to the sessions ingested

    def earlier_session(n: int) -> NewSession:
        tenant, start = TENANTS[n % len(TENANTS)], first_start + n * step
        session_id, user = f"{rnd.getrandbits(96):024X}", f"user-{rnd.getrandbits(40)}@example.com"
        body = b'{"tenantId":"%s","userSessionId":"%s","startTime":%d}' % (
            tenant.encode(),
            session_id.encode(),
            start,
        )
        return NewSession(tenant, session_id, start, start + 1, user, "REAL_USER", None, None, (), body)

    async def fill() -> None:
        store = create_store(data_dir)
        await store.open()
        try:
            for start in range(0, count, 5000):
                batch = [earlier_session(n) for n in range(start, min(count, start + 5000))]
                await store.append_sessions(batch, now - 7 * DAY_MS + start * step)
        finally:
            await store.close()

    asyncio.run(fill())


def store_only(data_dir: Path, batches: list[list[NewSession]], stored: int) -> float:
    """Seconds to append every batch of records to a store (holding ``stored`` sessions already),
    one request's batch at a time."""
    prefill(data_dir, stored)

    async def append_all() -> float:
        store = create_store(data_dir)
        await store.open()
        try:
            started = time.perf_counter()
            for batch in batches:
                await store.append_sessions(batch, now_ms())
            return time.perf_counter() - started
        finally:
            await store.close()

    return asyncio.run(append_all())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, data_dir: Path, stored: int = 0) -> None:
        self.data_dir = data_dir
        prefill(data_dir, stored)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cli = [sys.executable, "-m", "sessionexport"]
        created = subprocess.run(
            [
                *cli,
                "tokens",
                "create",
                "--data-dir",
                str(data_dir),
                "--name",
                "bench",
                "--scopes",
                "sessions.ingest",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        self.token = created.stdout.strip().splitlines()[-1]
        self.proc = subprocess.Popen(
            [
                *cli,
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                str(data_dir),
                "--max-body-bytes",
                str(64 << 20),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


BARE_APP = """
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

async def swallow(request):
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
    return Response(str(size))

app = Starlette(routes=[Route("/api/v2/usersessions", swallow, methods=["POST"])])
"""


class BareServer(Server):
    """The same HTTP stack with an endpoint that only reads the body."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = "none"  # noqa: S105 (the bare server checks nothing)
        (data_dir / "bare_app.py").write_text(BARE_APP)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bare_app:app",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            cwd=data_dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.post(f"{self.url}/api/v2/usersessions", content=b"x", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.1)
            if time.monotonic() > deadline:
                raise RuntimeError("bare server did not start")


def post_all(server: Server, bodies: list[bytes], clients: int, encoding: str | None = None) -> float:
    """Seconds to POST every body (``clients`` keep-alive connections in parallel), each answered
    200; with ``encoding``, the bodies are already encoded so, and say it.

    The client is a bare socket writing pre-built HTTP/1.1 requests: on two shared cores, a
    full-featured client would take CPU away from the server being measured.
    """
    encoded = f"Content-Encoding: {encoding}\r\n" if encoding else ""
    requests = [
        (
            f"POST /api/v2/usersessions HTTP/1.1\r\nHost: bench\r\nAuthorization: Api-Token {server.token}\r\n"
            f"Content-Type: application/x-ndjson\r\n{encoded}Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
        for body in bodies
    ]
    lock = threading.Lock()
    failures: list[str] = []

    def worker() -> None:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            pending = b""
            while True:
                with lock:
                    if not requests:
                        return
                    request = requests.pop()
                sock.sendall(request)
                status, pending = read_response(sock, pending)
                if status != 200:
                    failures.append(str(status))

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} request(s) failed, first status: {failures[0]}")
    return elapsed


def read_response(sock: socket.socket, pending: bytes) -> tuple[int, bytes]:
    """(status, bytes after the response) for one HTTP/1.1 response with a Content-Length."""
    while b"\r\n\r\n" not in pending:
        pending += sock.recv(65536)
    head, _, rest = pending.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length"))
    while len(rest) < length:
        rest += sock.recv(65536)
    return int(lines[0].split()[1]), rest[length:]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=20_000, help="sessions per size class")
    parser.add_argument("--batch", type=int, default=500, help="sessions per request")
    parser.add_argument("--clients", type=int, default=2, help="parallel HTTP connections")
    parser.add_argument("--stored", type=int, default=0, help="sessions already in the log at the start")
    args = parser.parse_args()

    print(
        f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )
    print(
        f"{args.sessions} sessions per size, {args.batch} per request, {args.clients} client connection(s),"
        f" {args.stored:,} sessions in the log at the start\n"
    )
    header = (
        f"{'size':>7} {'avg B':>7} | {'floor s/s':>10} {'MB/s':>6} | {'bare HTTP s/s':>13} {'MB/s':>6} |"
        f" {'ingest s/s':>10} {'MB/s':>6} | ingest/floor  bare/floor"
    )
    print(header)
    print("-" * len(header))
    for label, options in SIZES.items():
        lines = list(generate_lines(args.sessions, seed=42, options=options))
        total_bytes = sum(len(line) for line in lines)
        bodies = [b"\n".join(lines[i : i + args.batch]) + b"\n" for i in range(0, len(lines), args.batch)]
        # The machine is shared and noisy: the floor is measured before and after, and averaged.
        floor_before = parse_floor(lines)
        with tempfile.TemporaryDirectory() as data_dir:
            server = Server(Path(data_dir), args.stored)
            try:
                server_cpu, client_cpu = tree_cpu_seconds(server.proc.pid), own_cpu_seconds()
                ingest = post_all(server, bodies, args.clients)
                server_cpu = tree_cpu_seconds(server.proc.pid) - server_cpu
                client_cpu = own_cpu_seconds() - client_cpu
            finally:
                server.stop()
        gzipped = [gzip.compress(body, compresslevel=6) for body in bodies]
        with tempfile.TemporaryDirectory() as data_dir:
            server = Server(Path(data_dir), args.stored)
            try:
                gzip_cpu = tree_cpu_seconds(server.proc.pid)
                gzip_ingest = post_all(server, gzipped, args.clients, "gzip")
                gzip_cpu = tree_cpu_seconds(server.proc.pid) - gzip_cpu
            finally:
                server.stop()
        with tempfile.TemporaryDirectory() as bare_dir:
            bare_server = BareServer(Path(bare_dir))
            try:
                bare = post_all(bare_server, bodies, args.clients)
            finally:
                bare_server.stop()
        validate = validate_only(bodies)
        with tempfile.TemporaryDirectory() as store_dir:
            stored = store_only(Path(store_dir), [parse_ndjson(body) for body in bodies], args.stored)
        floor = (floor_before + parse_floor(lines)) / 2
        n, mb = len(lines), total_bytes / 1e6
        print(
            f"{label:>7} {total_bytes // n:>7} | {n / floor:>10,.0f} {mb / floor:>6,.0f} | {n / bare:>13,.0f}"
            f" {mb / bare:>6,.0f} | {n / ingest:>10,.0f} {mb / ingest:>6,.0f} |"
            f" {floor / ingest:>11.2f}x {floor / bare:>10.2f}x"
        )
        print(
            f"{'':>7} stages alone: validate {n / validate:,.0f} sessions/s ({floor / validate:.2f}x floor),"
            f" store {n / stored:,.0f} sessions/s ({floor / stored:.2f}x floor)"
        )
        print(f"{'':>7} {budget(n, server_cpu, client_cpu, TARGET * n / floor)}")
        shrink = sum(len(b) for b in bodies) / sum(len(b) for b in gzipped)
        print(
            f"{'':>7} gzip bodies ({shrink:.1f}x smaller): {n / gzip_ingest:,.0f} sessions/s"
            f" ({ingest / gzip_ingest:.2f}x plain ingest), server CPU {gzip_cpu / n * 1e6:.0f} µs per session"
            f" ({server_cpu / n * 1e6:.0f} plain)"
        )


if __name__ == "__main__":
    main()
