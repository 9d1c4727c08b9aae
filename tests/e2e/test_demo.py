"""`sessionexport demo` as a user runs it: sessions reach its receiver within seconds; Ctrl-C stops
the server, the receiver and the generator cleanly."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson

from tests.support.receiver_process import free_port

STORED = re.compile(r"stored by the receiver:\s+(\d+)")


def run_cli(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "sessionexport", *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    )
    return done.stdout.strip().splitlines()[-1] if args[:2] == ("tokens", "create") else done.stdout


def command_lines() -> list[str]:
    """The command line of every process (what `ps` shows to anyone on the machine)."""
    lines = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            lines.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return lines


def refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_demo_delivers_to_its_receiver_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port, receiver_port = free_port(), free_port()
    output, errors = tmp_path / "demo.out", tmp_path / "demo.err"
    earlier = run_cli(
        "tokens",
        "create",
        "--data-dir",
        str(tmp_path / "demo" / "server"),
        "--name",
        "demo",
        "--scopes",
        "sessions.read",
    )
    command = [sys.executable, "-m", "sessionexport", "demo", "--data-dir", str(tmp_path / "demo")]
    command += ["--port", str(port), "--receiver-port", str(receiver_port), "--rate", "5"]
    # A proxy set for the shell (as behind a company's): none could reach the demo's own processes.
    unreachable_proxy = {name: "http://127.0.0.1:9" for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")}
    with output.open("w") as out, errors.open("w") as err:
        demo = subprocess.Popen(
            command, stdout=out, stderr=err, start_new_session=True, env={**os.environ, **unreachable_proxy}
        )
    try:
        deadline = time.monotonic() + 90
        while not any(int(n) > 0 for n in STORED.findall(output.read_text())):  # on stdout, for `> file`
            assert demo.poll() is None, f"the demo ended early:\n{errors.read_text()}"
            assert time.monotonic() < deadline, f"no session reached the receiver:\n{errors.read_text()}"
            time.sleep(0.5)
        text = output.read_text()
        assert "token (all scopes):" in text and f"http://127.0.0.1:{port}/docs" in text
        ours = [line for line in command_lines() if str(tmp_path) in line]  # the demo and its receiver
        assert len(ours) >= 2 and not [line for line in ours if "demo-exporter:" in line]  # not in `ps`
        os.killpg(demo.pid, signal.SIGINT)  # as Ctrl-C in a terminal: the demo and its receiver get it
        assert demo.wait(30) == 0, errors.read_text()
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)  # its receiver too
    assert "demo stopped" in output.read_text() and "Traceback" not in errors.read_text()
    listed = run_cli(
        "tokens", "list", "--data-dir", str(tmp_path / "demo" / "server"), env={"COLUMNS": "200"}
    )
    assert f"{earlier.split('.')[1]} " in listed and "revoked" in listed  # an earlier run's token
    assert listed.count("active") == 1  # this run's
    assert refused(port) and refused(receiver_port)  # server and receiver are gone
    counts = subprocess.run(
        [
            sys.executable,
            "-m",
            "sessionexport",
            "received",
            "counts",
            "--data-dir",
            str(tmp_path / "demo" / "receiver"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert orjson.loads(counts.stdout)["sessions"] > 0


def test_a_taken_api_port_is_said_at_once_and_nothing_is_started(tmp_path: Path) -> None:
    """Even when the port's holder answers /health: the demo must not mistake it for its server."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port, receiver_port = taken.getsockname()[1], free_port()
        command = [sys.executable, "-m", "sessionexport", "demo", "--data-dir", str(tmp_path / "demo")]
        command += ["--port", str(port), "--receiver-port", str(receiver_port), "--duration", "5"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"error: cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "demo" / "receiver.log").exists()  # the receiver was never started


def test_a_second_run_delivers_from_its_start(tmp_path: Path) -> None:
    """The export saved by the first run still authenticates while the second run updates it:
    no session becomes a dead letter (a new OAuth secret each run made the first ones so)."""
    command = [sys.executable, "-m", "sessionexport", "demo", "--data-dir", str(tmp_path / "demo")]
    command += ["--port", str(free_port()), "--receiver-port", str(free_port()), "--duration", "12"]
    for run in (1, 2):
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (run, done.stderr)
        assert int(STORED.findall(done.stdout)[-1]) > 0
    server_data = str(tmp_path / "demo" / "server")
    status = subprocess.run(
        [sys.executable, "-m", "sessionexport", "export", "status", "--json", "--data-dir", server_data],
        capture_output=True,
        text=True,
    )
    [export] = orjson.loads(status.stdout)
    assert export["deadLetters"] == 0 and export["failedSessions"] == 0, export
