"""``sessionexport ingest FILE``: an NDJSON file of any size, streamed into the session log.

Memory stays flat: the file is read line by line and stored a batch at a time. A file is not
all-or-nothing (it may hold millions of sessions): each invalid line is reported and, with
``rejects``, written out unchanged so that nothing is lost; every valid line is stored. A gzip
file (or stream) is read as such, whatever its name; one that is corrupt or cut short ends the
ingest with what was read before it stored, and says after which line.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import io
import signal
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO

from rich.console import Console
from rich.markup import escape
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
from sessionexport.config import DEFAULT_MAX_BODY_BYTES, INGEST_BATCH_SESSIONS
from sessionexport.ingest.documents import UTF8_BOM, to_record
from sessionexport.model.validation import InvalidSession, Problem, decode_session
from sessionexport.store import Store, StoreError
from sessionexport.store.records import AppendResult, NewSession

SHOWN_PROBLEMS = 20
PROGRESS_EVERY_LINES = 256
GZIP_MAGIC = b"\x1f\x8b"
READ_BUFFER = 1 << 20
ARRAY_HINT = " (a JSON array: ingest takes NDJSON, one session per line)"
MAX_LINE_BYTES = DEFAULT_MAX_BODY_BYTES  # as the API's: a session larger is refused there too


@dataclass
class IngestSummary:
    lines: int = 0
    accepted: int = 0
    duplicates: int = 0
    refused: int = 0
    seconds: float = 0.0
    unreadable: str | None = None  # why reading stopped before the end of the file
    store_failed: str | None = None  # why storing stopped, and up to which line all is stored
    rejects_failed: str | None = None  # why keeping refused lines failed, and where ingest stopped
    interrupted: str | None = None  # stopped by Ctrl-C: up to which line all is stored
    stored_through: int = 0  # every line up to this one is stored (or refused)


async def ingest_file(
    store: Store,
    path: Path,
    *,
    batch_size: int = INGEST_BATCH_SESSIONS,
    rejects: BinaryIO | None = None,
    console: Console | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> IngestSummary:
    console = console or Console(stderr=True, emoji=False)
    summary = IngestSummary()
    started = time.perf_counter()
    batch: list[NewSession] = []
    with (
        _open(path) as source,
        _ctrl_c_stops_waiting(source),
        _progress(console, path) as (progress, task),
    ):
        number = consumed = 0
        try:
            try:
                for number, raw in enumerate(_read(source, max_line_bytes), start=1):
                    if isinstance(raw, _TooLong):
                        consumed += raw.size
                        summary.lines += 1
                        summary.refused += 1
                        _report(
                            console, number, InvalidSession([raw.problem(max_line_bytes)]), summary.refused
                        )
                        continue
                    consumed += len(raw)
                    if number % PROGRESS_EVERY_LINES == 0:
                        progress.update(task, completed=source.position() or consumed)
                        await asyncio.sleep(0)  # where Ctrl-C (a cancellation) can stop it between batches
                    line = raw.strip() if number > 1 else raw.removeprefix(UTF8_BOM).strip()
                    if not line:
                        continue
                    summary.lines += 1
                    try:
                        batch.append(to_record(decode_session(line), line))
                    except InvalidSession as exc:
                        summary.refused += 1
                        hint = ARRAY_HINT if line.startswith(b"[") else ""
                        _report(console, number, exc, summary.refused, hint)
                        if rejects:
                            _keep_refused(rejects, raw)
                        continue
                    if len(batch) >= batch_size:
                        await _store_batch(store, batch, summary, number)
            except _Unreadable as exc:
                summary.unreadable = f"cannot read {path} after line {number}: {exc}"
            except _Interrupted:  # as the end of the input: what was read is stored
                summary.interrupted = _interrupted_waiting(number)
            except _RejectsUnwritable as exc:
                summary.rejects_failed = (
                    f"cannot write refused line {number} to the rejects file ({exc}), so ingest stopped"
                    f" there: every valid session before line {number} is stored, none from it on"
                )
            if batch:
                await _store_batch(store, batch, summary, number)
        except asyncio.CancelledError:  # Ctrl-C: say how far it got
            summary.interrupted = (
                f"interrupted at line {number}: every valid session up to line {summary.stored_through} is stored;"
                " ingest the file again for the rest (sessions already stored count as duplicates)"
            )
        except StoreError as exc:
            done = summary.stored_through
            stored = (
                f"every valid session up to line {done} is stored, none after it"
                if done
                else "none is stored"
            )
            summary.store_failed = (
                f"the store failed ({exc}): {stored}; once the store works, ingest the file again"
                " (sessions already stored count as duplicates)"
            )
    if summary.refused > SHOWN_PROBLEMS:
        console.print(f"... and {summary.refused - SHOWN_PROBLEMS} more refused line(s)")
    summary.seconds = time.perf_counter() - started
    return summary


def _interrupted_waiting(number: int) -> str:
    if not number:
        return "interrupted while waiting for the first line: nothing was read"
    return (
        f"interrupted while waiting for line {number + 1}: every valid session up to line {number} is stored"
    )


async def _store_batch(store: Store, batch: list[NewSession], summary: IngestSummary, through: int) -> None:
    """Append the batch (the lines up to ``through``) and count it. A Ctrl-C meanwhile waits for
    its commit, which the store's writer makes anyway: the summary then tells what is stored."""
    write = asyncio.ensure_future(store.append_sessions(list(batch), now_ms()))
    batch.clear()
    try:
        result = await asyncio.shield(write)
    except asyncio.CancelledError:
        _count_batch(summary, await write, through)
        raise
    _count_batch(summary, result, through)


def _count_batch(summary: IngestSummary, result: AppendResult, through: int) -> None:
    summary.accepted += result.accepted
    summary.duplicates += result.duplicates
    summary.stored_through = through


class _RejectsUnwritable(Exception):
    """A refused line could not be kept: ingest stops there rather than lose it."""


def _keep_refused(rejects: BinaryIO, raw: bytes) -> None:
    """Write a refused line whole or not at all (``rejects`` is unbuffered: a full disk is told at
    this line, not when the file is closed). What a failed write left of the line is cut off
    again, so that the file holds whole lines only."""
    line = memoryview(raw.rstrip(b"\r\n") + b"\n")
    start = rejects.tell() if rejects.seekable() else None
    try:
        while line:
            line = line[rejects.write(line) :]
    except OSError as exc:
        if start is not None:
            with contextlib.suppress(OSError):
                rejects.truncate(start)
                rejects.seek(start)
        raise _RejectsUnwritable(exc.strerror or str(exc)) from None


def _report(console: Console, number: int, exc: InvalidSession, refused: int, hint: str = "") -> None:
    if refused > SHOWN_PROBLEMS:
        return
    for problem in exc.problems:
        where = f"line {number}, {problem.path}" if problem.path else f"line {number}"
        message = escape(problem.message + hint)
        console.print(f"[yellow]refused[/yellow] {where}: {message}", highlight=False, markup=True)


class _Source:
    """The lines of a file or of standard input, gunzipped if they are gzip; how far reading is."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.input = _Input(stream)

    @functools.cached_property
    def lines(self) -> io.BufferedIOBase:
        """Read from first use on, inside the reading loop: the first bytes may be waited for."""
        head = self.input.peek(len(GZIP_MAGIC))
        whole = io.BufferedReader(self.input, buffer_size=READ_BUFFER)
        return gzip.GzipFile(fileobj=whole, mode="rb") if head == GZIP_MAGIC else whole

    def position(self) -> int | None:
        """Bytes of the file read so far (compressed, for gzip); None for a pipe."""
        try:
            return self._stream.tell()
        except OSError:
            return None


class _Input(io.RawIOBase):
    """The bytes of ``stream``, the first of them peeked at; ``waiting`` while a read waits for
    them (a pipe or a terminal may keep it waiting as long as it likes)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._head = b""
        self.waiting = False

    def peek(self, size: int) -> bytes:
        self._head = self._wait(
            self._stream.read, size
        )  # a pipe may give fewer bytes at a time: read() waits
        return self._head

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            size = min(len(buffer), len(self._head))
            buffer[:size], self._head = self._head[:size], self._head[size:]
            return size
        read = getattr(self._stream, "read1", self._stream.read)  # what is there, without waiting for more
        data = self._wait(read, len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _wait(self, read: Callable[[int], bytes], size: int) -> bytes:
        self.waiting = True
        try:
            return read(size)
        finally:
            self.waiting = False


class _Interrupted(Exception):
    """Ctrl-C while the input was waited for."""


@contextlib.contextmanager
def _ctrl_c_stops_waiting(source: _Source) -> Iterator[None]:
    """asyncio turns Ctrl-C into a cancellation, which takes effect at the next ``await``; a read
    waiting on an idle pipe would never get there. While the input is waited for, Ctrl-C raises
    _Interrupted in the read instead (elsewhere it stays asyncio's)."""
    previous = signal.getsignal(signal.SIGINT)
    if not callable(previous) or threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        if source.input.waiting:
            raise _Interrupted
        previous(signum, frame)

    signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _open(path: Path) -> Iterator[_Source]:
    if str(path) == "-":
        yield _Source(sys.stdin.buffer)
        return
    with path.open("rb") as fh:
        yield _Source(fh)


class _Unreadable(Exception):
    pass


@dataclass(frozen=True, slots=True)
class _TooLong:
    """A line longer than the limit, skipped without being held whole: ``size`` bytes, and how
    it began (a JSON array, for the hint)."""

    size: int
    array: bool

    def problem(self, limit: int) -> Problem:
        hint = ARRAY_HINT if self.array else ""
        return Problem(
            "", f"longer than {limit:,} bytes ({self.size:,}){hint}: not stored, nor written to --rejects"
        )


def _read(source: _Source, limit: int) -> Iterator[bytes | _TooLong]:
    """The source's lines, each held whole only up to ``limit`` bytes (memory stays flat whatever
    the file holds); a read error (a corrupt or cut gzip stream, a failing disk) as _Unreadable."""
    try:
        while line := source.lines.readline(limit + 2):  # room for the line's \r\n
            # Shorter than asked and without its \n, it is the last line, whole; else cut short.
            whole = line.endswith(b"\n") or len(line) < limit + 2
            if whole and len(line) - _line_end(line) <= limit:
                yield line
                continue
            size, array, rest = len(line), line.lstrip().startswith(b"["), line
            while not rest.endswith(b"\n") and (more := source.lines.readline(READ_BUFFER)):
                size, rest = size + len(more), rest[-1:] + more  # enough of it to see a \r\n end
            yield _TooLong(size - _line_end(rest), array)
    except EOFError:
        raise _Unreadable("the gzip stream ends early: the file was cut short") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise _Unreadable(f"the gzip stream is corrupt ({exc})") from None
    except OSError as exc:
        raise _Unreadable(exc.strerror or str(exc)) from None


def _line_end(line: bytes) -> int:
    """The bytes of the line's end (``\r\n``, ``\n`` or none): what the size limit leaves out."""
    return 2 if line.endswith(b"\r\n") else 1 if line.endswith(b"\n") else 0


@contextlib.contextmanager
def _progress(console: Console, path: Path) -> Iterator[tuple[Progress, TaskID]]:
    # Only a regular file says how long it is: a pipe or a FIFO (<(zcat f.gz)) says 0.
    total = path.stat().st_size if str(path) != "-" and path.is_file() else None
    columns = (
        TextColumn("ingesting"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        yield progress, progress.add_task("ingest", total=total)
