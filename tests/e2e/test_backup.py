"""``sessionexport backup`` against a real server process that keeps ingesting meanwhile."""

from __future__ import annotations

import asyncio
import re
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest

from sessionexport.backup import backup
from sessionexport.clock import now_ms
from sessionexport.generate.sessions import GeneratorOptions, generate_lines
from sessionexport.ingest.documents import to_record
from sessionexport.model.validation import decode_session
from sessionexport.settings.objects import NewObject, SettingsService
from sessionexport.settings.schemas import EXPORT_SCHEMA
from sessionexport.settings.secrets import SecretBox, new_key
from sessionexport.store import DATABASE_FILE, create_store
from tests.e2e.test_cli_and_server import CLI, create_token, run, server

BATCH = 50
SCOPES = "sessions.ingest,sessions.read,settings.read,settings.write"


def paused_export_with_a_secret(url: str, headers: dict[str, str]) -> None:
    value = {
        "endpointDefinition": {
            "endpointUrl": "https://collector.example/export",
            "enableUserSessionExport": False,
        },
        "authentication": {
            "active": True,
            "authType": "basic",
            "basicAuth": {"username": "u", "password": "pw"},
        },
    }
    item = {
        "schemaId": "builtin:elasticsearch.user-session-export-settings-v2",
        "scope": "environment",
        "value": value,
    }
    response = httpx.post(f"{url}/api/v2/settings/objects", json=[item], headers=headers)
    assert response.status_code == 200, response.text


def test_a_backup_taken_during_ingest_is_a_snapshot_and_a_data_directory_of_its_own(tmp_path: Path) -> None:
    data, copy = tmp_path / "data", tmp_path / "backup"
    headers = {"Authorization": f"Api-Token {create_token(data, SCOPES)}"}
    sent: list[bytes] = []  # every session acknowledged, in order
    stop = threading.Event()

    def keep_ingesting(url: str) -> None:
        with httpx.Client(headers={**headers, "Content-Type": "application/x-ndjson"}) as client:
            seed = 1
            while not stop.is_set():
                batch = list(generate_lines(BATCH, seed, GeneratorOptions(end_ms=1_760_000_000_000)))
                client.post(f"{url}/api/v2/usersessions", content=b"\n".join(batch)).raise_for_status()
                sent.extend(batch)
                seed += 1

    with server(data) as url:
        paused_export_with_a_secret(url, headers)
        feeder = threading.Thread(target=keep_ingesting, args=(url,))
        feeder.start()
        try:
            while len(sent) < 20 * BATCH:
                stop.wait(0.05)
            before = len(sent)
            result = run("backup", str(copy), "--data-dir", str(data))
            after = len(sent)
        finally:
            stop.set()
            feeder.join()
    assert result.returncode == 0, result.stderr
    said = re.search(r"Backed up (\d+) session\(s\) and 1 export configuration\(s\)", result.stderr)
    assert said is not None, result.stderr
    kept = int(said[1])
    # a snapshot of one moment, while requests kept coming: each all or nothing
    assert before <= kept <= after and kept % BATCH == 0
    assert sorted(p.name for p in copy.iterdir()) == ["secret.key", "sessionexport.db"]
    assert stat.S_IMODE((copy / "secret.key").stat().st_mode) == 0o600

    with server(copy) as url:  # the backup is a data directory: the same token, sessions, export
        listed: list[bytes] = []
        key: str | None = None
        while True:
            params = {"nextPageKey": key} if key else {"pageSize": 500}
            page = httpx.get(f"{url}/api/v2/usersessions", params=params, headers=headers).json()
            listed += [orjson.dumps(s) for s in page["userSessions"]]
            if not (key := page["nextPageKey"]):
                break
        assert sorted(listed) == sorted(sent[:kept])
    rotated = run("secrets", "rotate", "--data-dir", str(copy))  # the copied key reads the stored secret
    assert rotated.returncode == 0, rotated.stderr
    assert "Re-encrypted the secrets of 1 settings object(s)" in rotated.stderr


def test_backup_refuses_a_taken_target_a_wrong_data_dir_and_postgresql(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "something").write_text("x")
    data = tmp_path / "data"
    create_token(data, "sessions.read")
    refused = run("backup", str(taken), "--data-dir", str(data))
    assert refused.returncode == 2 and "exists and is not an empty folder" in refused.stderr
    assert sorted(p.name for p in taken.iterdir()) == ["something"]
    missing = run("backup", str(tmp_path / "new"), "--data-dir", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "give the server's --data-dir" in missing.stderr
    assert not (tmp_path / "new").exists()
    url = f"sqlite:///{tmp_path / 'nowhere.db'}"
    missing = run("backup", str(tmp_path / "new"), "--database-url", url)  # named by the option given
    assert missing.returncode == 2 and "give the server's --database-url" in missing.stderr, missing.stderr
    postgres = run("backup", str(tmp_path / "new"), "--database-url", "postgresql://u@db/sessions")
    assert postgres.returncode == 2 and "back it up with pg_dump" in postgres.stderr


def test_a_stopped_backup_leaves_nothing_and_its_folder_can_be_used_again(tmp_path: Path) -> None:
    data, copy = tmp_path / "data#1", tmp_path / "backup"  # '#' would cut a file: URI short
    assert (
        run(
            "generate",
            "--count",
            "3000",
            "--seed",
            "2",
            "--kind",
            "web",
            "--output",
            str(tmp_path / "s.ndjson"),
        ).returncode
        == 0
    )
    assert run("ingest", str(tmp_path / "s.ndjson"), "--data-dir", str(data)).returncode == 0
    for _ in range(3):  # a larger database: the copy takes a moment
        run("ingest", str(tmp_path / "s.ndjson"), "--data-dir", str(data))
    files_before = sorted(p.name for p in data.iterdir())
    proc = subprocess.Popen([*CLI, "backup", str(copy), "--data-dir", str(data)], stderr=subprocess.PIPE)
    assert _wait_for(copy / "sessionexport.db.partial")
    proc.send_signal(signal.SIGSTOP)  # caught mid-copy: stopped as systemd or timeout would stop it
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert f"interrupted: backup stopped, nothing kept in {copy}" in stderr.decode()
    assert not copy.exists()  # the folder it made is gone too
    # leftovers of a killed backup do not make the folder taken
    copy.mkdir()
    (copy / "sessionexport.db.partial").write_bytes(b"half a copy")
    result = run("backup", str(copy), "--data-dir", str(data))
    assert result.returncode == 0, result.stderr
    assert "Backed up 3000 session(s)" in result.stderr
    assert sorted(p.name for p in copy.iterdir()) == ["sessionexport.db"]  # no key: no server made one
    # backing up a stopped server leaves its data directory as it was (no -wal or -shm left)
    assert sorted(p.name for p in data.iterdir()) == files_before


def test_ctrl_c_stops_the_copy_between_steps_and_nothing_is_kept(tmp_path: Path) -> None:
    data, copy = tmp_path / "data", tmp_path / "backup"
    asyncio.run(_store_sessions(data, 3000))  # several copy steps
    reports: list[tuple[int, int]] = []

    def ctrl_c_at_the_first_report(done: int, total: int) -> None:
        reports.append((done, total))
        signal.raise_signal(signal.SIGINT)  # as the terminal sends it, to the main thread

    with pytest.raises(KeyboardInterrupt):
        backup(data / DATABASE_FILE, None, copy, ctrl_c_at_the_first_report)
    # heard after the first step, not once the whole database was copied
    assert len(reports) == 1 and 0 < reports[0][0] < reports[0][1]
    assert not copy.exists()
    result = backup(data / DATABASE_FILE, None, copy, lambda done, total: reports.append((done, total)))
    assert result.sessions == 3000 and reports[-1][0] == reports[-1][1] == result.bytes


async def _store_sessions(data: Path, count: int) -> None:
    store = create_store(data)
    await store.open()
    try:
        lines = generate_lines(count, 3, GeneratorOptions(end_ms=1_760_000_000_000))
        await store.append_sessions([to_record(decode_session(line), line) for line in lines], now_ms())
    finally:
        await store.close()


def _wait_for(path: Path) -> bool:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.001)
    return False


def test_with_the_key_from_the_environment_the_key_file_beside_it_is_not_backed_up(tmp_path: Path) -> None:
    """After a rotation, the data directory's secret.key is the old key: restored with the backup,
    it would start a server that cannot read the exports' secrets."""
    data, key = tmp_path / "data", new_key()
    asyncio.run(_export_with_a_secret(data, key))
    (data / "secret.key").write_text(new_key())  # stale: not the key the secrets are encrypted with
    result = run(
        "backup", str(tmp_path / "copy"), "--data-dir", str(data), env={"SESSIONEXPORT_SECRET_KEY": key}
    )
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "copy" / "secret.key").exists()
    assert "The secret key is not in the backup (it comes from SESSIONEXPORT_SECRET_KEY)" in result.stderr


def test_a_key_file_that_cannot_decrypt_the_secrets_is_copied_with_a_warning(tmp_path: Path) -> None:
    """Backed up without the environment's key (a server that runs on SESSIONEXPORT_SECRET_KEY,
    or rotated since): the key file copied is not the one the secrets need, and that is said."""
    data, key = tmp_path / "data", new_key()
    asyncio.run(_export_with_a_secret(data, key))
    (data / "secret.key").write_text(new_key())
    stale = run("backup", str(tmp_path / "stale"), "--data-dir", str(data))
    assert stale.returncode == 0, stale.stderr
    assert "the secret.key copied: it cannot decrypt the stored passwords" in " ".join(stale.stderr.split())
    (data / "secret.key").write_text("garbage\n")  # no key at all: said as such
    garbage = run("backup", str(tmp_path / "garbage"), "--data-dir", str(data))
    assert garbage.returncode == 0, garbage.stderr
    said = " ".join(garbage.stderr.split())
    assert "the secret.key copied: it holds no key the server could run with" in said, said
    (data / "secret.key").write_text(key)
    fitting = run("backup", str(tmp_path / "fitting"), "--data-dir", str(data))
    assert fitting.returncode == 0 and "warning" not in fitting.stderr, fitting.stderr


async def _export_with_a_secret(data: Path, key: str) -> None:
    store = create_store(data)
    await store.open()
    try:
        settings = SettingsService(store, SecretBox([key.encode()]))
        basic = {"active": True, "authType": "basic", "basicAuth": {"username": "u", "password": "pw"}}
        value = {
            "endpointDefinition": {"endpointUrl": "https://collector.example/export"},
            "authentication": basic,
        }
        created = await settings.create(NewObject(EXPORT_SCHEMA, "environment", value), "test", now_ms())
        assert created.ok, created
    finally:
        await store.close()
