"""``sessionexport ingest FILE``: an NDJSON file of any size, streamed into the session log.

Memory stays flat: the file is read line by line and stored a batch at a time. A file is not
all-or-nothing (it may hold millions of sessions): each invalid line is reported and, with
``rejects``, written out unchanged so that nothing is lost; every valid line is stored.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from sessionexport.clock import now_ms
from sessionexport.ingest.documents import to_record
from sessionexport.model.validation import InvalidSession, decode_session
from sessionexport.store import Store
from sessionexport.store.records import NewSession

SHOWN_PROBLEMS = 20


@dataclass
class IngestSummary:
    lines: int = 0
    accepted: int = 0
    duplicates: int = 0
    refused: int = 0
    seconds: float = 0.0


async def ingest_file(
    store: Store,
    path: Path,
    *,
    batch_size: int = 1000,
    rejects: Path | None = None,
    console: Console | None = None,
) -> IngestSummary:
    console = console or Console(stderr=True)
    summary = IngestSummary()
    started = time.perf_counter()
    batch: list[NewSession] = []
    with (
        _open(path) as source,
        _open_rejects(rejects) as rejected,
        _progress(console, path) as (progress, task),
    ):
        for number, raw in enumerate(source, start=1):
            progress.update(task, advance=len(raw) + 1)
            line = raw.strip()
            if not line:
                continue
            summary.lines += 1
            try:
                batch.append(to_record(decode_session(line), line))
            except InvalidSession as exc:
                summary.refused += 1
                _report(console, number, exc, summary.refused)
                if rejected:
                    rejected.write(raw.rstrip(b"\r\n") + b"\n")
                continue
            if len(batch) >= batch_size:
                await _store_batch(store, batch, summary)
        if batch:
            await _store_batch(store, batch, summary)
    if summary.refused > SHOWN_PROBLEMS:
        console.print(f"... and {summary.refused - SHOWN_PROBLEMS} more refused line(s)")
    summary.seconds = time.perf_counter() - started
    return summary


async def _store_batch(store: Store, batch: list[NewSession], summary: IngestSummary) -> None:
    result = await store.append_sessions(batch, now_ms())
    summary.accepted += result.accepted
    summary.duplicates += result.duplicates
    batch.clear()


def _report(console: Console, number: int, exc: InvalidSession, refused: int) -> None:
    if refused > SHOWN_PROBLEMS:
        return
    for problem in exc.problems:
        where = f"line {number}, {problem.path}" if problem.path else f"line {number}"
        console.print(f"[yellow]refused[/yellow] {where}: {problem.message}", highlight=False, markup=True)


@contextlib.contextmanager
def _open(path: Path) -> Iterator[BinaryIO]:
    if str(path) == "-":
        yield sys.stdin.buffer
        return
    with path.open("rb") as fh:
        yield fh


@contextlib.contextmanager
def _open_rejects(path: Path | None) -> Iterator[BinaryIO | None]:
    if path is None:
        yield None
        return
    with path.open("wb") as fh:
        yield fh


@contextlib.contextmanager
def _progress(console: Console, path: Path) -> Iterator[tuple[Progress, TaskID]]:
    total = None if str(path) == "-" else path.stat().st_size
    columns = (
        TextColumn("ingesting"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        yield progress, progress.add_task("ingest", total=total)
