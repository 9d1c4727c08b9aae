"""What the web UI reads from the store, on both backends: delivery counts per minute for the health
chart, and sessions by user id for the search."""

from __future__ import annotations

from dataclasses import replace

import msgspec

from sessionexport.clock import MINUTE_MS
from sessionexport.store import Store
from sessionexport.store.records import HISTORY_MS, BulkDecision, DeliveryMinute
from tests.integration import test_store_backends as contract
from tests.integration.test_store_backends import claimed, letter, session

# The contract tests' fixtures: each test here runs on SQLite and on PostgreSQL.
backend = contract.backend
store = contract.store

M0 = 1_700_000_040_000 - 1_700_000_040_000 % MINUTE_MS  # the start of a minute


async def test_delivery_history_counts_per_minute_and_forgets_after_a_day(store: Store) -> None:
    await store.ensure_cursor("e1", 0, now=1)
    await store.ensure_cursor("e2", 0, now=1)
    e1, e2 = await claimed(store, "e1"), await claimed(store, "e2")
    await store.record_bulk(e1, 10, BulkDecision(delivered=10), now=M0 + 5_000)
    await store.record_bulk(e1, 20, BulkDecision(delivered=5, letters=(letter(count=2),)), now=M0 + 59_999)
    await store.record_bulk(e1, 30, BulkDecision(delivered=3), now=M0 + MINUTE_MS)
    await store.record_bulk(e2, 5, BulkDecision(delivered=7), now=M0 + 1)  # another export's own

    assert await store.delivery_history("e1", M0) == [
        DeliveryMinute(M0, 15, 2),
        DeliveryMinute(M0 + MINUTE_MS, 3, 0),
    ]
    assert await store.delivery_history("e1", M0 + 1) == [DeliveryMinute(M0 + MINUTE_MS, 3, 0)]
    assert await store.delivery_history("e2", 0) == [DeliveryMinute(M0, 7, 0)]

    # A day later, recording a bulk drops the minutes that fell out of the window.
    later = M0 + HISTORY_MS + 2 * MINUTE_MS
    await store.record_bulk(e1, 40, BulkDecision(delivered=1), now=later)
    assert await store.delivery_history("e1", 0) == [DeliveryMinute(later, 1, 0)]

    assert await store.count_dead_letters("e1") == 1
    await store.delete_cursor("e1")  # an export deleted takes its history and dead letters along
    assert await store.delivery_history("e1", 0) == []
    assert await store.count_dead_letters("e1") == 0
    assert await store.delivery_history("e2", 0) == [DeliveryMinute(M0, 7, 0)]


async def test_recent_sessions_of_one_user_newest_first(store: Store) -> None:
    alice = [replace(session(f"a{n}", start=n), user_id="alice") for n in range(5)]
    others = [replace(session(f"o{n}", start=n), user_id="bob") for n in range(3)]
    await store.append_sessions([*alice[:2], *others, *alice[2:]], received_at=1)

    found = await store.recent_sessions(user_id="alice", limit=10)
    assert [s.user_session_id for s in found] == ["a4", "a3", "a2", "a1", "a0"]
    page = await store.recent_sessions(user_id="alice", before_seq=found[1].seq, limit=2)
    assert [s.user_session_id for s in page] == ["a2", "a1"]
    assert await store.recent_sessions(user_id="nobody") == []
    both = await store.recent_sessions(user_id="alice", user_session_id="a3")
    assert [s.user_session_id for s in both] == ["a3"]


async def test_lookups_find_sessions_in_every_hour_of_the_log(store: Store) -> None:
    """On SQLite the lookups probe an index by hour: sessions that joined the log hours or days
    apart, with empty hours between them, are all found, newest first, and paged alike."""
    hour = 3_600_000
    t0 = 1_700_000_000_000 - 1_700_000_000_000 % hour + 59 * 60_000  # late in an hour
    arrivals = [t0, t0 + 2 * 60_000, t0 + 5 * hour, t0 + 49 * hour]  # the next hour, 5 h, 2 days
    for n, received_at in enumerate(arrivals):
        mine = replace(session(f"c{n}", start=n), user_id="carol")
        await store.append_sessions([mine, session(f"x{n}", start=n)], received_at=received_at)

    found = await store.recent_sessions(user_id="carol", limit=10)
    assert [s.user_session_id for s in found] == ["c3", "c2", "c1", "c0"]
    page = await store.recent_sessions(user_id="carol", before_seq=found[1].seq, limit=1)
    assert [s.user_session_id for s in page] == ["c1"]
    for n in range(4):  # the oldest hour as the newest
        assert [s.user_session_id for s in await store.recent_sessions(user_session_id=f"c{n}")] == [f"c{n}"]
    assert await store.recent_sessions(user_session_id="c0", user_id="someone else") == []
    # A clock behind (another process's): the newest session joined the log in an older hour.
    await store.append_sessions([replace(session("c4", start=4), user_id="carol")], received_at=t0)
    newest = await store.recent_sessions(user_id="carol", limit=2)
    assert [s.user_session_id for s in newest] == ["c4", "c3"]


async def test_paging_through_a_users_sessions_spread_over_hours(store: Store) -> None:
    hour = 3_600_000
    t0 = 1_700_000_000_000 - 1_700_000_000_000 % hour
    for n, received_at in enumerate([t0, t0, t0 + hour, t0 + 3 * hour, t0 + 3 * hour, t0 + 3 * hour]):
        await store.append_sessions(
            [replace(session(f"d{n}", start=n), user_id="dave")], received_at=received_at
        )

    pages, before = [], None
    while page := await store.recent_sessions(user_id="dave", before_seq=before, limit=2):
        pages.append([s.user_session_id for s in page])
        before = page[-1].seq
    assert pages == [["d5", "d4"], ["d3", "d2"], ["d1", "d0"]]


async def test_recent_log_without_bodies_has_the_attributes_only(store: Store) -> None:
    await store.append_sessions([session("a", start=1), session("b", start=2)], received_at=5)
    full = await store.recent_log(0, 10)
    bare = await store.recent_log(0, 10, bodies=False)
    assert [e.body for e in bare] == [b"", b""] and all(e.body for e in full)
    assert [msgspec.structs.replace(e, body=b"") for e in full] == bare  # every attribute the same
