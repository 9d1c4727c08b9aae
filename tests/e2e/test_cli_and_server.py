"""The command line and a real server process on loopback, as a user runs them."""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import gzip
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest

from sessionexport.listening import GRACEFUL_SHUTDOWN_SECONDS
from sessionexport.receiver.store import DATABASE_FILE, create_received_store
from sessionexport.receiver.store.base import ReceivedStore
from sessionexport.receiver.store.sqlite import SQLiteReceivedStore
from tests.conftest import sample
from tests.support.folders import read_only_view
from tests.support.postgres import fresh_schema
from tests.support.processes import wait_for

CLI = [sys.executable, "-m", "sessionexport"]


def run(
    *args: str, input: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        input=input.decode() if input else None,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@contextmanager
def killed_at_the_end(proc: subprocess.Popen[str]) -> Iterator[None]:
    """However the test ends, the process does not outlive it."""
    try:
        yield
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def as_background_job() -> None:
    """Started as a shell script's ``cmd &`` starts its background jobs: with SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# Ctrl-C; SIGTERM (systemd, timeout, kill); SIGTERM to a background job of a script.
STOPS = [(signal.SIGINT, None), (signal.SIGTERM, None), (signal.SIGTERM, as_background_job)]
STOP_IDS = ["ctrl-c", "sigterm", "sigterm-background-job"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(data_dir: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [*CLI, "serve", "--port", str(port)],
        env={**os.environ, "SESSIONEXPORT_DATA_DIR": str(data_dir)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
        # uvicorn shuts down gracefully, then re-raises the signal as its exit status
        assert proc.returncode in (0, -signal.SIGTERM), output
        assert "listening on" in output and "Application shutdown complete" in output


@pytest.mark.parametrize(
    ("command", "said"),
    [
        (["serve", "--port"], re.compile(r"listening on (http://127\.0\.0\.1:\d+) ")),
        (
            ["receive", "--http", "--port"],
            re.compile(r"receiving on (http://127\.0\.0\.1:\d+)/export/events"),
        ),
    ],
    ids=["serve", "receive"],
)
def test_port_0_says_the_port_the_system_chose(
    tmp_path: Path, command: list[str], said: re.Pattern[str]
) -> None:
    """It said "listening on http://127.0.0.1:0", where nothing can connect."""
    proc = subprocess.Popen(
        [*CLI, *command, "0", "--data-dir", str(tmp_path / "data")], stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        found = None
        while found is None:
            line = proc.stderr.readline()
            assert line, "it ended without saying where it listens"
            found = said.search(line)
        assert not found[1].endswith(":0")
        assert httpx.get(f"{found[1]}/health", timeout=10).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_receive_refuses_a_certificate_with_http_and_warns_of_http_off_loopback(tmp_path: Path) -> None:
    """--http served plain HTTP, the certificate given left unused without a word."""
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("unused"), key.write_text("unused")
    result = run(
        "receive", "--http", "--tls-cert", str(cert), "--tls-key", str(key), "--data-dir", str(tmp_path / "d")
    )
    assert result.returncode == 2, result.stderr
    assert "--http serves plain HTTP, without --tls-cert and --tls-key" in result.stderr
    # a host off loopback (one that does not resolve: it warns, then stops before listening)
    result = run("receive", "--http", "--host", "receiver.invalid", "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2, result.stderr
    assert (
        "plain HTTP on receiver.invalid: sessions and credentials cross the network in clear" in result.stderr
    )


@pytest.mark.parametrize(
    "command",
    [["serve", "--port"], ["worker", "--metrics-port"], ["receive", "--http", "--port"]],
    ids=["serve", "worker", "receive"],
)
def test_a_taken_port_is_one_line_and_exit_2_before_saying_where_it_listens(
    tmp_path: Path, command: list[str]
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run(*command, str(port), "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert "listening on" not in result.stderr and "receiving on" not in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_stops_the_server_in_bounded_time_while_a_client_holds_a_request_open(tmp_path: Path) -> None:
    """A client that sends 5 bytes of a 1 MB body and waits would hold the server up for as long
    as it waits: requests under way get GRACEFUL_SHUTDOWN_SECONDS, then the server stops."""
    token = create_token(tmp_path / "data", "sessions.ingest")  # else refused before its body is read
    stalled = socket.socket()
    try:
        with server(tmp_path / "data") as url:
            stalled.connect(("127.0.0.1", int(url.rsplit(":", 1)[1])))
            stalled.sendall(
                b"POST /api/v2/usersessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
                + f"Authorization: Api-Token {token}\r\n".encode()
                + b'Content-Length: 1000000\r\n\r\n{"ten'
            )
            time.sleep(0.5)
            stopping = time.monotonic()
        # the server context asserts a clean stop; it took the grace period, not the client's patience
        assert time.monotonic() - stopping < GRACEFUL_SHUTDOWN_SECONDS + 8
    finally:
        stalled.close()


def create_token(data_dir: Path, scopes: str) -> str:
    result = run("tokens", "create", "--data-dir", str(data_dir), "--name", "e2e", "--scopes", scopes)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_sessions_survive_a_server_restart(tmp_path: Path) -> None:
    token = create_token(tmp_path, "sessions.ingest,sessions.read")
    headers = {"Authorization": f"Api-Token {token}"}
    body = sample("doc-mobile-session.json") + b"\n" + sample("doc-web-synthetic-session.json") + b"\n"
    with server(tmp_path) as url:
        response = httpx.post(
            f"{url}/api/v2/usersessions",
            content=body,
            headers={**headers, "Content-Type": "application/x-ndjson"},
        )
        assert response.json() == {"accepted": 2, "duplicates": 0}
    with server(tmp_path) as url:
        listed = httpx.get(f"{url}/api/v2/usersessions", headers=headers).json()["userSessions"]
        assert {s["userSessionId"] for s in listed} == {"1394_1008", "744377345"}
        again = httpx.post(
            f"{url}/api/v2/usersessions",
            content=body,
            headers={**headers, "Content-Type": "application/x-ndjson"},
        )
        assert again.json() == {"accepted": 0, "duplicates": 2}


def test_token_create_prints_token_alone_on_last_line_and_revoke_works(tmp_path: Path) -> None:
    token = create_token(tmp_path, "sessions.read")
    assert token.startswith("se0c01.") and len(token.split(".")) == 3
    listing = run("tokens", "list", "--data-dir", str(tmp_path), env={"COLUMNS": "60"})  # a narrow terminal
    assert token.split(".")[1] in listing.stdout and token.split(".")[2] not in listing.stdout
    with server(tmp_path) as url:
        headers = {"Authorization": f"Api-Token {token}"}
        assert httpx.get(f"{url}/api/v2/usersessions", headers=headers).status_code == 200
        revoked = run("tokens", "revoke", token.split(".")[1], "--data-dir", str(tmp_path))
        assert revoked.returncode == 0, revoked.stderr
        assert httpx.get(f"{url}/api/v2/usersessions", headers=headers).status_code == 401


def test_a_token_created_or_sessions_ingested_in_a_new_data_directory_say_so(tmp_path: Path) -> None:
    """A mistyped --data-dir makes a database of its own: the token works nowhere else, and the
    sessions are exported by nothing."""
    args = (
        "tokens",
        "create",
        "--data-dir",
        str(tmp_path / "typo"),
        "--name",
        "t",
        "--scopes",
        "sessions.read",
    )
    first, second = run(*args), run(*args)
    assert first.returncode == second.returncode == 0
    assert "(a new database: the server must run with this --data-dir)" in " ".join(first.stderr.split())
    assert "a new database" not in second.stderr
    sessions = tmp_path / "s.ndjson"
    assert run("generate", "--count", "2", "--output", str(sessions)).returncode == 0
    into_new, into_known = (
        run("ingest", str(sessions), "--data-dir", str(tmp_path / d)) for d in ("typo2", "typo")
    )
    assert (
        "in a new database" in into_new.stderr
        and "the server must run with this --data-dir" in into_new.stderr
    )
    assert "new database" not in into_known.stderr


@pytest.mark.parametrize("columns", [80, 30])
def test_the_token_list_reads_whole_in_80_columns_and_loses_nothing_in_fewer(
    tmp_path: Path, columns: int
) -> None:
    """Narrower, the table keeps its width (the terminal wraps its lines): no column is dropped
    or cut, the state least of all."""
    every = "sessions.ingest,sessions.read,settings.read,settings.write,exports.manage,metrics.read"
    created = run(
        "tokens", "create", "--data-dir", str(tmp_path), "--name", "pipeline", "--scopes", every,
        "--expires-in", "90d",
    )  # fmt: skip
    token_id = created.stdout.strip().splitlines()[-1].split(".")[1]
    listing = run("tokens", "list", "--data-dir", str(tmp_path), env={"COLUMNS": str(columns)}).stdout
    lines = listing.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in listing
    cells = {cell for line in lines for cell in line.split()}
    assert {token_id, "pipeline", *every.split(","), "expires"} <= cells
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\dZ", listing)  # when it expires, to the minute


def test_token_create_refuses_unknown_scope(tmp_path: Path) -> None:
    result = run("tokens", "create", "--data-dir", str(tmp_path), "--name", "x", "--scopes", "sessions.write")
    assert result.returncode == 2
    assert "unknown scope(s) sessions.write" in result.stderr


def test_generate_is_deterministic_and_ingest_reports_bad_lines(tmp_path: Path) -> None:
    first, second = tmp_path / "a.ndjson", tmp_path / "b.ndjson"
    for out in (first, second):
        result = run(
            "generate",
            "--count",
            "50",
            "--seed",
            "7",
            "--kind",
            "web",
            "--end",
            "2026-01-01T00:00:00Z",
            "--output",
            str(out),
        )
        assert result.returncode == 0, result.stderr
    assert first.read_bytes() == second.read_bytes()
    good = first.read_bytes().splitlines()
    bad = b'{"tenantId":"t","userSessionId":"x","startTime":"soon"}'
    not_utf8 = b'{"tenantId":"\xff","userSessionId":"y","startTime":1622107543233}'
    mixed = tmp_path / "mixed.ndjson"
    mixed.write_bytes(b"\n".join([*good[:10], bad, b"", *good[10:40], not_utf8, *good[40:]]) + b"\n")
    rejects = tmp_path / "rejects.ndjson"
    result = run(
        "ingest", str(mixed), "--rejects", str(rejects), env={"SESSIONEXPORT_DATA_DIR": str(tmp_path / "d")}
    )
    assert result.returncode == 1
    assert "line 11, startTime: expected integer, got string" in result.stderr
    assert "line 43: not UTF-8: byte 0xff at offset 13" in result.stderr
    assert "50 stored, 0 duplicate(s), 2 refused" in result.stderr
    assert rejects.read_bytes() == bad + b"\n" + not_utf8 + b"\n"
    for kept in (rejects, mixed):  # earlier rejects, or the input itself: never overwritten
        before = kept.read_bytes()
        refused = run("ingest", str(mixed), "--rejects", str(kept), "--data-dir", str(tmp_path / "d"))
        assert refused.returncode == 2 and f"--rejects {kept} exists: give a new file" in refused.stderr
        assert kept.read_bytes() == before
    nowhere = run(
        "ingest", str(mixed), "--rejects", str(tmp_path / "no" / "r"), "--data-dir", str(tmp_path / "d")
    )
    assert (
        nowhere.returncode == 2
        and "cannot create --rejects" in nowhere.stderr
        and "Traceback" not in nowhere.stderr
    )
    to_device = run("ingest", str(mixed), "--rejects", "/dev/null", "--data-dir", str(tmp_path / "d"))
    assert to_device.returncode == 1, to_device.stderr  # a device, not a file: written to
    full = run("ingest", str(mixed), "--rejects", "/dev/full", "--data-dir", str(tmp_path / "fresh"))
    assert full.returncode == 2 and "Traceback" not in full.stderr
    assert "cannot write refused line 11 to the rejects file (No space left on device)" in full.stderr
    assert "every valid session before line 11 is stored, none from it on" in full.stderr
    assert "10 stored, 0 duplicate(s), 1 refused" in full.stderr  # the lines before it
    unreachable = "postgresql://u:p@127.0.0.1:1/db?connect_timeout=1"
    failed_store = run(
        "ingest", str(mixed), "--rejects", str(tmp_path / "r2.ndjson"), "--database-url", unreachable
    )
    assert failed_store.returncode == 2 and not (tmp_path / "r2.ndjson").exists()  # nothing went to it
    unused = tmp_path / "unused-rejects.ndjson"
    for _ in range(2):  # nothing refused: no file left behind, so the same command runs again
        clean = run("ingest", str(first), "--rejects", str(unused), "--data-dir", str(tmp_path / "d"))
        assert clean.returncode == 0, clean.stderr
        assert not unused.exists()
    missing = run("ingest", str(tmp_path / "nowhere.ndjson"), "--data-dir", str(tmp_path / "d"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr
    again = run("ingest", str(first), "--data-dir", str(tmp_path / "d"))
    assert again.returncode == 0 and "0 stored, 50 duplicate(s)" in again.stderr


def ingest_piped(data_dir: Path, piped: bytes) -> subprocess.CompletedProcess[bytes]:
    command = [*CLI, "ingest", "-", "--data-dir", str(data_dir)]
    return subprocess.run(command, input=piped, capture_output=True, timeout=120, check=False)


def test_ingest_reads_gzip_files_and_standard_input(tmp_path: Path) -> None:
    plain, packed = tmp_path / "sessions.ndjson", tmp_path / "sessions.ndjson.gz"
    for output in (plain, packed):
        assert run("generate", "--count", "400", "--seed", "9", "--output", str(output)).returncode == 0
    assert gzip.decompress(packed.read_bytes()) == plain.read_bytes()  # .gz: written gzip
    header = packed.read_bytes()
    assert header[3] & 0x08 and header[10:].split(b"\0", 1)[0] == b"sessions.ndjson"  # gunzip -N's name
    packed = packed.rename(tmp_path / "sessions.data")  # read as gzip, whatever the name says
    result = run("ingest", str(packed), "--data-dir", str(tmp_path / "a"))
    assert result.returncode == 0 and "400 stored, 0 duplicate(s), 0 refused of 400 line(s)" in result.stderr
    piped = ingest_piped(tmp_path / "b", plain.read_bytes())
    assert piped.returncode == 0 and b"400 stored" in piped.stderr
    piped = ingest_piped(tmp_path / "b", packed.read_bytes())
    assert piped.returncode == 0 and b"0 stored, 400 duplicate(s)" in piped.stderr


def test_ingest_takes_a_file_that_starts_with_a_byte_order_mark(tmp_path: Path) -> None:
    """As Windows tools write UTF-8 files (Notepad, PowerShell 5's Out-File)."""
    one = b'{"tenantId":"t","userSessionId":"%d","startTime":1622107543233}'
    source = tmp_path / "bom.ndjson"
    source.write_bytes(b"\xef\xbb\xbf" + one % 1 + b"\r\n" + one % 2 + b"\r\n")
    result = run("ingest", str(source), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 0, result.stderr
    assert "2 stored, 0 duplicate(s), 0 refused of 2 line(s)" in result.stderr


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
def test_a_line_of_exactly_the_limit_is_taken_whatever_its_ending(tmp_path: Path, ending: bytes) -> None:
    one = b'{"tenantId":"t","userSessionId":"%d","startTime":1622107543233,"x":"%s"}'
    exact = one % (1, b"y" * (2048 - len(one % (1, b""))))
    over = one % (2, b"y" * (2049 - len(one % (2, b""))))
    source = tmp_path / "s.ndjson"
    source.write_bytes(ending.join([exact, over, one % (3, b"")]) + ending)
    result = run("ingest", str(source), "--max-line-bytes", "2048", "--data-dir", str(tmp_path / "d"))
    assert len(exact) == 2048 and "line 2: longer than 2,048 bytes (2,049)" in result.stderr
    assert "2 stored, 0 duplicate(s), 1 refused of 3 line(s)" in result.stderr  # the line after it too


@pytest.mark.parametrize("tail", [b"\r", b"\r\r\n", b" \n"], ids=["cr-at-the-end", "cr-crlf", "space-lf"])
def test_a_refused_line_s_size_counts_every_byte_but_its_line_end(tmp_path: Path, tail: bytes) -> None:
    """The limit and the size it reports measure the same thing: a line's bytes without its
    "\n" or "\r\n" (a line at the limit and one more byte before its end is over it, and says so)."""
    one = b'{"tenantId":"t","userSessionId":"1","startTime":1622107543233,"x":"%s"}'
    exact = one % (b"y" * (2048 - len(one % b"")))
    source = tmp_path / "s.ndjson"
    source.write_bytes(exact + tail)
    result = run("ingest", str(source), "--max-line-bytes", "2048", "--data-dir", str(tmp_path / "d"))
    assert "line 1: longer than 2,048 bytes (2,049)" in result.stderr, result.stderr


@pytest.mark.parametrize("packed", [False, True])
def test_a_line_over_the_limit_is_refused_without_being_held_whole(tmp_path: Path, packed: bool) -> None:
    """A session the API would refuse (over its body limit) is refused here too, with its size;
    a JSON array on one line is told to be one. The lines around it are stored."""
    one = b'{"tenantId":"t","userSessionId":"%d","startTime":1622107543233}'
    large = one.replace(b"}", b',"x":"' + b"y" * 5000 + b'"}') % 2
    array = b"[" + b",".join(one % n for n in range(100, 300)) + b"]"
    short_array = b"[" + one % 4 + b"]"
    marked_up = one.replace(b"}", b',"dateProperties":[{"value":"[/red]x"}]}') % 5
    body = b"\n".join([one % 1, large, array, one % 3, short_array, marked_up]) + b"\n"
    source = tmp_path / "s.ndjson"
    source.write_bytes(gzip.compress(body) if packed else body)
    rejects = tmp_path / "rejects.ndjson"
    result = run(
        "ingest",
        str(source),
        "--max-line-bytes",
        "4096",
        "--rejects",
        str(rejects),
        "--data-dir",
        str(tmp_path / "d"),
    )
    assert result.returncode == 1, result.stderr
    assert f"line 2: longer than 4,096 bytes ({len(large):,}): not stored" in result.stderr
    assert (
        "line 3: longer than 4,096 bytes" in result.stderr
        and "a JSON array: ingest takes NDJSON" in result.stderr
    )
    assert "line 5: expected object, got array (a JSON array: ingest takes NDJSON" in result.stderr
    assert (
        "line 6, dateProperties[0].value: '[/red]x' is not an ISO-8601 date-time" in result.stderr
    )  # as sent
    assert "2 stored, 0 duplicate(s), 4 refused of 6 line(s)" in result.stderr
    assert rejects.read_bytes() == short_array + b"\n" + marked_up + b"\n"  # the long two were never held


def test_ingest_reads_a_pipe_that_gives_the_gzip_magic_a_byte_at_a_time_and_a_fifo(tmp_path: Path) -> None:
    packed = tmp_path / "sessions.NDJSON.GZ"  # the suffix in any case
    assert run("generate", "--count", "300", "--seed", "4", "--output", str(packed)).returncode == 0
    data = packed.read_bytes()
    assert data[:2] == b"\x1f\x8b"
    command = [*CLI, "ingest", "-", "--data-dir", str(tmp_path / "a")]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write(data[:1])
    proc.stdin.flush()
    time.sleep(0.3)  # the first read of the pipe gets one byte
    proc.stdin.write(data[1:])
    proc.stdin.close()
    assert proc.stderr is not None
    stderr = proc.stderr.read()
    proc.wait(120)
    assert proc.returncode == 0 and b"300 stored, 0 duplicate(s), 0 refused" in stderr, stderr
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_bytes, args=(data,))
    writer.start()
    result = run("ingest", str(fifo), "--data-dir", str(tmp_path / "b"))
    writer.join()
    assert result.returncode == 0 and "300 stored" in result.stderr, result.stderr


def test_ingest_of_a_cut_gzip_file_stores_what_came_before_and_says_where_it_stopped(tmp_path: Path) -> None:
    plain = tmp_path / "sessions.ndjson"
    assert run("generate", "--count", "2000", "--seed", "9", "--output", str(plain)).returncode == 0
    packed = gzip.compress(plain.read_bytes())
    cut = tmp_path / "cut.ndjson.gz"
    cut.write_bytes(packed[: len(packed) // 2])
    result = run("ingest", str(cut), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 1
    said = re.search(r"(\d+) stored, 0 duplicate\(s\), 0 refused of (\d+) line\(s\)", result.stderr)
    assert said is not None, result.stderr
    stored = int(said[1])
    assert 0 < stored < 2000 and int(said[2]) == stored
    assert f"error: cannot read {cut} after line {stored}: the gzip stream ends early" in result.stderr
    # what was stored is what the file held up to there: the rest ingests from the whole file
    again = run("ingest", str(plain), "--data-dir", str(tmp_path / "d"))
    assert f"{2000 - stored} stored, {stored} duplicate(s)" in again.stderr


def test_generate_to_stdout_and_every_command_has_help() -> None:
    out = run("generate", "--count", "3", "--seed", "1", "--kind", "mobile")
    docs = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(docs) == 3 and {d["applicationType"] for d in docs} == {"MOBILE_APPLICATION"}
    for command in (
        ["serve"],
        ["ingest"],
        ["generate"],
        ["tokens", "create"],
        ["tokens", "list"],
        ["tokens", "revoke"],
    ):
        helped = run(*command, "--help")
        assert helped.returncode == 0 and "Usage" in helped.stdout, command


def test_generate_events_into_a_server_become_sessions(tmp_path: Path) -> None:
    data = tmp_path / "data"
    token = run(
        "tokens",
        "create",
        "--data-dir",
        str(data),
        "--name",
        "gen",
        "--scopes",
        "sessions.ingest,sessions.read",
    )
    secret = token.stdout.strip().splitlines()[-1]
    with server(data) as url:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        sent = run(
            "generate", "--events", "--count", "15", "--seed", "4", "--kind", "web", "--end", now,
            "--duplicates", "0.1", "--server", url, "--token", secret,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        totals = json.loads(sent.stdout)
        assert totals["accepted"] > 0 and totals["duplicates"] > 0 and totals["late"] == 0
        deadline = time.monotonic() + 30  # completed once quiet for a few seconds (end events)
        while True:
            page = httpx.get(
                f"{url}/api/v2/usersessions", headers={"Authorization": f"Api-Token {secret}"}
            ).json()
            if len(page["userSessions"]) >= 8:
                break
            assert time.monotonic() < deadline, page
            time.sleep(0.5)
        # ended explicitly, or hours old and idle past the 30 min timeout already
        assert {s["endReason"] for s in page["userSessions"]} <= {"END_EVENT", "TIMEOUT"}
        assert len({s["userSessionId"] for s in page["userSessions"]}) == len(page["userSessions"])
        refused = run("generate", "--events", "--count", "1", "--server", url, "--token", "wrong")
        assert refused.returncode == 1 and "401" in refused.stderr


def test_json_logs_are_one_object_per_line_from_start_to_stop(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [*CLI, "--log-format", "json", "serve", "--port", str(port), "--data-dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, errors = proc.communicate(timeout=30)
    lines = errors.splitlines()
    entries = [json.loads(line) for line in lines]  # every line, the start-up line included
    assert any("listening on" in e["message"] for e in entries)
    assert not [line for line in lines if "\x1b[" in line]  # no terminal colour codes
    assert all("color_message" not in e for e in entries)


def test_json_logs_carry_a_failed_start_and_its_warnings_too(tmp_path: Path) -> None:
    with socket.socket() as taken:  # on loopback: all interfaces cannot have that port either
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        everywhere = "0.0.0.0"  # noqa: S104  (the warning is about it; the port is taken: nothing listens)
        args = (
            "--log-format",
            "json",
            "serve",
            "--host",
            everywhere,
            "--port",
            port,
            "--data-dir",
            str(tmp_path),
        )
        failed = run(*args)
    assert failed.returncode == 2, failed.stderr
    entries = [json.loads(line) for line in failed.stderr.splitlines()]  # every line is an object
    assert [e["level"] for e in entries] == ["warning", "error"], entries
    assert "plain HTTP on 0.0.0.0" in entries[0]["message"] and "in use" in entries[1]["message"]


def test_reading_commands_say_when_the_data_directory_is_wrong(tmp_path: Path) -> None:
    """Instead of creating an empty database there and answering from it."""
    elsewhere = tmp_path / "not-the-servers"
    for command in (["tokens", "list"], ["tokens", "revoke", "X" * 24]):
        result = run(*command, "--data-dir", str(elsewhere))
        assert result.returncode == 2 and f"no data at {elsewhere}" in result.stderr, command
    typo = elsewhere / "sessionexport.db"
    for command in (["tokens", "list"], ["export", "status"], ["secrets", "rotate"]):
        named_db = run(*command, "--database-url", f"sqlite:///{typo}", "--data-dir", str(elsewhere))
        assert named_db.returncode == 2, command
        assert f"no data at {typo}: give the server's --database-url" in named_db.stderr, command
    rotated = run("secrets", "rotate", "--data-dir", str(elsewhere))
    assert rotated.returncode == 2 and f"no data at {elsewhere}" in rotated.stderr  # and no key file made
    received = run("received", "counts", "--data-dir", str(elsewhere))
    assert received.returncode == 2 and "give the receiver's --data-dir" in received.stderr
    database = elsewhere / "received.db"
    named = run("received", "counts", "--storage", f"sqlite:///{database}")
    assert named.returncode == 2 and f"no data at {database}: give the receiver's --storage" in named.stderr
    assert not elsewhere.exists()
    created = run(
        "tokens", "create", "--data-dir", str(elsewhere), "--name", "n", "--scopes", "sessions.read"
    )
    assert f"in {elsewhere / 'sessionexport.db'}" in created.stderr  # where the token went


def _tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()").fetchall()
        return [row[0] for row in rows]


def test_reading_commands_refuse_a_database_that_holds_no_data_and_create_nothing_there(
    tmp_path: Path, postgres_url: str
) -> None:
    """A URL that names the wrong database or schema, or a path of an empty file: said so, not
    answered with zeros from a schema made there for the occasion."""
    empty = tmp_path / "empty.db"
    empty.touch()
    with fresh_schema(postgres_url) as wrong:
        for where in (f"sqlite:///{empty}", wrong):
            for command in (["tokens", "list"], ["export", "status"]):
                result = run(*command, "--database-url", where, "--data-dir", str(tmp_path / "d"))
                assert result.returncode == 2, (command, result.stderr)
                assert "it holds no data of this store (a wrong database or path?)" in result.stderr
            received = run("received", "counts", "--storage", where)
            assert received.returncode == 2 and "holds no data of this store" in received.stderr
        assert _tables(wrong) == []
    assert empty.stat().st_size == 0


async def _open_and_close(store: ReceivedStore) -> None:
    await store.open()
    await store.close()


def test_reading_commands_read_a_database_that_may_not_be_written_and_change_nothing(tmp_path: Path) -> None:
    """A snapshot on a read-only mount, or a monitoring user's look at the server's files: the
    reading commands answer from it, live or not, and a command that writes says why it cannot."""
    data = tmp_path / "data"
    token = run("tokens", "create", "--data-dir", str(data), "--name", "first", "--scopes", "sessions.read")
    assert token.returncode == 0, token.stderr
    asyncio.run(_open_and_close(SQLiteReceivedStore(data / DATABASE_FILE)))  # a receiver's store too
    # The database in use: read through its writer's -shm file, as the writer changes it.
    with server(data), read_only_view(data, tmp_path / "view") as view:
        later = run(
            "tokens", "create", "--data-dir", str(data), "--name", "later", "--scopes", "sessions.read"
        )
        assert later.returncode == 0, later.stderr
        listed = run("tokens", "list", "--data-dir", str(view))
        assert listed.returncode == 0, listed.stderr
        assert "first" in listed.stdout and "later" in listed.stdout
    (tmp_path / "none.ndjson").write_bytes(b"")
    before = (data / "sessionexport.db").read_bytes()
    assert not (data / "sessionexport.db-wal").exists()  # closed: everything is in the file
    with read_only_view(data, tmp_path / "view2") as view:
        listed = run("tokens", "list", "--data-dir", str(view))
        assert listed.returncode == 0 and "later" in listed.stdout, listed.stderr
        counts = run("received", "counts", "--data-dir", str(view))
        assert counts.returncode == 0, counts.stderr
        status = run("export", "status", "--data-dir", str(view))
        assert status.returncode == 0 and "No user session export is configured" in status.stderr
        public = listed.stdout.split("\n")[1].split()[0]
        for writing in (
            ["tokens", "revoke", public],
            ["tokens", "create", "--name", "n", "--scopes", "sessions.read"],
            ["ingest", str(tmp_path / "none.ndjson")],
        ):
            refused = run(*writing, "--data-dir", str(view))
            assert refused.returncode == 2, (writing, refused.stderr)
            assert "is read-only here (a read-only filesystem, or no permission to write it" in refused.stderr
            assert "nothing was changed" in refused.stderr
        copied = run("backup", str(tmp_path / "copy"), "--data-dir", str(view))  # a snapshot backed up
        assert copied.returncode == 0, copied.stderr
        assert "later" in run("tokens", "list", "--data-dir", str(tmp_path / "copy")).stdout
    assert (data / "sessionexport.db").read_bytes() == before
    assert sorted(path.name for path in data.iterdir()) == [DATABASE_FILE, "secret.key", "sessionexport.db"]
    assert "active" in run("tokens", "list", "--data-dir", str(data)).stdout


def _schema_of(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT current_schema()").fetchone()
        assert row is not None
        return str(row[0])


def test_a_reading_command_looks_for_its_schema_where_it_would_create_it(
    tmp_path: Path, postgres_url: str
) -> None:
    """A search path of an empty schema, then the server's (as "$user", public is when a schema
    named after the role exists): the tables would be made in the first; the command refuses,
    rather than answer from tables made there for the occasion."""
    with fresh_schema(postgres_url) as served, fresh_schema(postgres_url) as empty:
        created = run(
            "tokens", "create", "--name", "n", "--scopes", "sessions.read", "--database-url", served
        )
        assert created.returncode == 0, created.stderr
        separator = "&" if "?" in postgres_url else "?"
        both = f"{postgres_url}{separator}options=-csearch_path%3D{_schema_of(empty)},{_schema_of(served)}"
        listed = run("tokens", "list", "--database-url", both, "--data-dir", str(tmp_path / "d"))
        assert listed.returncode == 2 and "holds no data of this store" in listed.stderr, listed.stderr
        assert _tables(empty) == []
    # no schema of the path exists: said the same way, not as a value PostgreSQL cannot format
    nowhere = f"{postgres_url}{separator}options=-csearch_path%3Dno_such_schema_here"
    for command in (["tokens", "list"], ["received", "counts", "--storage"]):
        refused = (
            run(*command, nowhere) if command[0] == "received" else run(*command, "--database-url", nowhere)
        )
        assert refused.returncode == 2 and "holds no data of this store" in refused.stderr, refused.stderr


@pytest.mark.parametrize(
    ("password", "told"),
    [
        ("Sec@ret99zz", ["Sec", "ret99zz"]),
        ("Sec/ret99zz", ["Sec", "ret99zz"]),
        ("p@ss/w%rd: x y", ["w%rd", "rd: x y"]),
        ("r@c:v/pw %x", ["c:v", "pw %x", "pw"]),
        ("Kq7[Zx9]", ["Kq7", "Zx9"]),  # brackets Python's URL parser quotes in its error
    ],
)
def test_a_password_not_percent_encoded_is_told_in_no_piece(
    tmp_path: Path, password: str, told: list[str]
) -> None:
    """libpq splits such a URL where the password holds an "@", "/" or a space, and names the
    pieces it could not read (as a host, a port, a token)."""
    url = f"postgresql://owner:{password}@127.0.0.1:9/db"
    for command in (["tokens", "list", "--database-url", url], ["received", "counts", "--storage", url]):
        result = run(*command, "--data-dir", str(tmp_path))
        assert result.returncode == 2 and result.stderr.startswith("error: "), result.stderr
        assert "at 127.0.0.1:9 (the URL's password must be percent-encoded: @ as %40" in result.stderr
        for piece in told:
            assert piece not in result.stderr, (piece, result.stderr)


def test_reading_commands_read_postgresql_where_nothing_may_be_written(
    tmp_path: Path, postgres_url: str
) -> None:
    """A hot standby, or a monitoring role whose transactions are read-only: a database already up
    to date is read as it is (nothing to create, no lock to take)."""
    with fresh_schema(postgres_url) as served:
        created = run(
            "tokens", "create", "--name", "first", "--scopes", "sessions.read", "--database-url", served
        )
        assert created.returncode == 0, created.stderr
        asyncio.run(_open_and_close(create_received_store(tmp_path, served)))  # the receiver's schema too
        read_only = served.replace("options=", "options=-cdefault_transaction_read_only%3Don%20")
        listed = run("tokens", "list", "--database-url", read_only, "--data-dir", str(tmp_path / "d"))
        assert listed.returncode == 0 and "first" in listed.stdout, listed.stderr
        status = run("export", "status", "--database-url", read_only, "--data-dir", str(tmp_path / "d"))
        assert status.returncode == 0 and "No user session export is configured" in status.stderr
        counts = run("received", "counts", "--storage", read_only)
        assert counts.returncode == 0, counts.stderr
        refused = run(
            "tokens", "create", "--name", "n", "--scopes", "sessions.read", "--database-url", read_only
        )
        assert refused.returncode == 2 and "read-only transaction" in refused.stderr, refused.stderr


@pytest.mark.parametrize(
    "command",
    [
        ("tokens", "list"),
        ("tokens", "create", "--name", "x", "--scopes", "sessions.read"),
        ("export", "status"),
        ("ingest", "-"),
        ("backup", "copy"),
        ("worker",),
        ("serve", "--port", "1"),
    ],
)
def test_a_database_url_of_no_known_kind_is_refused_in_one_line(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    result = run(*command, "--data-dir", str(tmp_path), "--database-url", "mysql://db/x", input=b"")
    assert result.returncode == 2, result.stderr
    assert "unsupported database URL scheme 'mysql'" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_output_replaced_keeps_its_mode_and_a_long_name_is_written(tmp_path: Path) -> None:
    """The file written beside it is renamed over it: a private file stayed private only if its
    mode is carried over; a name near the 255-byte limit left no room for ".NAME.partial"."""
    private = tmp_path / "private.ndjson"
    private.write_text("old\n")
    private.chmod(0o600)
    assert run("generate", "--count", "3", "--output", str(private)).returncode == 0
    assert len(private.read_bytes().splitlines()) == 3 and (private.stat().st_mode & 0o777) == 0o600
    longest = tmp_path / ("a" * 248 + ".ndjson")  # 255 bytes
    written = run("generate", "--count", "2", "--output", str(longest))
    assert written.returncode == 0, written.stderr
    assert len(longest.read_bytes().splitlines()) == 2 and not list(tmp_path.glob(".*partial"))
    too_long = run("generate", "--count", "2", "--output", str(tmp_path / ("a" * 249 + ".ndjson")))
    assert too_long.returncode == 2 and "File name too long" in too_long.stderr, too_long.stderr
    assert "Traceback" not in too_long.stderr


@pytest.mark.parametrize(("stop", "start"), STOPS, ids=STOP_IDS)
def test_generate_writes_its_output_whole_or_not_at_all(
    tmp_path: Path, stop: signal.Signals, start: Callable[[], None] | None
) -> None:
    """Ctrl-C, SIGTERM, a missing folder or a full disk leave no file that looks complete, and say so."""
    out = tmp_path / "g.ndjson"
    proc = subprocess.Popen(
        [*CLI, "generate", "--count", "5000000", "--output", str(out)],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=start,
    )
    partial = tmp_path / ".g.ndjson.partial"
    with killed_at_the_end(proc):  # one that did not stop would fill the disk
        wait_for(lambda: partial.exists() and partial.stat().st_size > 0, "generate to write", 60)
        proc.send_signal(stop)
        _, errors = proc.communicate(timeout=30)
    assert proc.returncode == 130 and f"interrupted: {out} was not written" in errors
    assert list(tmp_path.iterdir()) == []
    for where, reason in (
        (tmp_path / "missing" / "g.ndjson", "No such file or directory"),
        (Path("/dev/full"), "No space left on device"),
    ):
        failed = run("generate", "--count", "2000", "--output", str(where))
        assert failed.returncode == 2 and f"cannot write {where}: {reason}" in failed.stderr
        assert "Traceback" not in failed.stderr
    assert list(tmp_path.iterdir()) == []
    target, link = tmp_path / "target.ndjson", tmp_path / "link.ndjson"
    target.write_text("old\n")
    link.symlink_to(target.name)
    assert run("generate", "--count", "3", "--output", str(link)).returncode == 0
    assert link.is_symlink() and len(target.read_bytes().splitlines()) == 3  # written through the link
    for made in (target, link):
        made.unlink()
    too_early = run("generate", "--end", "1970-01-01", "--output", str(out))
    assert too_early.returncode == 2 and "--end must be from 1973-03-03" in too_early.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["serve", "--port", "99999"], "Invalid value for '--port'"),
        (["receive", "--port", "-1"], "Invalid value for '--port'"),
        (["demo", "--receiver-port", "99999"], "Invalid value for '--receiver-port'"),
        # no traceback at start (inf), and no purge failing every 10 minutes (1e12 days in ms)
        (["worker", "--retention-days", "inf"], "Invalid value for '--retention-days'"),
        (["serve", "--retention-days", "1e12"], "Invalid value for '--retention-days'"),
        (["worker", "--proxy", "socks5://egress:pw@127.0.0.1:1080"], "must be http://HOST:PORT"),
        (["serve", "--proxy", "http://127.0.0.1:3128/path"], "must be only a scheme, a host and a port"),
        (["check-endpoint", "https://127.0.0.1:99999/x"], "with a valid port"),
        (["check-endpoint", "https://127.0.0.1:abc/x"], "with a valid port"),
        (["serve", "--ca-bundle", "{not_pem}"], "no PEM certificate TLS can load"),
        (
            ["check-endpoint", "https://x.test/", "--ca-bundle", "{not_pem}"],
            "no PEM certificate TLS can load",
        ),
        (
            ["serve", "--data-dir", "/proc/no-such-folder"],
            "cannot keep the secret key at /proc/no-such-folder",
        ),
        (
            ["worker", "--data-dir", "/proc/no-such-folder"],
            "cannot keep the secret key at /proc/no-such-folder",
        ),
    ],
)
def test_bad_arguments_are_one_line_not_a_traceback(tmp_path: Path, args: list[str], says: str) -> None:
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate\n")
    result = run(*(a.format(not_pem=not_pem) for a in args))
    assert result.returncode == 2, result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr


def _unread(proc: subprocess.Popen[bytes]) -> int:
    """Bytes written to the process's stdin that it has not read yet."""
    assert proc.stdin is not None
    waiting = array.array("i", [0])
    fcntl.ioctl(proc.stdin.fileno(), termios.FIONREAD, waiting)
    return waiting[0]


def _stored(database: Path) -> int:
    """Sessions in a data directory's database, read beside the process writing it."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
            return int(conn.execute("SELECT count(*) FROM sessions").fetchone()[0])
    except sqlite3.Error:  # not there yet, or its tables not made yet
        return 0


def interrupted(proc: subprocess.Popen[bytes]) -> str:
    """Ctrl-C now; what the process said on stderr once it ended."""
    proc.send_signal(signal.SIGINT)
    try:
        _, errors = proc.communicate(timeout=30)
    finally:
        proc.kill()
    return errors.decode()


@pytest.mark.parametrize(
    "args",
    [
        ["tokens", "create", "--name", "unseen", "--scopes", "sessions.read"],
        ["export", "status", "--json"],
        ["secrets", "new-key"],
    ],
)
def test_output_that_cannot_be_written_is_one_line_and_no_unseen_token_stays(
    tmp_path: Path, args: list[str]
) -> None:
    create_token(tmp_path, "sessions.read")
    with open("/dev/full", "w") as full:  # every write: "No space left on device"
        failed = subprocess.run(
            [*CLI, *args, "--data-dir", str(tmp_path)] if args[0] != "secrets" else [*CLI, *args],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    assert failed.returncode == 2, failed.stderr
    assert failed.stderr.strip().endswith("error: cannot write to standard output: No space left on device")
    assert "Traceback" not in failed.stderr
    if args[0] == "tokens":  # made, then revoked again: nobody saw it
        listed = run("tokens", "list", "--data-dir", str(tmp_path)).stdout
        assert "revoked" in listed.split("unseen", 1)[1], listed


def test_a_token_name_is_printed_as_it_is(tmp_path: Path) -> None:
    """Not as markup ("[/x]" would end the command in a traceback, the token stored unseen)."""
    name = "ci[/x] [prod] :cd:"
    created = run(
        "tokens", "create", "--name", name, "--scopes", "sessions.read", "--data-dir", str(tmp_path)
    )
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip().startswith("se0c01.") and f"({name})" in created.stderr
    listed = run("tokens", "list", "--data-dir", str(tmp_path))
    assert listed.returncode == 0 and name in listed.stdout, listed.stderr


def test_ctrl_c_while_the_modules_load_exits_130_without_a_traceback() -> None:
    """Loading the modules takes a moment, in which a Ctrl-C lands as a KeyboardInterrupt in an
    import (made to happen here at the import of the CLI, since the moment is hard to hit)."""
    program = (
        "import builtins, runpy\n"
        "real = builtins.__import__\n"
        "def interrupted(name, *args, **kwargs):\n"
        "    if name == 'sessionexport.cli':\n"
        "        raise KeyboardInterrupt\n"
        "    return real(name, *args, **kwargs)\n"
        "builtins.__import__ = interrupted\n"
        "runpy.run_module('sessionexport', run_name='__main__')\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (130, "")


def test_ctrl_c_while_ingest_waits_on_a_pipe_stores_what_it_read(tmp_path: Path) -> None:
    sessions = tmp_path / "s.ndjson"
    assert run("generate", "--count", "3", "--output", str(sessions)).returncode == 0
    command = [*CLI, "ingest", "-", "--data-dir", str(tmp_path / "d")]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write(sessions.read_bytes())
    proc.stdin.write(b'{"tenantId": "cut off in the mid')  # a line not ended yet: not taken
    proc.stdin.flush()  # the pipe stays open: ingest waits for more
    wait_for(lambda: _unread(proc) == 0, "ingest to read what was sent")
    time.sleep(0.5)  # to split it into lines (it stores them when the input ends, or is interrupted)
    text = interrupted(proc)
    assert proc.returncode == 130, text
    assert "3 stored, 0 duplicate(s), 0 refused of 3 line(s)" in text
    assert "interrupted while waiting for line 4: every valid session up to line 3 is stored" in text
    again = run("ingest", str(sessions), "--data-dir", str(tmp_path / "d"))
    assert "0 stored, 3 duplicate(s)" in again.stderr


def test_ctrl_c_before_any_input_ends_ingest_at_once(tmp_path: Path) -> None:
    command = [*CLI, "ingest", "-", "--data-dir", str(tmp_path / "d")]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for((tmp_path / "d" / "sessionexport.db").exists, "ingest to open its store")
    time.sleep(0.5)  # and to wait for its first line
    errors = interrupted(proc)
    assert proc.returncode == 130, errors
    assert "interrupted while waiting for the first line: nothing was read" in errors


@pytest.mark.parametrize(("stop", "start"), STOPS, ids=STOP_IDS)
def test_ctrl_c_during_ingest_says_how_far_it_got(
    tmp_path: Path, stop: signal.Signals, start: Callable[[], None] | None
) -> None:
    """A SIGTERM (systemd, timeout) ends it as Ctrl-C does: said, and no empty --rejects left."""
    sessions = tmp_path / "s.ndjson"
    assert run("generate", "--count", "20000", "--kind", "mobile", "--output", str(sessions)).returncode == 0
    rejects = tmp_path / "rejects.ndjson"
    command = [*CLI, "ingest", str(sessions), "--batch-size", "5", "--data-dir", str(tmp_path / "d")]
    proc = subprocess.Popen(
        [*command, "--rejects", str(rejects)], stderr=subprocess.PIPE, text=True, preexec_fn=start
    )
    with killed_at_the_end(proc):
        wait_for(lambda: _stored(tmp_path / "d" / "sessionexport.db") > 0, "ingest to store sessions")
        proc.send_signal(stop)
        _, errors = proc.communicate(timeout=60)
    assert proc.returncode == 130, errors
    said = re.search(r"interrupted at line (\d+): every valid session up to line (\d+) is stored", errors)
    assert said is not None, errors
    assert 0 < int(said[2]) <= int(said[1]) < 20000
    assert not rejects.exists()  # no line went there: the same command can run again
    again = run("ingest", str(sessions), "--data-dir", str(tmp_path / "d"))
    stored = re.search(r"(\d+) stored, (\d+) duplicate\(s\)", again.stderr)
    assert stored is not None and int(stored[2]) >= int(said[2]) and int(stored[1]) + int(stored[2]) == 20000


def run_with_closed(stream: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The command started with its standard input (``<&-``) or output (``>&-``) closed."""
    return subprocess.run(
        ["sh", "-c", f'exec "$@" {stream}', "sh", *CLI, *args], capture_output=True, text=True, timeout=60
    )


def test_a_closed_standard_input_or_output_is_said_in_one_line(tmp_path: Path) -> None:
    """Not a traceback; and a token that could not be printed does not stay valid."""
    data_dir = str(tmp_path / "d")
    for stream, args, said in [
        (
            ">&-",
            ["tokens", "create", "--data-dir", data_dir, "--name", "n", "--scopes", "sessions.read"],
            "Revoked",
        ),
        (
            "<&-",
            ["ingest", "-", "--data-dir", data_dir],
            "cannot read sessions from standard input: it is closed",
        ),
        (
            "<&-",
            ["export", "test", "--value", "-", "--data-dir", data_dir],
            "cannot read --value from standard input: it is closed",
        ),
        (">&-", ["generate", "--count", "3"], "cannot write to standard output: it is closed"),
        (">&-", ["secrets", "new-key"], "cannot write to standard output: it is closed"),
        (">&-", ["tokens", "list", "--data-dir", data_dir], "cannot write to standard output: it is closed"),
    ]:
        result = run_with_closed(stream, *args)
        assert result.returncode == 2 and said in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
    listed = run("tokens", "list", "--data-dir", data_dir)
    assert "revoked" in listed.stdout and "active" not in listed.stdout, listed.stdout


@pytest.mark.parametrize(
    ("variable", "value", "args", "said"),
    [
        ("SESSIONEXPORT_RECEIVER_BASIC", "nocolon", ["receive"], "must look like NAME:SECRET"),
        ("SESSIONEXPORT_RECEIVER_OAUTH_CLIENT", "a:b c\nnocolon", ["receive"], "must look like NAME:SECRET"),
        ("SESSIONEXPORT_RECEIVER_BULK_FAIL", "abc", ["receive"], "bad --bulk-fail rule 'abc'"),
        (
            "SESSIONEXPORT_EXPIRES_IN",
            "5x",
            ["tokens", "create", "--name", "n", "--scopes", "sessions.read"],
            "'5x' is no lifetime",
        ),
        ("SESSIONEXPORT_LOG_FORMAT", "xml", ["tokens", "list"], "'xml' is neither text nor json"),
        ("SESSIONEXPORT_SECRET_KEY", "bogus", ["serve"], "invalid secret key"),
    ],
)
def test_a_bad_value_from_the_environment_names_its_variable(
    tmp_path: Path, variable: str, value: str, args: list[str], said: str
) -> None:
    """A user who set a variable, and never typed the flag, is told which variable is wrong."""
    result = run(*args, env={variable: value, "SESSIONEXPORT_DATA_DIR": str(tmp_path / "d")})
    assert result.returncode == 2, result.stderr
    assert f"(env var: '{variable}')" in result.stderr and said in result.stderr, result.stderr
    assert not (tmp_path / "d").exists()  # refused before anything was made


def test_a_repeatable_option_from_the_environment_warns_of_one_line_holding_a_space(tmp_path: Path) -> None:
    """One value a line: "a:x b:y" was two clients once (click split at whitespace), and is now
    one whose secret holds a space; said, without the value (it holds a secret)."""
    args = [
        "receive",
        "--http",
        "--host",
        "receiver.invalid",
        "--data-dir",
        str(tmp_path / "d"),
    ]  # stops there
    one = run(*args, env={"SESSIONEXPORT_RECEIVER_OAUTH_CLIENT": "  a:x b:y  "})
    said = "SESSIONEXPORT_RECEIVER_OAUTH_CLIENT holds one value with a space in it"
    assert said in one.stderr and "x b:y" not in one.stderr, one.stderr
    two = run(*args, env={"SESSIONEXPORT_RECEIVER_OAUTH_CLIENT": "a:x\nb:y"})
    assert said not in two.stderr and two.returncode == 2  # (the host does not resolve)


def test_an_empty_secret_key_means_the_key_file(tmp_path: Path) -> None:
    """As ``--secret-key "$KEY"`` gives it with KEY unset: not refused as a bad key."""
    create_token(tmp_path, "sessions.read")
    (tmp_path / "secret.key").write_text(run("secrets", "new-key").stdout)
    rotated = run("secrets", "rotate", "--secret-key", "", "--data-dir", str(tmp_path))
    assert rotated.returncode == 0, rotated.stderr


def test_a_bad_secret_key_file_is_named(tmp_path: Path) -> None:
    create_token(tmp_path, "sessions.read")
    (tmp_path / "secret.key").write_text("bogus\n")
    result = run("serve", "--data-dir", str(tmp_path), "--port", str(free_port()))
    assert result.returncode == 2
    assert f"{tmp_path / 'secret.key'}: invalid secret key" in result.stderr, result.stderr
