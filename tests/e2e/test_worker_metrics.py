"""``worker --metrics-port``: a worker process's own delivery counters, scraped from it, and its
health for an orchestrator's probes. Real processes: the worker, ``ingest`` into the same SQLite
log, and an HTTPS receiver."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sessionexport.clock import now_ms
from sessionexport.export.exchange import ssl_context
from sessionexport.ingest.documents import parse_ndjson
from sessionexport.settings.objects import NewObject, SettingsService
from sessionexport.settings.schemas import EXPORT_SCHEMA
from sessionexport.settings.secrets import load_secret_box
from sessionexport.store import create_store
from tests.e2e.test_cli_and_server import CLI, create_token, free_port, run
from tests.support.engine import export_value, sessions
from tests.support.processes import wait_for, wait_healthy
from tests.support.receiver import Tls
from tests.support.receiver_process import ReceiverProcess
from tests.support.stores import opened


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[ReceiverProcess]:
    process = ReceiverProcess(tmp_path / "receiver").start()
    yield process
    process.stop()


def create_export(data_dir: Path, endpoint: str, value: dict[str, Any] | None = None) -> str:
    async def create() -> str:
        store = create_store(data_dir)
        await store.open()
        try:
            settings = SettingsService(store, load_secret_box(data_dir, None))
            new = NewObject(EXPORT_SCHEMA, "environment", value or export_value(endpoint))
            result = await settings.create(new, "test", now_ms())
            assert result.ok and result.object_id is not None, result
            return result.object_id
        finally:
            await store.close()

    return asyncio.run(create())


def start_worker(data_dir: Path, *options: str) -> subprocess.Popen[str]:
    command = [*CLI, "worker", "--data-dir", str(data_dir), *options]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop(worker: subprocess.Popen[str]) -> str:
    worker.send_signal(signal.SIGTERM)
    output, _ = worker.communicate(timeout=30)
    assert worker.returncode in (0, -signal.SIGTERM), output
    return output


def test_a_workers_deliveries_are_on_its_own_metrics_port(tmp_path: Path, receiver: ReceiverProcess) -> None:
    data_dir = tmp_path / "data"
    token = create_token(data_dir, "metrics.read")
    other = create_token(data_dir, "sessions.read")
    export_id = create_export(data_dir, receiver.url)
    port = free_port()
    worker = start_worker(data_dir, "--metrics-port", str(port), "--ca-bundle", str(receiver.ca_file))
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            wait_healthy(client, worker)
            assert client.get("/metrics").status_code == 401
            assert client.get("/metrics", headers={"Authorization": f"Api-Token {other}"}).status_code == 403
            assert client.get("/docs").status_code == 404  # /health and /metrics only
            assert client.get("/api/v2/usersessions").status_code == 404
            lines = sessions(5)
            (tmp_path / "sessions.ndjson").write_bytes(b"\n".join(lines) + b"\n")
            ingested = run("ingest", str(tmp_path / "sessions.ndjson"), "--data-dir", str(data_dir))
            assert ingested.returncode == 0, ingested.stderr
            delivered = f'sessionexport_sessions_delivered_total{{export="{export_id}"}} 5.0'
            caught_up = f'sessionexport_backlog_sessions{{export="{export_id}"}} 0.0'
            deadline = time.monotonic() + 30
            scrape = {"Authorization": f"Api-Token {token}"}
            # A scrape reads the backlog before it prints the counters: one taken while the bulk
            # was being decided can show it delivered and still behind; the next one cannot.
            while not (
                delivered in (text := client.get("/metrics", headers=scrape).text) and caught_up in text
            ):
                assert time.monotonic() < deadline, text
                time.sleep(0.2)
            assert 'sessionexport_sessions_ingested_total{source="api"} 0.0' in text  # ingested elsewhere
            assert "sessionexport_log_newest_session_timestamp_seconds 0.0" not in text  # read from the log
    finally:
        output = stop(worker)
    assert f"/health and /metrics on http://127.0.0.1:{port}" in output
    assert "exporting from" in output and "worker: stopped" in output


def test_worker_metrics_over_https_and_its_tls_options_without_a_port_refused(tmp_path: Path) -> None:
    files = Tls.create(tmp_path)
    data_dir = tmp_path / "data"
    token = create_token(data_dir, "metrics.read")
    tls = ("--metrics-tls-cert", str(files.cert), "--metrics-tls-key", str(files.key))
    refused = run("worker", "--data-dir", str(data_dir), *tls)
    assert refused.returncode == 2 and "need --metrics-port" in refused.stderr
    port = free_port()
    worker = start_worker(data_dir, "--metrics-port", str(port), *tls)
    try:
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=ssl_context(files.ca_file)) as client:
            wait_healthy(client, worker)
            scraped = client.get("/metrics", headers={"Authorization": f"Api-Token {token}"})
            assert (
                scraped.status_code == 200
                and "sessionexport_log_newest_session_timestamp_seconds 0.0" in scraped.text
            )
    finally:
        output = stop(worker)
    assert f"on https://127.0.0.1:{port}" in output and "SHA-256" in output


def test_serves_tls_variables_do_not_concern_a_worker(tmp_path: Path) -> None:
    """One environment file for serve and worker: serve's certificate is no option of the worker's."""
    data_dir = tmp_path / "data"
    create_token(data_dir, "metrics.read")
    serves = {
        "SESSIONEXPORT_TLS_CERT": str(tmp_path / "none.pem"),
        "SESSIONEXPORT_TLS_KEY": str(tmp_path / "none.key"),
    }
    command = [*CLI, "worker", "--data-dir", str(data_dir)]
    log = tmp_path / "worker.log"
    with log.open("w") as output:
        worker = subprocess.Popen(
            command, env={**os.environ, **serves}, stdout=output, stderr=subprocess.STDOUT
        )
        try:
            wait_for(
                lambda: "exporting from" in log.read_text() or worker.poll() is not None,
                "the worker to start",
            )
            assert worker.poll() is None, log.read_text()
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)
    assert worker.returncode in (0, -signal.SIGTERM), log.read_text()
    assert "exporting from" in log.read_text() and "worker: stopped" in log.read_text()


@pytest.mark.parametrize("options", [("worker", "--metrics-port", "1"), ("serve", "--port", "1")])
def test_a_store_that_cannot_be_reached_or_named_ends_the_command_in_one_line(
    tmp_path: Path, options: tuple[str, ...]
) -> None:
    command, *rest = options
    unreachable = "postgresql://user:secret@127.0.0.1:1/db"
    result = run(command, "--data-dir", str(tmp_path), "--database-url", unreachable, *rest)
    assert result.returncode == 2, result.stderr
    assert "cannot reach PostgreSQL at 127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.stderr and "secret" not in result.stderr
    of_no_kind = run(command, "--data-dir", str(tmp_path), "--database-url", "mysql://a", *rest)
    assert of_no_kind.returncode == 2 and "unsupported database URL scheme 'mysql'" in of_no_kind.stderr
    assert "Traceback" not in of_no_kind.stderr


def test_a_workers_retention_is_set_as_serves(tmp_path: Path) -> None:
    """A worker purges as `serve` does, after --retention-days (or SESSIONEXPORT_RETENTION_DAYS),
    not after a fixed 7 days: a worker beside a `serve` that keeps sessions 30 days keeps them too."""
    data_dir = tmp_path / "data"
    create_token(data_dir, "metrics.read")

    async def store_old_sessions() -> None:
        async with opened(lambda: create_store(data_dir)) as store:
            day = 86_400_000
            await store.append_sessions(parse_ndjson(sessions(1, seed=2)[0]), now_ms() - 40 * day)
            await store.append_sessions(parse_ndjson(b"\n".join(sessions(2, seed=3))), now_ms() - 10 * day)

    async def stored() -> int:
        async with opened(lambda: create_store(data_dir)) as store:
            return await store.count_sessions()

    asyncio.run(store_old_sessions())
    keeping = subprocess.Popen(
        [*CLI, "worker", "--data-dir", str(data_dir)],
        env={**os.environ, "SESSIONEXPORT_RETENTION_DAYS": "30"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 20
    while asyncio.run(stored()) == 3 and time.monotonic() < deadline:
        time.sleep(0.2)  # until its first purge ran: the 40-day-old session goes
    assert "purged 1 session(s) older than 30 day(s)" in stop(keeping)
    assert asyncio.run(stored()) == 2  # the 10-day-old ones stay
    purging = start_worker(data_dir, "--retention-days", "7")
    deadline = time.monotonic() + 20
    while asyncio.run(stored()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "purged 2 session(s) older than 7 day(s)" in stop(purging)
    assert asyncio.run(stored()) == 0
