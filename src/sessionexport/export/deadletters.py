"""Choosing the dead letters a replay sends (the ones asked for, or every pending one), reading
their sessions back, and discarding them on request.

Only their ids are chosen here: each letter's body (up to a whole bulk) is read just before it is
sent, so a replay of thousands holds one body at a time. A letter is sent again as the export sends
now: its sessions are read back from its body, whichever format that was kept in, so that a letter
kept in Elasticsearch mode reaches a plain endpoint as sessions only (and the other way round), and
a letter too large for the endpoint is split as a bulk would be.
"""

from __future__ import annotations

import logging

from sessionexport.store import Store
from sessionexport.store.records import DeadLetter, LogEntry

log = logging.getLogger(__name__)

REPLAY_ALL_LIMIT = 10_000
_PAGE = 50


async def letters_to_replay(
    store: Store, export_id: str, ids: list[int] | None, up_to: int | None = None
) -> tuple[list[int], list[int]]:
    """(ids of the export's pending letters to send, oldest first; ids asked for that are not among
    them). Without ``ids``: every pending one (up to id ``up_to``, when given: what a page counted)."""
    if ids is None:
        return await _pending_ids(store, export_id, up_to), []
    wanted = list(dict.fromkeys(ids))  # each letter once
    found = await store.list_dead_letters(export_id, state="pending", ids=wanted, limit=len(wanted))
    pending = {letter.id for letter in found}
    return [i for i in wanted if i in pending], sorted(set(wanted) - pending)


async def _pending_ids(store: Store, export_id: str, up_to: int | None) -> list[int]:
    ids: list[int] = []
    before = None if up_to is None else up_to + 1
    while len(ids) < REPLAY_ALL_LIMIT:
        page = await store.list_dead_letters(export_id, state="pending", limit=_PAGE, before_id=before)
        ids += [letter.id for letter in page]
        if len(page) < _PAGE:
            break
        before = page[-1].id
    return sorted(ids[:REPLAY_ALL_LIMIT])


async def discard_pending(
    store: Store, export_id: str, now: int, asked_by: str, up_to: int | None = None
) -> tuple[int, int]:
    """Discard the export's pending letters (not one a replay is sending; up to id ``up_to`` only
    when given), said in the log: (letters, sessions) discarded. ``asked_by``: who asked."""
    letters, sessions = await store.discard_dead_letters(export_id, now, up_to)
    if letters:
        log.warning(
            "export %s: %d pending dead letter(s) holding %d session(s) discarded, as %s asked",
            export_id,
            letters,
            sessions,
            asked_by,
        )
    return letters, sessions


def letter_entries(letter: DeadLetter) -> list[LogEntry] | None:
    """The letter's sessions (identities and stored bytes) read back from its body: one line each,
    or an action line and a document line each (Elasticsearch); None when the body holds neither."""
    lines = letter.body.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    count = len(letter.sessions)
    if count and len(lines) == 2 * count:
        documents = lines[1::2]
    elif count and len(lines) == count:
        documents = lines
    else:
        return None
    return [
        LogEntry(
            letter.first_seq, letter.created_at, tenant, user_session, start, None, None, None, (), document
        )
        for (tenant, user_session, start), document in zip(letter.sessions, documents, strict=True)
    ]
