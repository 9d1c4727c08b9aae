"""A server whose files cannot grow (a real file-size limit, ``RLIMIT_FSIZE``, as a full disk or a
quota would do it): ingest is refused with 503 and loses nothing it acknowledged; once the files may
grow again, writes and the WAL checkpoints both resume, with no restart."""

from __future__ import annotations

import re
import resource
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.e2e.test_cli_and_server import CLI, create_token, free_port, run
from tests.support.engine import sessions
from tests.support.processes import wait_healthy

LIMIT = 6 << 20  # bytes any file of the server may hold


def limit_file_size(limit: int = LIMIT) -> None:
    """In the server's process, before it starts: files stop at ``limit`` (writes past it fail with
    EFBIG instead of killing the process with SIGXFSZ); the hard limit stays, so it can be lifted."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


def test_writes_and_checkpoints_resume_when_the_files_may_grow_again(tmp_path: Path) -> None:
    token = create_token(tmp_path, "sessions.ingest,sessions.read")
    port = free_port()
    command = [*CLI, "serve", "--port", str(port), "--data-dir", str(tmp_path), "--no-exporters"]
    server = subprocess.Popen(
        command, preexec_fn=limit_file_size, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    database = tmp_path / "sessionexport.db"
    headers = {"Authorization": f"Api-Token {token}", "Content-Type": "application/x-ndjson"}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as client:
            wait_healthy(client, server)
            acknowledged, seed = 0, 0
            while True:  # ~800 KB a request, until the files are full
                seed += 1
                answer = client.post("/api/v2/usersessions", content=b"\n".join(sessions(100, seed=seed)))
                if answer.status_code != 200:
                    break
                acknowledged += answer.json()["accepted"]
                assert seed < 50, "the file-size limit was never reached"
                time.sleep(0.3)  # the checkpointer copies the WAL into the database meanwhile
            assert answer.status_code == 503, answer.text
            assert acknowledged >= 300 and database.stat().st_size <= LIMIT
            resource.prlimit(
                server.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
            )
            for more in range(seed, seed + 4):
                answer = client.post("/api/v2/usersessions", content=b"\n".join(sessions(100, seed=more)))
                assert answer.status_code == 200, answer.text
                acknowledged += answer.json()["accepted"]
            deadline = time.monotonic() + 20
            while database.stat().st_size <= LIMIT:  # the checkpoints copy the WAL in again
                assert time.monotonic() < deadline, "checkpoints did not resume"
                time.sleep(0.1)
            assert count_sessions(client) == acknowledged
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=30)
    assert "checkpoints fail" in output and "checkpoints succeed again" in output, output
    assert "Traceback" not in output, output


def count_sessions(client: httpx.Client) -> int:
    count, key = 0, None
    while True:
        params = {"nextPageKey": key} if key else {"pageSize": 500}
        page = client.get("/api/v2/usersessions", params=params).json()
        count += len(page["userSessions"])
        if not (key := page["nextPageKey"]):
            return count


def test_the_files_receiver_answers_a_full_disk_with_503_and_keeps_what_it_acknowledged(
    tmp_path: Path,
) -> None:
    port = free_port()
    command = [
        *CLI,
        "receive",
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path),
        "--storage",
        "files",
        "--http",
    ]
    receiver = subprocess.Popen(
        command, preexec_fn=limit_file_size, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            wait_healthy(client, receiver)
            stored, seed = 0, 0
            while True:
                seed += 1
                body = b"\n".join(sessions(100, seed=seed))
                answer = client.put(
                    "/export/events", content=body, headers={"Content-Type": "application/json"}
                )
                if answer.status_code != 200:
                    break
                stored += 100
                assert seed < 50, "the file-size limit was never reached"
            assert answer.status_code == 503 and answer.headers["retry-after"] == "60", answer.text
            assert "storage is full" in answer.text
            assert client.get("/received/counts").json()["sessions"] == stored  # the refused one undone
            resource.prlimit(
                receiver.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
            )
            again = client.put("/export/events", content=body, headers={"Content-Type": "application/json"})
            assert again.status_code == 200, again.text
            assert client.get("/received/counts").json()["sessions"] == stored + 100
    finally:
        receiver.send_signal(signal.SIGTERM)
        receiver.communicate(timeout=30)


def test_ingest_on_a_full_disk_says_up_to_which_line_all_is_stored(tmp_path: Path) -> None:
    lines = sessions(3000, seed=7)  # ~24 MB: more than the files may hold
    source = tmp_path / "sessions.ndjson"
    source.write_bytes(b"\n".join(lines) + b"\n")
    data_dir = tmp_path / "data"
    command = [*CLI, "ingest", str(source), "--data-dir", str(data_dir), "--batch-size", "100"]
    full = subprocess.run(command, preexec_fn=limit_file_size, capture_output=True, text=True, timeout=120)
    assert full.returncode == 2, full.stderr
    said = re.search(r"every valid session up to line (\d+) is stored, none after it", full.stderr)
    assert said, full.stderr
    stored = int(said[1])
    assert 0 < stored < len(lines) and stored % 100 == 0
    assert f"{stored} stored" in full.stderr
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)  # room again
    assert again.returncode == 0, again.stderr
    assert f"{len(lines) - stored} stored, {stored} duplicate(s)" in again.stderr


def test_a_rejects_file_that_could_not_be_written_holds_whole_lines_or_is_gone(tmp_path: Path) -> None:
    """A refused line that does not fit is cut off again, not left half written (the file holds
    only whole lines), and a rejects file that got none is removed: the same command runs again."""
    small, large = b'{"tenantId": 1}', b'{"tenantId": "' + b"x" * 100_000 + b'"}'
    data_dir = tmp_path / "data"
    assert (
        run(
            "tokens", "create", "--data-dir", str(data_dir), "--name", "n", "--scopes", "sessions.read"
        ).returncode
        == 0
    )
    for lines, kept in (([small, large], small + b"\n"), ([large], None)):
        source, rejects = tmp_path / "in.ndjson", tmp_path / "rejects.ndjson"
        source.write_bytes(b"\n".join(lines) + b"\n")
        command = [*CLI, "ingest", str(source), "--data-dir", str(data_dir), "--rejects", str(rejects)]
        full = subprocess.run(
            command, preexec_fn=lambda: limit_file_size(48 << 10), capture_output=True, text=True, timeout=120
        )
        assert full.returncode == 2, full.stderr
        assert f"cannot write refused line {len(lines)} to the rejects file" in full.stderr
        assert (rejects.read_bytes() if rejects.exists() else None) == kept
        rejects.unlink(missing_ok=True)
    again = run("ingest", str(source), "--data-dir", str(data_dir), "--rejects", str(rejects))
    assert again.returncode == 1, again.stderr  # a line refused, and kept this time
    assert rejects.read_bytes() == large + b"\n"


def test_a_database_that_cannot_be_opened_for_want_of_room_says_the_disk_is_full(tmp_path: Path) -> None:
    """Opening a database in WAL mode needs room for its -shm file; SQLite says only "disk I/O
    error" when there is none. The server, the reading commands and backup say what it is."""
    data_dir = tmp_path / "data"
    create_token(data_dir, "sessions.read")
    full = "the disk is full: the database's -shm file cannot grow"
    for command in (
        ["tokens", "list", "--data-dir", str(data_dir)],
        ["serve", "--data-dir", str(data_dir), "--port", str(free_port())],
        ["backup", str(tmp_path / "copy"), "--data-dir", str(data_dir)],
    ):
        refused = subprocess.run(
            [*CLI, *command],
            preexec_fn=lambda: limit_file_size(16 << 10),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode in (1, 2), (command, refused.stderr)
        assert full in refused.stderr, (command, refused.stderr)
    assert not (tmp_path / "copy").exists()
