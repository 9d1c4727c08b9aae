"""``ingest_file`` on the real SQLite store: what its summary says is what the log holds."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from sessionexport.generate.sessions import generate_lines
from sessionexport.ingest.files import ingest_file
from sessionexport.store import create_store
from sessionexport.store.records import AppendResult, NewSession
from tests.support.stores import opened


async def test_ctrl_c_while_a_batch_is_written_counts_that_batch(tmp_path: Path) -> None:
    """The store's writer commits a batch whatever happens to its caller: the summary of an ingest
    interrupted (cancelled) while the batch was written counts it, and says where it got to."""
    source = tmp_path / "s.ndjson"
    source.write_bytes(b"\n".join(generate_lines(30, seed=3)) + b"\n")
    async with opened(lambda: create_store(tmp_path / "d")) as store:
        writing = asyncio.Event()
        real_append = store.append_sessions

        async def append_sessions(sessions: Sequence[NewSession], received_at: int) -> AppendResult:
            writing.set()  # (a Ctrl-C now lands in the middle of the write)
            return await real_append(sessions, received_at)

        store.append_sessions = append_sessions  # type: ignore[method-assign]
        quiet = Console(file=io.StringIO())
        ingest = asyncio.create_task(ingest_file(store, source, batch_size=10, console=quiet))
        await writing.wait()
        ingest.cancel()
        summary = await ingest
        assert summary.interrupted is not None
        assert summary.accepted == await store.count_sessions() == 10
        assert summary.interrupted.startswith("interrupted at line 10: every valid session up to line 10")
