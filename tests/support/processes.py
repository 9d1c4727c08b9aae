"""Helpers for tests that run sessionexport's commands as real processes."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import httpx


def wait_healthy(client: httpx.Client, process: subprocess.Popen[str], within: float = 30) -> None:
    """Until ``process`` answers ``/health`` with 200 (through ``client``); fails with its output
    if it ends first."""
    deadline = time.monotonic() + within
    while True:
        try:
            if client.get("/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, f"no healthy answer from {client.base_url} within {within} s"
        time.sleep(0.1)


def wait_for(condition: Callable[[], object], what: str, within: float = 30) -> None:
    """Until ``condition()`` is true: what a process did, not how long it should have taken (a
    loaded machine takes seconds to start Python)."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        time.sleep(0.05)
