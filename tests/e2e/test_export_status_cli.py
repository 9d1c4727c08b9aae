"""``sessionexport export status``: how each export does, read from the store by a command, while a
worker exports (running) and once it stopped (stopped, exit 1); a paused export is no failure,
unless it lost sessions."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sessionexport.clock import now_ms
from sessionexport.store import create_store
from tests.e2e.test_cli_and_server import create_token, run
from tests.e2e.test_worker_metrics import create_export, start_worker
from tests.support.engine import export_value, sessions
from tests.support.receiver_process import ReceiverProcess


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[ReceiverProcess]:
    process = ReceiverProcess(tmp_path / "receiver").start()
    yield process
    process.stop()


def status(data_dir: Path, *options: str) -> tuple[int, list[dict[str, Any]]]:
    result = run("export", "status", "--json", "--data-dir", str(data_dir), *options)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def test_status_follows_a_worker_and_says_when_nothing_exports(
    tmp_path: Path, receiver: ReceiverProcess
) -> None:
    data_dir = tmp_path / "data"
    create_token(data_dir, "sessions.read")  # creates the database
    export_id = create_export(data_dir, receiver.url)
    basic = {"active": True, "authType": "basic", "basicAuth": {"username": "u", "password": "s3cret"}}
    paused = export_value(receiver.url, authentication=basic)  # a stored secret, encrypted
    paused["endpointDefinition"]["enableUserSessionExport"] = False
    paused_id = create_export(data_dir, receiver.url, paused)
    worker = start_worker(data_dir, "--ca-bundle", str(receiver.ca_file))
    try:
        source = tmp_path / "sessions.ndjson"
        source.write_bytes(b"\n".join(sessions(7)) + b"\n")
        time.sleep(1)  # the worker placed the export's cursor: these sessions come after it
        assert run("ingest", str(source), "--data-dir", str(data_dir)).returncode == 0
        deadline = time.monotonic() + 30
        while True:
            code, shown = status(data_dir, "--object-id", export_id)
            if shown[0]["deliveredSessions"] == 7:
                break
            assert time.monotonic() < deadline, shown
            time.sleep(0.2)
        assert code == 0 and shown[0]["state"] == "running" and shown[0]["backlog"] == 0
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=30)
    code, shown = status(data_dir)
    states = {s["objectId"]: s["state"] for s in shown}
    assert states == {export_id: "stopped", paused_id: "paused"}
    assert code == 1  # nothing exports the enabled one any more
    table = run("export", "status", "--data-dir", str(data_dir))
    assert table.returncode == 1
    assert export_id in table.stdout and "stopped" in table.stdout and "paused" in table.stdout
    assert re.search(r"last success +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", table.stdout), table.stdout
    assert re.search(r"last success +never", table.stdout), table.stdout  # the paused one
    unknown = run("export", "status", "--data-dir", str(data_dir), "--object-id", "nope")
    assert unknown.returncode == 2 and "no user session export with objectId 'nope'" in unknown.stderr
    # a check from a host without the secret key: nothing secret is read, no key is made
    (data_dir / "secret.key").unlink()
    code, shown = status(data_dir)
    assert code == 1 and {s["objectId"] for s in shown} == {export_id, paused_id}
    assert not (data_dir / "secret.key").exists()


def test_a_paused_export_that_lost_sessions_to_retention_is_a_failure(tmp_path: Path) -> None:
    """Paused is no failure; sessions expired undelivered while it was paused are."""
    data_dir = tmp_path / "data"
    create_token(data_dir, "sessions.read")
    paused = export_value("https://collector.example/sessions")
    paused["endpointDefinition"]["enableUserSessionExport"] = False
    paused_id = create_export(data_dir, "https://collector.example/sessions", paused)
    assert status(data_dir)[0] == 0

    async def expire() -> None:
        store = create_store(data_dir)
        await store.open()
        try:
            await store.raise_alert(
                paused_id, "retention", "3 session(s) expired", "before delivery", now_ms()
            )
        finally:
            await store.close()

    asyncio.run(expire())
    code, shown = status(data_dir)
    assert code == 1
    assert shown[0]["state"] == "paused" and shown[0]["openAlerts"][0]["kind"] == "retention"
