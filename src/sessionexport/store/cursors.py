"""Rules of an export's cursor split in shards, the same for every backend (no I/O).

An export of ``shards`` shards has one cursor row per shard; shard ``k`` holds the sessions whose
``seq % shards == k``, and its position is the highest seq up to which every session of that
shard is decided. The export as a whole is decided up to its slowest shard's position.
"""

from __future__ import annotations

from collections.abc import Sequence

from sessionexport.store.records import Cursor


def split_as(cursors: Sequence[Cursor], shards: int) -> bool:
    """Whether these rows are exactly the shards 0..shards-1 of a cursor split in ``shards``."""
    return sorted(c.shard for c in cursors) == list(range(shards)) and all(
        c.shards == shards for c in cursors
    )


def split(export_id: str, cursors: Sequence[Cursor], shards: int, position: int) -> list[Cursor]:
    """The cursor split anew in ``shards`` (at ``position`` when there was none).

    Every shard starts where the slowest shard was: sessions that a faster shard had decided are
    sent again, none is passed over. The counts, the last success and the last error go to shard
    0, so that the export's totals stay what they were.
    """
    if not cursors:
        return [Cursor(export_id, position, shard=n, shards=shards) for n in range(shards)]
    whole = combined(cursors)
    first = Cursor(
        export_id,
        whole.position,
        whole.last_success_at,
        whole.last_error_at,
        whole.last_error,
        whole.delivered,
        whole.failed,
        whole.retried,
        shard=0,
        shards=shards,
    )
    return [first, *(Cursor(export_id, whole.position, shard=n, shards=shards) for n in range(1, shards))]


def combined(cursors: Sequence[Cursor]) -> Cursor:
    """The export's cursor from its shards' rows: decided up to the slowest shard, counts summed,
    the latest success and error of any shard."""
    latest_error = max(cursors, key=lambda c: -1 if c.last_error_at is None else c.last_error_at)
    successes = [c.last_success_at for c in cursors if c.last_success_at is not None]
    return Cursor(
        cursors[0].export_id,
        min(c.position for c in cursors),
        max(successes, default=None),
        latest_error.last_error_at,
        latest_error.last_error,
        sum(c.delivered for c in cursors),
        sum(c.failed for c in cursors),
        sum(c.retried for c in cursors),
        shard=0,
        shards=cursors[0].shards,
    )


def covered(after_seq: int, seqs: Sequence[int], limit: int, log_end: int) -> int:
    """How far a read of one shard covers the log (``LogRead.end``).

    ``log_end`` is the log's highest seq read *before* the shard's sessions: every seq up to it
    had committed (appends commit in seq order), so a read that returned fewer than ``limit``
    sessions returned every session of the shard up to there.
    """
    if len(seqs) == limit:
        return seqs[-1]
    return max(after_seq, log_end, *seqs)
