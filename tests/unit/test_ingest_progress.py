"""The progress of `sessionexport ingest`: a total only where the input says how long it is."""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console

from sessionexport.ingest.files import _progress


def _total(path: Path) -> float | None:
    with _progress(Console(quiet=True), path) as (progress, task):
        return progress.tasks[task].total


def test_a_regular_file_has_its_size_as_the_total(tmp_path: Path) -> None:
    source = tmp_path / "s.ndjson"
    source.write_bytes(b"x" * 1234)
    assert _total(source) == 1234


def test_a_fifo_or_standard_input_has_no_total_not_zero(tmp_path: Path) -> None:
    """Their size says 0: a bar full from the start, then "10,955,915/0 bytes"."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert _total(fifo) is None
    assert _total(Path("-")) is None
