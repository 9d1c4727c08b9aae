"""Where commands write: an output need only be writable (a pipe, a FIFO or a device the command
may not read, as another user's /dev/stdout)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sessionexport.cli import app as cli_app
from tests.support.engine import sessions


def test_ingest_rejects_to_a_device_it_may_only_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "mixed.ndjson"
    source.write_bytes(sessions(1, seed=3)[0] + b"\n{broken\n")
    allowed = os.access

    def write_only_devnull(path: Any, mode: int, **kwargs: Any) -> bool:  # as a non-root user sees it
        return not (str(path) == os.devnull and mode & os.R_OK) and allowed(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", write_only_devnull)
    done = CliRunner().invoke(
        cli_app, ["ingest", str(source), "--rejects", os.devnull, "--data-dir", str(tmp_path / "d")]
    )
    assert done.exit_code == 1, done.output  # a line refused (and written there), not "not readable"
    assert "not readable" not in done.output
