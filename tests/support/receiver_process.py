"""``sessionexport receive`` as a real process on loopback, for end-to-end and crash tests."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ReceiverProcess:
    """Starts ``receive`` with the given options; HTTPS with its self-signed certificate unless told otherwise."""

    def __init__(self, data_dir: Path, *args: str, http: bool = False) -> None:
        self.data_dir = data_dir
        self.args = list(args)
        self.http = http
        self.port = free_port()
        self.process: subprocess.Popen[str] | None = None
        self.stderr_path = data_dir.parent / f"receiver-{self.port}.log"

    @property
    def base(self) -> str:
        return f"{'http' if self.http else 'https'}://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/export/events"

    @property
    def ca_file(self) -> Path:
        return self.data_dir / "receiver-cert.pem"

    @property
    def verify(self) -> ssl.SSLContext | bool:
        return False if self.http else ssl.create_default_context(cafile=str(self.ca_file))

    def start(self, timeout: float = 20) -> ReceiverProcess:
        command = [sys.executable, "-m", "sessionexport", "receive", "--port", str(self.port)]
        command += ["--data-dir", str(self.data_dir), *self.args] + (["--http"] if self.http else [])
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.stderr_path.open("w") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log, text=True, env=os.environ.copy())
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"receiver did not start: {self.output()}")
            time.sleep(0.05)
        return self

    def output(self) -> str:
        return self.stderr_path.read_text() if self.stderr_path.exists() else ""

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.base}/health", verify=self.verify, timeout=1).status_code == 200
        except (httpx.HTTPError, OSError):
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
