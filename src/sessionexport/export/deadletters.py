"""Choosing the dead letters a replay sends: the ones asked for, or every pending one."""

from __future__ import annotations

from sessionexport.store import Store
from sessionexport.store.records import DeadLetter

REPLAY_ALL_LIMIT = 10_000


async def letters_to_replay(
    store: Store, export_id: str, ids: list[int] | None
) -> tuple[list[DeadLetter], list[int]]:
    """(pending letters of the export to send, oldest first; ids asked for that are not among them)."""
    if ids is None:
        pending = await store.list_dead_letters(export_id, state="pending", limit=REPLAY_ALL_LIMIT)
        return list(reversed(pending)), []
    found = [await store.get_dead_letter(i) for i in dict.fromkeys(ids)]  # each letter once
    letters = [d for d in found if d is not None and d.export_id == export_id and d.state == "pending"]
    return letters, sorted(set(ids) - {d.id for d in letters})
