"""The storage contract (``store.base.Store``), run against every backend: SQLite and PostgreSQL.

PostgreSQL tests need a server: ``SESSIONEXPORT_TEST_DATABASE_URL``, or the local one that
``scripts/postgres`` sets up (``scripts/test`` runs it). Without one they fail, never skip. Each
test gets a schema of its own (``search_path`` in the URL), dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from sessionexport import services
from sessionexport.clock import now_ms
from sessionexport.config import ServerConfig
from sessionexport.export.metrics import ExportMetrics
from sessionexport.export.notifier import LogNotifier
from sessionexport.export.supervisor import ExportSupervisor
from sessionexport.retention import purge_expired
from sessionexport.services import Services
from sessionexport.settings.objects import NewObject, SettingsService
from sessionexport.settings.schemas import EXPORT_SCHEMA, ZONE_SCHEMA
from sessionexport.settings.secrets import SecretBox, new_key
from sessionexport.store import (
    DATABASE_FILE,
    ExternalIdTaken,
    LeaseLost,
    Store,
    StoreError,
    TooManyObjects,
    VersionConflict,
    create_store,
    postgresql,
    postgresql_database,
)
from sessionexport.store.base import InvalidValue
from sessionexport.store.migrations import migrations_for
from sessionexport.store.postgresql import PostgresStore
from sessionexport.store.records import (
    AppendResult,
    BulkDecision,
    Claim,
    CompletedPart,
    Cursor,
    DeadLetter,
    EventsResult,
    ListedDeadLetter,
    LogRead,
    NewAlert,
    NewDeadLetter,
    NewEvent,
    NewSession,
    SettingsRecord,
)
from sessionexport.store.sqlite import SQLiteStore
from sessionexport.tokens import new_token
from tests.support.engine import export_value, until
from tests.support.postgres import fresh_schema
from tests.support.stores import opened, postgresql_at_version, sqlite_at_version
from tests.support.tcp_proxy import TcpProxy

BACKENDS = ["sqlite", "postgresql"]
T = TypeVar("T")


# -- the backends -------------------------------------------------------------------------------
@dataclass
class Backend:
    name: str
    new: Callable[[], Store]  # a store on the same database as every other one of this backend
    url: str | None = None  # PostgreSQL: the URL of this test's schema
    path: Path | None = None  # SQLite: the database file


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "postgresql":
        with fresh_schema(request.getfixturevalue("postgres_url")) as url:
            yield Backend("postgresql", lambda: create_store(tmp_path, url), url)
    else:
        yield Backend("sqlite", lambda: create_store(tmp_path), path=tmp_path / DATABASE_FILE)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    async with opened(backend.new) as s:
        yield s


# -- records ------------------------------------------------------------------------------------
def session(user: str, start: int = 1, tenant: str = "t1", **changes: object) -> NewSession:
    # Odd spacing, an escape and UTF-8: any re-serialisation would change these bytes.
    body = (
        f'{{ "tenantId":"{tenant}", "userSessionId":"{user}","startTime":{start}, "c":"caf\u00e9 \\"x\\"" }}'
    )
    fields: dict[str, object] = {
        "tenant_id": tenant,
        "user_session_id": user,
        "start_time": start,
        "end_time": start + 1000,
        "user_id": f"user-of-{user}",
        "user_type": "REAL_USER",
        "application_type": "WEB_APPLICATION",
        "country": "Austria",
        "applications": ("APPLICATION-1", "easyTravel \u00e9"),
        "body": body.encode(),
    }
    return NewSession(**(fields | changes))  # type: ignore[arg-type]


def sessions(count: int, prefix: str = "u") -> list[NewSession]:
    return [session(f"{prefix}{n}") for n in range(count)]


def setting(object_id: str, schema: str = "schema-a", created: int = 1, **changes: object) -> SettingsRecord:
    fields: dict[str, object] = {
        "object_id": object_id,
        "schema_id": schema,
        "scope": "environment",
        "external_id": None,
        "value": '{"name": "caf\u00e9", "password": "enc:v1:abc"}',
        "schema_version": "1.0.3",
        "created": created,
        "modified": created,
        "created_by": "alice",
        "modified_by": "alice",
        "version": 1,
    }
    return SettingsRecord(**(fields | changes))  # type: ignore[arg-type]


def letter(export_id: str = "e1", reason: str = "Request failed: 500", count: int = 2) -> NewDeadLetter:
    return NewDeadLetter(
        export_id=export_id,
        created_at=100,
        first_seq=1,
        last_seq=count,
        sessions=[("t1", f"u{n}", n) for n in range(count)],
        content_type="application/x-ndjson",
        body=b'{"a":1}\n{"b":"\xc3\xa9"}',
        reason=reason,
        attempts=[{"number": 1, "status": 500, "error": None, "durationMs": 12.5}],
    )


def event(event_id: str, ts: int, session_id: str = "s1", kind: str = "action") -> NewEvent:
    return NewEvent("t1", session_id, event_id, ts, kind, f'{{"eventId":"{event_id}","ts":{ts}}}'.encode())


async def claimed(
    store: Store, export_id: str = "e1", shard: int = 0, shards: int = 1, owner: str = "w1"
) -> Claim:
    """A claim under a lease just taken (for a minute)."""
    assert await store.claim_lease(export_id, shard, owner, lease_ms=60_000)
    return Claim(export_id, shard, shards, owner)


def part(
    session_id: str = "s1",
    record: NewSession | None = None,
    consumed: tuple[str, ...] = (),
    until: int | None = None,
    check_at: int | None = None,
    split: bool = False,
    start: int | None = None,
    seen_arrivals: int | None = None,
) -> CompletedPart:
    return CompletedPart("t1", session_id, record, consumed, until, split, check_at, start, seen_arrivals)


# -- session log --------------------------------------------------------------------------------
async def test_a_value_the_database_cannot_hold_is_the_requests_fault(store: Store) -> None:
    """NUL in text: PostgreSQL refuses it (InvalidValue, a bad request, not "storage unavailable");
    SQLite holds it, and nothing matches."""
    try:
        assert await store.recent_sessions(user_session_id="a\x00b") == []
    except InvalidValue as exc:
        assert "NUL" in str(exc)


def _widest(length: int, seed: int) -> str:
    """``length`` characters of 4 bytes each in UTF-8, none repeated in a row (nothing to compress)."""
    rng = random.Random(seed)
    return "".join(chr(0x10000 + rng.randrange(0x10000)) for _ in range(length))


async def test_identifiers_as_long_as_the_model_allows_fit_every_index(store: Store) -> None:
    """The model's limits (200 characters per identifier, 512 per user id) hold on PostgreSQL too,
    whose index entries are at most 2704 bytes: here with 4 bytes per character."""
    tenant, user = _widest(200, 1), _widest(200, 2)
    long = session(user, tenant=tenant, user_id=_widest(512, 3))
    assert (await store.append_sessions([long], 1000)).accepted == 1
    [found] = await store.recent_sessions(user_session_id=user)
    assert (found.tenant_id, found.user_session_id) == (tenant, user)
    ids = tenant, _widest(200, 4), _widest(200, 5)
    widest_event = NewEvent(*ids, 1, "action", b"{}")
    assert (await store.add_events([widest_event], now=100, check_at=110)).accepted == 1


async def test_a_value_too_long_to_index_is_the_requests_fault(store: Store) -> None:
    """Past the model's limits, PostgreSQL refuses the index entry: a bad request (InvalidValue),
    never "storage unavailable" (which tells the sender to retry it forever). SQLite holds it."""
    too_long = session(_widest(1000, 6))
    try:
        assert (await store.append_sessions([too_long], 1000)).accepted == 1
    except InvalidValue as exc:
        assert "index row size" in str(exc)
    else:
        assert isinstance(store, SQLiteStore)


async def test_append_counts_duplicates_within_and_across_batches(store: Store) -> None:
    first = await store.append_sessions([*sessions(3), session("u0")], received_at=1000)
    assert (first.accepted, first.duplicates) == (3, 1)
    changed_body = session("u1", body=b'{"other":1}')  # same identity, other bytes: still a duplicate
    again = await store.append_sessions(
        [changed_body, session("u1", start=2), session("u1", tenant="t2")], 2000
    )
    assert (again.accepted, again.duplicates) == (2, 1)
    assert (await store.append_sessions([], 3000)).accepted == 0
    assert await store.count_sessions() == 5
    stored = {(s.tenant_id, s.user_session_id, s.start_time): s for s in await store.recent_sessions()}
    kept = stored[("t1", "u1", 1)]
    assert (kept.body, kept.received_at, kept.end_time) == (session("u1").body, 1000, 1001)


async def test_failed_append_keeps_nothing_of_its_batch(store: Store) -> None:
    await store.append_sessions([session("u0")], 1)
    poisoned = session("bad", tenant=cast(str, None))  # NOT NULL fails after the good rows went in
    with pytest.raises(StoreError):
        await store.append_sessions([session("u1"), session("u2"), poisoned], 2)
    assert [s.user_session_id for s in await store.recent_sessions()] == ["u0"]
    assert (await store.append_sessions([session("u1"), session("u2")], 3)).accepted == 2


async def test_recent_sessions_newest_first_with_paging_and_filter(store: Store) -> None:
    batch = sessions(7)
    await store.append_sessions(batch, received_at=1)
    await store.append_sessions([session("u3", start=50)], received_at=2)
    page1 = await store.recent_sessions(limit=3)
    page2 = await store.recent_sessions(limit=3, before_seq=page1[-1].seq)
    assert [s.user_session_id for s in page1 + page2] == ["u3", "u6", "u5", "u4", "u3", "u2"]
    seqs = [s.seq for s in page1 + page2]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == 6
    only = await store.recent_sessions(user_session_id="u3")
    assert [(s.user_session_id, s.start_time) for s in only] == [("u3", 50), ("u3", 1)]
    older = await store.recent_sessions(user_session_id="u3", before_seq=only[0].seq)
    assert [s.start_time for s in older] == [1]
    assert await store.recent_sessions(user_session_id="nobody") == []


async def test_recent_sessions_stop_once_their_bodies_reach_max_bytes(store: Store) -> None:
    batch = sessions(6)
    await store.append_sessions(batch, received_at=1)
    size = len(batch[0].body)  # all alike but for one digit
    assert {len(s.body) for s in batch} == {size}
    cut = await store.recent_sessions(limit=10, max_bytes=2 * size + 1)
    assert [s.user_session_id for s in cut] == ["u5", "u4", "u3"]  # the one that reaches it included
    exact = await store.recent_sessions(limit=10, max_bytes=2 * size)
    assert [s.user_session_id for s in exact] == ["u5", "u4"]
    assert len(await store.recent_sessions(limit=10, max_bytes=1)) == 1  # at least one
    assert len(await store.recent_sessions(limit=4, max_bytes=100 * size)) == 4  # the limit still holds
    of_one = await store.recent_sessions(user_session_id="u2", max_bytes=1)
    of_user = await store.recent_sessions(user_id="user-of-u2", max_bytes=1, before_seq=cut[0].seq)
    assert [s.body for s in of_one] == [s.body for s in of_user] == [batch[2].body]


async def test_read_log_in_seq_order_with_filter_attributes(store: Store) -> None:
    batch = [
        *sessions(4),
        session("anon", user_type=None, application_type=None, country=None, applications=()),
    ]
    await store.append_sessions(batch, received_at=7)
    log = await store.read_log(0, limit=100)
    assert [e.user_session_id for e in log] == [s.user_session_id for s in batch]
    assert [e.seq for e in log] == sorted(e.seq for e in log)
    first, anon = log[0], log[-1]
    assert (first.received_at, first.tenant_id, first.start_time, first.body) == (7, "t1", 1, batch[0].body)
    assert (first.user_type, first.application_type, first.country) == (
        "REAL_USER",
        "WEB_APPLICATION",
        "Austria",
    )
    assert first.applications == ("APPLICATION-1", "easyTravel \u00e9")
    assert (anon.user_type, anon.application_type, anon.country, anon.applications) == (None, None, None, ())
    after = await store.read_log(log[1].seq, limit=2)
    assert [e.seq for e in after] == [log[2].seq, log[3].seq]
    assert await store.read_log(log[-1].seq, limit=10) == []


async def test_recent_log_since_and_before_newest_first(store: Store) -> None:
    await store.append_sessions(sessions(2, "old"), received_at=100)
    await store.append_sessions(sessions(3, "new"), received_at=200)
    recent = await store.recent_log(received_since=200, limit=10)
    assert [e.user_session_id for e in recent] == ["new2", "new1", "new0"]
    assert len(await store.recent_log(received_since=0, limit=10)) == 5
    page = await store.recent_log(received_since=0, limit=2, before_seq=recent[1].seq)
    assert [e.user_session_id for e in page] == ["new0", "old1"]


async def test_purge_boundaries_and_seqs_never_reused(store: Store) -> None:
    await store.append_sessions(sessions(3, "a"), received_at=1_000)
    await store.append_sessions(sessions(2, "b"), received_at=5_000)
    seqs = [e.seq for e in await store.read_log(0, 10)]
    assert await store.position_before(5_000) == seqs[2]
    assert await store.position_before(1_000) == seqs[0] - 1
    assert await store.purge_sessions(await store.position_before(2_000)) == 3
    assert await store.count_sessions() == 2
    assert await store.position_before(10_000) == seqs[-1]
    assert await store.purge_sessions(seqs[-1]) == 2
    assert await store.position_before(10_000) == 0  # an empty log
    await store.append_sessions([session("c")], received_at=20_000)
    assert (await store.read_log(0, 10))[0].seq > seqs[-1]  # cursors can never see a seq twice


async def test_the_purge_boundary_stops_at_the_first_session_that_stays(store: Store) -> None:
    """Sessions join the log with their host's time: one whose host's clock was behind comes after
    newer ones. The purge takes the log's prefix, so no cursor passes a session that stays."""
    await store.append_sessions(sessions(2, "old"), received_at=1_000)
    await store.append_sessions(sessions(2, "new"), received_at=5_000)
    await store.append_sessions(sessions(2, "late"), received_at=1_500)  # its host's clock behind
    seqs = [e.seq for e in await store.read_log(0, 10)]
    prefix = await store.position_before(2_000)
    assert prefix == seqs[1]
    assert await store.purge_sessions(prefix) == 2
    assert [e.user_session_id for e in await store.read_log(0, 10)] == ["new0", "new1", "late0", "late1"]
    assert await store.position_before(6_000) == seqs[-1]  # once the newer ones expired too


async def test_log_position_position_before_and_backlog(store: Store) -> None:
    assert (await store.log_position(), await store.position_before(0)) == (0, 0)
    assert await store.backlog(0) == (0, None)
    await store.append_sessions(sessions(2, "a"), received_at=100)
    await store.append_sessions(sessions(3, "b"), received_at=200)
    seqs = [e.seq for e in await store.read_log(0, 10)]
    assert await store.log_position() == seqs[-1]
    assert await store.position_before(200) == seqs[2] - 1  # just before the first one received at 200
    assert await store.position_before(150) == seqs[2] - 1
    assert await store.position_before(0) == seqs[0] - 1
    assert await store.position_before(999) == seqs[-1]  # nothing that recent: the end of the log
    assert await store.backlog(0) == (5, 100)
    assert await store.backlog(seqs[1]) == (3, 200)
    assert await store.backlog(seqs[-1]) == (0, None)


async def test_a_shards_backlog_counts_its_own_sessions(store: Store) -> None:
    await store.append_sessions(sessions(3, "a"), received_at=100)
    await store.append_sessions(sessions(3, "b"), received_at=200)
    seqs = [e.seq for e in await store.read_log(0, 10)]
    parts = [[seq for seq in seqs if seq % 2 == shard] for shard in (0, 1)]
    for shard, mine in enumerate(parts):
        first_at = 100 if mine[0] in seqs[:3] else 200
        assert await store.backlog(0, shard, 2) == (len(mine), first_at)
        assert await store.backlog(mine[-1], shard, 2) == (0, None)
    later = [seq for seq in parts[1] if seq > seqs[2]]  # shard 1's sessions received at 200
    assert await store.backlog(seqs[2], 1, 2) == (len(later), 200 if later else None)


# -- API tokens ---------------------------------------------------------------------------------
async def test_tokens_add_get_list_revoke(store: Store) -> None:
    first = new_token("ci", frozenset({"sessions.read", "settings.write"}), 123, expires_at=456).record
    second = new_token("none", frozenset(), 124).record
    await store.add_token(first)
    await store.add_token(second)
    assert await store.get_token(first.id) == first
    assert await store.get_token(second.id) == second  # no scopes comes back as no scopes
    assert await store.get_token("missing") is None
    assert [t.id for t in await store.list_tokens()] == [first.id, second.id]
    assert await store.revoke_token(first.id, 456) is True
    assert await store.revoke_token(first.id, 789) is False
    assert await store.revoke_token("missing", 789) is False
    assert await store.get_token(first.id) == replace(first, revoked_at=456)
    with pytest.raises(StoreError):
        await store.add_token(first)  # the id is unique


# -- settings objects ---------------------------------------------------------------------------
async def test_settings_insert_list_get_and_object_limit(store: Store) -> None:
    await store.insert_setting(setting("b", created=2), max_objects=2)
    await store.insert_setting(setting("a", created=2, external_id="ext-a"), max_objects=2)
    await store.insert_setting(setting("z", schema="schema-b", created=1), max_objects=2)
    with pytest.raises(TooManyObjects):
        await store.insert_setting(setting("c", created=3), max_objects=2)
    assert [s.object_id for s in await store.list_settings()] == ["z", "a", "b"]  # created, then id
    assert [s.object_id for s in await store.list_settings("schema-a")] == ["a", "b"]
    assert await store.list_settings("schema-none") == []
    assert await store.get_setting("a") == setting("a", created=2, external_id="ext-a")
    assert await store.get_setting("c") is None
    await store.insert_setting(setting("d", schema="schema-b", external_id="x", created=5), max_objects=9)
    with pytest.raises(ExternalIdTaken):  # (schema, externalId) is unique
        await store.insert_setting(setting("e", schema="schema-b", external_id="x"), max_objects=9)
    assert [s.object_id for s in await store.list_settings("schema-b")] == ["z", "d"]
    await store.insert_setting(setting("f", external_id="x"), max_objects=9)  # in another schema


async def test_concurrent_inserts_respect_the_object_limit(backend: Backend) -> None:
    # Several stores on one database, as several processes would be: the count and the insert of
    # one must not interleave with another's.
    async with opened(backend.new) as a, opened(backend.new) as b, opened(backend.new) as c:
        inserts = [
            store.insert_setting(setting(f"o{n}-{i}", created=n), max_objects=1)
            for n in range(4)
            for i, store in enumerate((a, b, c))
        ]
        outcomes = await asyncio.gather(*inserts, return_exceptions=True)
        assert sum(outcome is None for outcome in outcomes) == 1
        assert all(isinstance(o, TooManyObjects) for o in outcomes if o is not None)
        assert len(await a.list_settings("schema-a")) == 1


async def test_upserts_of_one_external_id_from_several_processes_make_one_object(backend: Backend) -> None:
    """Each service (a process of its own, with its own lock) finds no object with the externalId,
    then all insert: the later ones find it taken and update the object the first created."""
    box = SecretBox([new_key().encode()])
    async with opened(backend.new) as a, opened(backend.new) as b, opened(backend.new) as c:
        services = [SettingsService(store, box) for store in (a, b, c)]
        value = export_value("https://receiver.example/export")
        upserts = [
            service.create(NewObject(EXPORT_SCHEMA, "environment", value, external_id="same"), "bob", 1)
            for service in services
            for _ in range(2)
        ]
        results = await asyncio.gather(*upserts)
        assert [r.code for r in results] == [200] * 6, [r.message for r in results]
        [stored] = await a.list_settings(EXPORT_SCHEMA)
        assert stored.external_id == "same"
        assert {r.object_id for r in results} == {stored.object_id}


async def test_settings_update_and_delete_check_the_version(store: Store) -> None:
    await store.insert_setting(setting("a"), max_objects=3)
    changed = setting("a", value='{"name":"new"}', modified=5, modified_by="bob", version=2, external_id="x")
    await store.update_setting(changed, expected_version=1)
    assert await store.get_setting("a") == changed
    with pytest.raises(VersionConflict):
        await store.update_setting(replace(changed, version=3), expected_version=1)  # stale
    with pytest.raises(VersionConflict):
        await store.update_setting(setting("missing"), expected_version=1)
    assert await store.get_setting("a") == changed
    with pytest.raises(VersionConflict):
        await store.delete_setting("a", expected_version=1)
    assert await store.get_setting("a") == changed
    assert await store.delete_setting("a", expected_version=2) is True
    assert await store.delete_setting("a", expected_version=2) is False
    await store.insert_setting(setting("b"), max_objects=3)
    assert await store.delete_setting("b", expected_version=None) is True
    assert await store.list_settings() == []


async def test_concurrent_updates_of_one_version_let_one_win(store: Store) -> None:
    await store.insert_setting(setting("a"), max_objects=3)
    updates = [
        store.update_setting(setting("a", value=f'{{"n":{n}}}', version=2), expected_version=1)
        for n in range(5)
    ]
    outcomes = await asyncio.gather(*updates, return_exceptions=True)
    assert sum(outcome is None for outcome in outcomes) == 1
    assert sum(isinstance(outcome, VersionConflict) for outcome in outcomes) == 4


# -- export cursors -----------------------------------------------------------------------------
async def test_cursors_ensure_move_get_list_delete(store: Store) -> None:
    created = await store.ensure_cursor("e1", 5, now=10)
    assert (created.export_id, created.position, created.delivered, created.last_success_at) == (
        "e1",
        5,
        0,
        None,
    )
    assert (await store.ensure_cursor("e1", 99, now=11)).position == 5  # an existing cursor stays
    assert await store.get_cursor("e2") is None
    await store.move_cursor("e2", 7, now=12)  # creates it
    await store.move_cursor("e1", 2, now=13)  # back: replay from 2
    assert [(c.export_id, c.position) for c in await store.list_cursors()] == [("e1", 2), ("e2", 7)]
    await store.record_skip(await claimed(store, "e1"), 1, now=14)  # never backwards
    await store.record_skip(await claimed(store, "e2"), 9, now=14)
    await store.record_error("e1", "connection refused", now=15)
    e1, e2 = await store.get_cursor("e1"), await store.get_cursor("e2")
    assert e1 is not None and (e1.position, e1.last_error_at, e1.last_error) == (2, 15, "connection refused")
    assert e2 is not None and e2.position == 9
    await store.delete_cursor("e1")
    await store.delete_cursor("nothing")
    assert [c.export_id for c in await store.list_cursors()] == ["e2"]


async def test_concurrent_ensures_make_one_cursor(store: Store) -> None:
    cursors = await asyncio.gather(*(store.ensure_cursor("e1", n, now=n) for n in range(6)))
    assert len({c.position for c in cursors}) == 1
    assert len(await store.list_cursors()) == 1


async def test_record_bulk_counts_letters_and_moves_the_cursor(store: Store) -> None:
    await store.ensure_cursor("e1", 0, now=1)
    e1 = await claimed(store, "e1")
    assert await store.record_bulk(e1, 10, BulkDecision(delivered=10), now=2) == []
    cursor = await store.get_cursor("e1")
    assert cursor is not None
    assert (cursor.position, cursor.delivered, cursor.failed, cursor.last_success_at) == (10, 10, 0, 2)
    letters = (letter(reason="first", count=2), letter(reason="Request timeout", count=3))
    ids = await store.record_bulk(e1, 20, BulkDecision(delivered=0, retried=4, letters=letters), now=3)
    assert len(ids) == 2 and ids[0] < ids[1]
    cursor = await store.get_cursor("e1")
    assert cursor is not None
    assert (cursor.position, cursor.delivered, cursor.failed, cursor.retried) == (20, 10, 5, 4)
    assert (cursor.last_success_at, cursor.last_error_at, cursor.last_error) == (2, 3, "Request timeout")
    await store.record_bulk(e1, 15, BulkDecision(delivered=1), now=4)  # never backwards
    cursor = await store.get_cursor("e1")
    assert cursor is not None and (cursor.position, cursor.delivered, cursor.last_success_at) == (20, 11, 4)
    assert await store.count_dead_letters("e1") == 2


async def test_failed_record_bulk_keeps_neither_letters_nor_position(store: Store) -> None:
    await store.ensure_cursor("e1", 0, now=1)
    broken = replace(letter(), body=cast(bytes, None))
    with pytest.raises(StoreError):
        await store.record_bulk(
            await claimed(store), 10, BulkDecision(delivered=3, letters=(letter(), broken)), now=2
        )
    cursor = await store.get_cursor("e1")
    assert cursor is not None and (cursor.position, cursor.delivered, cursor.failed) == (0, 0, 0)
    assert await store.list_dead_letters("e1") == []


async def test_record_bulk_raises_and_closes_alerts_with_its_letters(store: Store) -> None:
    await store.ensure_cursor("e1", 0, now=1)
    e1 = await claimed(store, "e1")
    timeout = NewAlert("delivery", "Request timeout", "no answer in 30 s")
    await store.record_bulk(e1, 10, BulkDecision(0, letters=(letter(),), alerts=(timeout,)), now=2)
    [alert] = await store.list_alerts(open_only=True)
    assert (alert.kind, alert.title, alert.opened_at) == ("delivery", "Request timeout", 2)
    failed = NewAlert("delivery", "Request failed: 503", "Service Unavailable")
    await store.record_bulk(e1, 20, BulkDecision(0, letters=(letter(),), alerts=(failed,)), now=3)
    [alert] = await store.list_alerts(open_only=True)  # the same alert, seen again
    assert (alert.title, alert.occurrences, alert.last_seen_at) == ("Request failed: 503", 2, 3)
    await store.record_bulk(e1, 30, BulkDecision(5, closes=("delivery", "token")), now=4)
    assert await store.list_alerts(open_only=True) == []
    assert [a.closed_at for a in await store.list_alerts()] == [4]


async def test_a_refused_record_bulk_raises_no_alert(store: Store) -> None:
    await store.ensure_cursor("e1", 0, now=1)
    stale = Claim("e1", 0, 1, "nobody")  # never held the lease
    alert = NewAlert("delivery", "Request timeout", "no answer in 30 s")
    with pytest.raises(LeaseLost):
        await store.record_bulk(stale, 10, BulkDecision(0, letters=(letter(),), alerts=(alert,)), now=2)
    assert await store.list_alerts() == []


async def test_an_ended_ui_session_is_refused_until_its_cookie_would_expire(store: Store) -> None:
    assert not await store.ui_session_ended("s1")
    await store.end_ui_session("s1", expires_at=1_000, now=10)
    await store.end_ui_session("s1", expires_at=1_000, now=20)  # ending it twice is harmless
    assert await store.ui_session_ended("s1") and not await store.ui_session_ended("s2")
    await store.end_ui_session("s2", expires_at=5_000, now=2_000)  # s1's cookie has expired by now
    assert not await store.ui_session_ended("s1") and await store.ui_session_ended("s2")


# -- work distribution: leases, shards, workers ---------------------------------------------------
async def test_a_lease_is_one_workers_until_it_expires(store: Store) -> None:
    assert await store.claim_lease("e1", 0, "a", lease_ms=300)
    assert not await store.claim_lease("e1", 0, "b", lease_ms=300)
    assert await store.claim_lease("e1", 1, "b", lease_ms=300)  # another shard: free
    assert await store.claim_lease("e1", 0, "a", lease_ms=300)  # its own: renewed
    assert [(le.export_id, le.shard, le.owner) for le in await store.list_leases()] == [
        ("e1", 0, "a"),
        ("e1", 1, "b"),
    ]
    await asyncio.sleep(0.4)
    assert await store.list_leases() == []
    assert await store.claim_lease("e1", 0, "b", lease_ms=300)  # expired: anyone's
    assert not await store.claim_lease("e1", 0, "a", lease_ms=300)


async def test_concurrent_claims_of_a_free_lease_give_it_to_one(store: Store) -> None:
    won = await asyncio.gather(*(store.claim_lease("e1", 0, f"w{n}", lease_ms=60_000) for n in range(6)))
    assert sum(won) == 1


async def test_a_heartbeat_renews_what_is_held_and_lists_the_live_workers(store: Store) -> None:
    assert (await store.heartbeat("b", lease_ms=60_000)).leases == ()
    assert await store.claim_lease("e1", 0, "a", lease_ms=300)
    assert await store.claim_lease("e2", 0, "b", lease_ms=60_000)
    state = await store.heartbeat("a", lease_ms=60_000)
    assert state.workers == ("a", "b")
    assert [(le.export_id, le.owner) for le in state.leases] == [("e1", "a"), ("e2", "b")]
    await asyncio.sleep(0.4)  # a's lease was renewed for a minute: still a's
    assert not await store.claim_lease("e1", 0, "b", lease_ms=60_000)
    await store.release_lease("e1", 0, "b")  # not b's: nothing happens
    await store.retire_worker("a")
    assert (await store.heartbeat("b", lease_ms=60_000)).workers == ("b",)
    assert [le.export_id for le in await store.list_leases()] == ["e2"]
    await store.release_lease("e2", 0, "b")
    assert await store.list_leases() == []


async def test_an_expired_lease_is_lost_not_renewed(store: Store) -> None:
    assert await store.claim_lease("e1", 0, "a", lease_ms=100)
    await asyncio.sleep(0.2)
    state = await store.heartbeat("a", lease_ms=60_000)
    assert state.leases == () and state.workers == ("a",)


async def test_a_worker_that_lost_its_lease_moves_the_cursor_neither_back_nor_forth(store: Store) -> None:
    await store.ensure_cursor("e1", 0, now=1)
    assert await store.claim_lease("e1", 0, "stale", lease_ms=200)
    stale = Claim("e1", 0, 1, "stale")
    await store.record_bulk(stale, 10, BulkDecision(delivered=10), now=2)
    await asyncio.sleep(0.3)  # "stale" paused past its lease
    with pytest.raises(LeaseLost):  # expired, even before anyone took over
        await store.record_skip(stale, 12, now=3)
    taker = await claimed(store, "e1", owner="taker")
    await store.record_bulk(taker, 20, BulkDecision(delivered=10), now=4)
    with pytest.raises(LeaseLost):
        await store.record_bulk(stale, 15, BulkDecision(delivered=5, letters=(letter(),)), now=5)
    with pytest.raises(LeaseLost):
        await store.record_skip(stale, 30, now=5)
    cursor = await store.get_cursor("e1")
    assert cursor is not None and (cursor.position, cursor.delivered) == (20, 20)
    assert await store.list_dead_letters("e1") == []  # the refused bulk's letters were not kept


async def test_shards_read_their_own_sessions_and_cover_the_log(store: Store) -> None:
    await store.append_sessions(sessions(10), received_at=1)
    seqs = [e.seq for e in await store.read_log(0, 100)]
    first = await store.read_shard(0, 2, shard=1, shards=3)
    assert [e.seq for e in first.entries] == [s for s in seqs if s % 3 == 1][:2]
    assert first.end == first.entries[-1].seq  # as many as asked: covers up to the last one
    rest = await store.read_shard(first.end, 100, shard=1, shards=3)
    assert [e.seq for e in rest.entries] == [s for s in seqs if s % 3 == 1][2:]
    assert rest.end == seqs[-1]  # fewer: covers the whole log, other shards' sessions too
    assert await store.read_shard(seqs[-1] + 5, 100, 0, 3) == LogRead([], seqs[-1] + 5)  # never back
    whole = await store.read_shard(0, 100, 0, 1)
    assert ([e.seq for e in whole.entries], whole.end) == (seqs, seqs[-1])


async def test_a_cursor_in_shards_counts_as_its_slowest_shard(store: Store) -> None:
    shards = [await claimed(store, "e1", n, 3) for n in range(3)]
    assert [await store.start_shard(c, 5, now=1) for c in shards] == [5, 5, 5]  # made at the position
    await store.record_bulk(shards[0], 30, BulkDecision(delivered=4), now=2)
    await store.record_bulk(shards[1], 20, BulkDecision(delivered=3, letters=(letter(count=2),)), now=3)
    await store.record_skip(shards[2], 25, now=4)
    assert await store.start_shard(shards[0], 99, now=5) == 30  # an existing cursor stays
    cursor = await store.get_cursor("e1")
    assert cursor is not None
    assert (cursor.position, cursor.delivered, cursor.failed, cursor.shards) == (20, 7, 2, 3)
    assert (cursor.last_success_at, cursor.last_error) == (3, "Request failed: 500")
    assert [(c.shard, c.position) for c in await store.list_cursors()] == [(0, 30), (1, 20), (2, 25)]


async def test_splitting_anew_starts_every_shard_at_the_slowest_and_refuses_the_old_split(
    store: Store,
) -> None:
    old = [await claimed(store, "e1", n, 2) for n in range(2)]
    for claim, position in zip(old, (40, 30), strict=True):
        await store.start_shard(claim, 0, now=1)
        await store.record_bulk(claim, position, BulkDecision(delivered=position), now=2)
    new = Claim("e1", 2, 3, "w1")
    assert await store.claim_lease("e1", 2, "w1", lease_ms=60_000)
    assert await store.start_shard(new, 0, now=3) == 30  # nothing passed over, 31..40 sent again
    assert [(c.shard, c.shards, c.position) for c in await store.list_cursors()] == [
        (0, 3, 30),
        (1, 3, 30),
        (2, 3, 30),
    ]
    cursor = await store.get_cursor("e1")
    assert cursor is not None and cursor.delivered == 70  # the totals stay
    with pytest.raises(LeaseLost):  # an exporter still on the old split writes nothing
        await store.record_bulk(old[0], 50, BulkDecision(delivered=1), now=4)
    with pytest.raises(LeaseLost):
        await store.start_shard(Claim("e1", 2, 3, "not-the-holder"), 0, now=4)


async def test_moving_a_cursor_revokes_its_leases_and_advancing_never_goes_back(store: Store) -> None:
    shards = [await claimed(store, "e1", n, 2) for n in range(2)]
    for claim in shards:
        await store.start_shard(claim, 10, now=1)
    await store.record_skip(shards[0], 50, now=2)
    never = NewAlert("retention", "none lost", "")  # no session was there to lose
    assert await store.pass_expired("e1", 30, 3, "retention", lambda *_: never) == 0
    assert [c.position for c in await store.list_cursors()] == [50, 30]
    assert await store.list_alerts() == []
    await store.move_cursor("e1", 5, now=4)  # replay: every shard from 5, whoever exported it stops
    assert [c.position for c in await store.list_cursors()] == [5, 5]
    assert await store.list_leases() == []
    with pytest.raises(LeaseLost):
        await store.record_skip(shards[1], 60, now=5)
    await store.delete_cursor("e1")
    assert await store.list_cursors() == []


# -- dead letters -------------------------------------------------------------------------------
async def test_dead_letters_list_get_count_and_replay(store: Store) -> None:
    await store.ensure_cursor("e1", 0, now=1)
    await store.ensure_cursor("other", 0, now=1)
    sent = [letter(reason=f"r{n}") for n in range(3)]
    ids = await store.record_bulk(
        await claimed(store), 9, BulkDecision(delivered=0, letters=tuple(sent)), now=2
    )
    other = await claimed(store, "other")
    await store.record_bulk(other, 9, BulkDecision(delivered=0, letters=(letter("other"),)), now=2)
    stored = await store.get_dead_letter(ids[0])
    assert stored == DeadLetter(
        **{f.name: getattr(sent[0], f.name) for f in fields(NewDeadLetter)}, id=ids[0]
    )
    assert await store.get_dead_letter(max(ids) + 100) is None
    assert [d.id for d in await store.list_dead_letters("e1")] == ids[::-1]
    assert [d.id for d in await store.list_dead_letters("e1", limit=2)] == [ids[2], ids[1]]
    assert [d.id for d in await store.list_dead_letters("e1", before_id=ids[1])] == [ids[0]]
    # listed without their bodies (up to a whole bulk each), but with each body's size
    [listed] = await store.list_dead_letters("e1", limit=1, before_id=ids[1])
    assert listed == ListedDeadLetter(
        **{f.name: getattr(sent[0], f.name) for f in fields(NewDeadLetter) if f.name != "body"},
        size=len(sent[0].body),
        id=ids[0],
        state="pending",
        replayed_at=None,
    )
    [other_id] = [d.id for d in await store.list_dead_letters("other")]
    chosen = await store.list_dead_letters("e1", ids=[ids[2], ids[0], other_id, max(ids) + 100])
    assert [d.id for d in chosen] == [ids[2], ids[0]]  # of this export, and there
    attempt: dict[str, object] = {
        "number": 2,
        "status": None,
        "error": "timeout",
        "nested": {"a": [1, "\u00e9"]},
    }
    await store.finish_replay(ids[1], [attempt], delivered=False, now=5, reason="Request timeout")
    still = await store.get_dead_letter(ids[1])
    assert still is not None and (still.state, still.replayed_at) == ("pending", None)
    assert still.attempts == [*sent[1].attempts, attempt]
    assert still.reason == "Request timeout"  # why it failed this time; the first reason is history
    await store.finish_replay(ids[1], [{"number": 3, "status": 200}], delivered=True, now=6, reason="x")
    done = await store.get_dead_letter(ids[1])
    assert done is not None and (done.state, done.replayed_at, len(done.attempts)) == ("replayed", 6, 3)
    assert done.reason == "Request timeout"  # a delivered letter keeps the reason it was kept for
    await store.finish_replay(max(ids) + 100, [], delivered=True, now=7)  # gone: nothing to do
    assert (await store.count_dead_letters("e1"), await store.count_dead_letters("e1", "replayed")) == (2, 1)
    assert [d.id for d in await store.list_dead_letters("e1", state="replayed")] == [ids[1]]
    assert [d.id for d in await store.list_dead_letters("e1", state="pending")] == [ids[2], ids[0]]


async def test_the_bodies_of_letters_replayed_before_a_time_are_emptied_and_the_letters_kept(
    store: Store,
) -> None:
    """Session content, delivered: kept no longer than the log keeps sessions. What the letter
    says of itself stays (its sessions, attempts, replayed counts); a pending letter keeps all."""
    await store.ensure_cursor("e1", 0, now=1)
    e1 = await claimed(store, "e1")
    ids = await store.record_bulk(
        e1, 9, BulkDecision(delivered=0, letters=(letter(), letter(), letter())), now=2
    )
    await store.finish_replay(ids[0], [{"number": 2, "status": 200}], delivered=True, now=10)
    await store.finish_replay(ids[1], [{"number": 2, "status": 200}], delivered=True, now=30)
    replayed_before = await store.replayed_sessions("e1")
    assert await store.purge_replayed_bodies(20) == 1
    assert await store.purge_replayed_bodies(20) == 0  # emptied once
    emptied, later, pending = [await store.get_dead_letter(i) for i in ids]
    assert emptied is not None and (emptied.body, emptied.state) == (b"", "replayed")
    assert emptied.sessions == letter().sessions  # what it held is still said
    assert later is not None and later.body != b""  # replayed after the time: kept
    assert pending is not None and pending.body != b"" and pending.state == "pending"
    assert await store.replayed_sessions("e1") == replayed_before


async def test_a_replay_claims_a_letter_until_it_finishes_or_its_claim_runs_out(store: Store) -> None:
    await store.ensure_cursor("e1", 0, now=1)
    e1 = await claimed(store, "e1")
    [first, second] = await store.record_bulk(
        e1, 9, BulkDecision(delivered=0, letters=(letter(), letter())), now=2
    )
    assert (await store.claim_dead_letter(first, "other", now=10, until=100)) is None  # not its letter
    claimed_letter = await store.claim_dead_letter(first, "e1", now=10, until=100)
    assert claimed_letter is not None and claimed_letter.id == first and claimed_letter.body == letter().body
    assert await store.claim_dead_letter(first, "e1", now=50, until=150) is None  # held by that replay
    assert await store.claim_dead_letter(second, "e1", now=50, until=150) is not None  # another letter
    await store.finish_replay(first, [{"number": 1, "status": 200}], delivered=True, now=60)
    assert await store.claim_dead_letter(first, "e1", now=70, until=170) is None  # replayed: done
    # a replay failing after another delivered it leaves it delivered
    await store.finish_replay(first, [{"number": 1, "status": 500}], delivered=False, now=80, reason="x")
    done = await store.get_dead_letter(first)
    assert done is not None and (done.state, done.reason, len(done.attempts)) == (
        "replayed",
        letter().reason,
        2,
    )
    # a claim that ran out (its replay crashed) no longer holds the letter
    assert await store.claim_dead_letter(second, "e1", now=151, until=250) is not None
    await store.finish_replay(second, [{"number": 1, "status": 500}], delivered=False, now=160, reason="y")
    assert await store.claim_dead_letter(second, "e1", now=161, until=260) is not None  # finished: free


async def test_a_replay_renews_its_own_claim_and_only_its_own(store: Store) -> None:
    await store.ensure_cursor("e1", 0, now=1)
    e1 = await claimed(store, "e1")
    [letter_id] = await store.record_bulk(e1, 9, BulkDecision(delivered=0, letters=(letter(),)), now=2)
    assert await store.claim_dead_letter(letter_id, "e1", now=10, until=100) is not None
    assert await store.renew_replay_claim(letter_id, held_until=100, until=190)  # still sending at 90
    assert await store.claim_dead_letter(letter_id, "e1", now=150, until=250) is None  # held longer now
    assert not await store.renew_replay_claim(letter_id, held_until=100, until=280)  # not the claim it holds
    assert await store.claim_dead_letter(letter_id, "e1", now=191, until=300) is not None  # lapsed: another's
    assert not await store.renew_replay_claim(letter_id, held_until=190, until=400)  # the first lost it
    await store.finish_replay(letter_id, [], delivered=True, now=310)
    assert not await store.renew_replay_claim(letter_id, held_until=300, until=500)  # replayed: nothing held


async def test_a_replay_holds_its_claim_for_as_long_as_it_sends(store: Store) -> None:
    """The supervisor renews the claim while a letter is sent: no other replay takes it meanwhile."""
    await store.ensure_cursor("e1", 0, now=1)
    e1 = await claimed(store, "e1")
    [letter_id] = await store.record_bulk(e1, 9, BulkDecision(delivered=0, letters=(letter(),)), now=2)
    supervisor = ExportSupervisor(
        store, SettingsService(store, SecretBox([new_key().encode()])), LogNotifier(), ExportMetrics()
    )
    claim_ms = 2400  # renewed every third of it: a loaded machine has over a second to spare
    now = now_ms()
    assert await store.claim_dead_letter(letter_id, "e1", now, now + claim_ms) is not None
    renew = store.renew_replay_claim
    hiccups = [StoreError("database is locked")]

    async def once_failing(*args: int) -> bool:  # a store hiccup: renewing goes on, nothing escapes
        if hiccups:
            raise hiccups.pop()
        return await renew(*args)

    store.renew_replay_claim = once_failing  # type: ignore[method-assign, assignment]
    async with supervisor.replayer._claim_held(letter_id, now + claim_ms, claim_ms):
        await asyncio.sleep(2 * claim_ms / 1000 + 0.5)  # over two claims long
        assert await store.claim_dead_letter(letter_id, "e1", now_ms(), now_ms() + claim_ms) is None
    assert hiccups == []
    await asyncio.sleep(claim_ms / 1000 + 0.2)  # no longer renewed: it lapses
    assert await store.claim_dead_letter(letter_id, "e1", now_ms(), now_ms() + claim_ms) is not None


# -- alerts -------------------------------------------------------------------------------------
async def test_alerts_raise_bump_close_and_list(store: Store) -> None:
    await store.raise_alert("e1", "delivery", "Request timeout", "first", now=1)
    await store.raise_alert("e1", "delivery", "Request failed: 500", "second", now=2)
    await store.raise_alert("e1", "token", "Token", "t", now=3)
    await store.raise_alert("e2", "delivery", "Request timeout", "other export", now=4)
    alerts = await store.list_alerts()
    assert [(a.export_id, a.kind) for a in alerts] == [
        ("e2", "delivery"),
        ("e1", "token"),
        ("e1", "delivery"),
    ]
    bumped = alerts[-1]
    assert (bumped.title, bumped.message, bumped.opened_at, bumped.last_seen_at) == (
        "Request failed: 500",
        "second",
        1,
        2,
    )
    assert (bumped.occurrences, bumped.closed_at) == (2, None)
    assert await store.close_alerts("e1", "delivery", now=5) == 1
    assert await store.close_alerts("e1", "delivery", now=6) == 0
    await store.raise_alert("e1", "delivery", "Request timeout", "again", now=7)  # a new alert
    open_ones = await store.list_alerts(open_only=True)
    assert [(a.export_id, a.kind, a.occurrences) for a in open_ones] == [
        ("e1", "delivery", 1),
        ("e2", "delivery", 1),
        ("e1", "token", 1),
    ]
    closed = [a for a in await store.list_alerts() if a.closed_at is not None]
    assert [(a.message, a.closed_at) for a in closed] == [("second", 5)]
    assert len(await store.list_alerts(limit=2)) == 2


async def test_every_open_alert_is_listed_however_many(store: Store) -> None:
    """An export of 64 shards has an alert per shard and kind: whether it is failing is judged
    from all of them, not from the newest few hundred."""
    await store.raise_alert("oldest", "delivery", "Request timeout", "m", now=1)
    for shard in range(250):
        await store.raise_alert("busy", f"delivery:shard-{shard}", "Request timeout", "m", now=2)
    open_ones = await store.list_alerts(open_only=True)
    assert len(open_ones) == 251 and open_ones[-1].export_id == "oldest"


async def test_concurrent_raises_keep_one_open_alert(store: Store) -> None:
    await asyncio.gather(*(store.raise_alert("e1", "delivery", "t", f"m{n}", now=n) for n in range(10)))
    [alert] = await store.list_alerts()
    assert alert.occurrences == 10


# -- RUM events and open sessions ---------------------------------------------------------------
async def test_events_are_kept_once_and_their_sessions_become_due(store: Store) -> None:
    result = await store.add_events([event("a", 1), event("b", 2), event("a", 1)], now=100, check_at=110)
    assert (result.accepted, result.duplicates, result.late) == (2, 1, 0)
    again = await store.add_events([event("b", 2), event("c", 3), event("x", 5, "s2")], now=105, check_at=120)
    assert (again.accepted, again.duplicates, again.late) == (2, 1, 0)
    assert await store.add_events([], now=106, check_at=130) == EventsResult(0, 0, 0)
    assert await store.due_sessions(now=119, limit=10) == []  # s1 was pushed to 120 by "c"
    due = await store.due_sessions(now=120, limit=10)
    assert [(d.session_id, d.part, d.split, d.last_start, d.arrivals) for d in due] == [
        ("s1", 0, False, None, 3),  # a, b, c: duplicates are no arrivals
        ("s2", 0, False, None, 1),
    ]
    assert sorted(due[0].events) == sorted(event(e, ts).body for e, ts in (("a", 1), ("b", 2), ("c", 3)))
    assert len(await store.due_sessions(now=120, limit=1)) == 1


async def test_an_open_session_holds_at_most_limit_events_in_the_order_sent(store: Store) -> None:
    """The rest are overflow, not kept; a re-sent event is still a duplicate; other sessions are
    not touched; events completed into a part make room again."""
    first = await store.add_events(
        [event("a", 1), event("a", 1), event("b", 2), event("x", 1, "s2"), event("c", 3), event("d", 4)],
        now=100,
        check_at=110,
        limit=3,
    )
    assert first == EventsResult(accepted=4, duplicates=1, late=0, overflow=1)
    full = await store.add_events([event("e", 5), event("b", 2), event("y", 2, "s2")], 101, 111, limit=3)
    assert full == EventsResult(accepted=1, duplicates=1, late=0, overflow=1)
    due = {d.session_id: d for d in await store.due_sessions(now=111, limit=10)}
    assert sorted(due["s1"].events) == sorted(event(e, ts).body for e, ts in (("a", 1), ("b", 2), ("c", 3)))
    assert await store.add_events([event("e", 5)], 102, 112) == EventsResult(1, 0, 0)  # no limit
    await store.complete_part(part(record=session("s1", start=1), consumed=("a", "b"), until=2), 120)
    room = await store.add_events([event("f", 6), event("g", 7), event("h", 8)], 130, 140, limit=3)
    assert room == EventsResult(accepted=1, duplicates=0, late=0, overflow=2)  # c, e and f held
    # an event sent twice beyond the limit: overflow once, then a duplicate, on every backend
    twice = await store.add_events([event("z", 9), event("z", 9)], 150, 160, limit=3)
    assert twice == EventsResult(accepted=0, duplicates=1, late=0, overflow=1)


async def test_two_writers_opening_one_session_keep_its_limit_together(backend: Backend) -> None:
    """Two processes take events of a session that is not open yet: the limit holds for both."""
    async with opened(backend.new) as one, opened(backend.new) as other:
        results = await asyncio.gather(
            *(
                store.add_events([event(f"{name}{n}", n) for n in range(300)], 100, 110, limit=400)
                for name, store in (("a", one), ("b", other))
            )
        )
        assert sum(r.accepted for r in results) == 400
        assert sum(r.overflow for r in results) == 200
        [due] = await one.due_sessions(now=110, limit=10)
        assert len(due.events) == 400


async def test_upgrade_counts_the_events_open_sessions_hold(backend: Backend) -> None:
    """Migration 19: sessions open at the upgrade are limited by the events they already hold."""
    as_left_by_migrations(backend, up_to=18)
    run_sql(
        backend,
        "INSERT INTO open_sessions (tenant_id, session_id, last_arrival, check_at, arrivals) VALUES (?, ?, 1, 1, 2)",
        [("t1", "s1")],
    )
    run_sql(
        backend,
        "INSERT INTO rum_events (tenant_id, session_id, event_id, ts, kind, body, received_at)"
        " VALUES (?, ?, ?, 1, 'action', ?, 1)",
        [("t1", "s1", "a", b"{}"), ("t1", "s1", "b", b"{}")],
    )
    async with opened(backend.new) as store:
        result = await store.add_events([event("c", 3), event("d", 4)], now=100, check_at=110, limit=3)
    assert (result.accepted, result.overflow) == (1, 1)


async def test_sessions_due_at_once_come_in_one_order_on_every_backend(store: Store) -> None:
    """By session id in byte order, as the log they join (and what is exported) should not depend
    on the backend, or on a PostgreSQL database's collation."""
    ids = ["b", "B", "a", "ä", "A", "_x"]
    await store.add_events([event("e", 1, session) for session in ids], now=100, check_at=110)
    due = await store.due_sessions(now=110, limit=10)
    assert [d.session_id for d in due] == sorted(ids, key=lambda i: i.encode())


async def test_only_duplicate_events_leave_the_session_as_it_was(store: Store) -> None:
    await store.add_events([event("a", 1)], now=100, check_at=110)
    result = await store.add_events([event("a", 1)], now=200, check_at=210)
    assert (result.accepted, result.duplicates) == (0, 1)
    due = await store.due_sessions(now=110, limit=10)  # not pushed to 210
    assert [(d.session_id, d.arrivals) for d in due] == [("s1", 1)]
    assert await store.purge_events(received_before=100, now=105) == 0
    assert await store.purge_events(received_before=101, now=105) == 1  # its last arrival is still 100


async def test_complete_part_appends_drops_consumed_and_notes_progress(store: Store) -> None:
    await store.add_events([event("a", 10), event("b", 20), event("c", 30)], now=100, check_at=110)
    first = session("s1", start=10)
    result = await store.complete_part(
        part(record=first, consumed=("a", "b"), until=20, check_at=None, split=True, start=10),
        received_at=120,
    )
    assert (result.accepted, result.duplicates) == (1, 0)
    assert [e.body for e in await store.read_log(0, 10)] == [first.body]
    assert await store.due_sessions(now=10**9, limit=10) == []  # nothing to look at until an event arrives
    late = await store.add_events(
        [event("d", 20), event("attrs", 5, kind="attributes"), event("e", 21)], now=130, check_at=140
    )
    assert (late.accepted, late.duplicates, late.late) == (2, 0, 1)
    [due] = await store.due_sessions(now=140, limit=10)
    assert (due.part, due.split, due.last_start) == (1, True, 10)
    assert sorted(due.events) == sorted(
        [event("c", 30).body, event("attrs", 5, kind="attributes").body, event("e", 21).body]
    )
    postponed = await store.complete_part(part(until=None, check_at=500, split=True), received_at=150)
    assert (postponed.accepted, postponed.duplicates) == (0, 0)
    [due] = await store.due_sessions(now=500, limit=10)
    assert (due.part, due.split, due.last_start, len(due.events)) == (1, True, 10, 3)
    # completed_until never goes back: an event at 20 is still late after a part that ended at 15
    await store.complete_part(part(until=15, check_at=600, split=True), received_at=160)
    assert (await store.add_events([event("f", 20)], now=170, check_at=180)).late == 1
    again = await store.complete_part(
        part(record=first, consumed=("c",), until=30, start=10), received_at=190
    )
    assert (again.accepted, again.duplicates) == (0, 1)  # the log's identity holds here too
    assert await store.due_sessions(now=10**9, limit=10) == []  # check_at None: nothing open


async def test_a_part_is_written_only_if_nothing_arrived_since_the_session_was_read(store: Store) -> None:
    await store.add_events([event("a", 10), event("b", 20)], now=100, check_at=110)
    [read] = await store.due_sessions(now=110, limit=10)
    assert read.arrivals == 2
    await store.add_events([event("c", 30), event("a", 10)], now=115, check_at=120)  # one new, one again
    written = part(
        record=session("s1", 10), consumed=("a", "b"), until=20, check_at=125, start=10, seen_arrivals=2
    )
    assert await store.complete_part(written, received_at=116) == AppendResult(0, 0)
    assert await store.read_log(0, 10) == []  # nothing of the part was written
    [again] = await store.due_sessions(now=120, limit=10)
    assert (again.part, again.arrivals, len(again.events), again.last_start) == (0, 3, 3, None)
    current = replace(written, seen_arrivals=3)
    assert await store.complete_part(current, received_at=121) == AppendResult(1, 0)
    assert (await store.add_events([event("d", 15)], now=122, check_at=130)).late == 1  # not an arrival
    [after] = await store.due_sessions(now=130, limit=10)
    assert (after.part, after.arrivals, after.events, after.last_start) == (1, 3, [event("c", 30).body], 10)
    unknown = part("nobody", record=session("x"), consumed=("a",), until=1, seen_arrivals=0)
    assert await store.complete_part(unknown, received_at=131) == AppendResult(0, 0)
    assert len(await store.read_log(0, 10)) == 1


async def test_purge_events_drops_idle_sessions_with_their_events(store: Store) -> None:
    await store.add_events([event("a", 1), event("b", 2)], now=100, check_at=500)  # its next look ahead
    await store.add_events([event("d", 1, "s3")], now=100, check_at=250)  # due, not looked at since
    await store.add_events([event("c", 1, "s2")], now=300, check_at=310)
    assert await store.purge_events(received_before=200, now=300) == 2
    assert [d.session_id for d in await store.due_sessions(now=10**9, limit=10)] == ["s3", "s2"]
    again = await store.add_events([event("a", 1)], now=400, check_at=410)  # a new start, not a duplicate
    assert again.accepted == 1
    [due] = [d for d in await store.due_sessions(now=410, limit=10) if d.session_id == "s1"]
    assert (due.part, due.events) == (0, [event("a", 1).body])


# -- lifecycle ----------------------------------------------------------------------------------
async def test_everything_survives_reopening(backend: Backend) -> None:
    token = new_token("ci", frozenset({"settings.read"}), 1).record
    async with opened(backend.new) as store:
        await store.append_sessions(sessions(3), received_at=1)
        await store.add_token(token)
        await store.insert_setting(setting("a"), max_objects=3)
        await store.ensure_cursor("e1", 2, now=1)
        await store.record_bulk(
            await claimed(store), 3, BulkDecision(delivered=1, letters=(letter(),)), now=2
        )
        await store.raise_alert("e1", "delivery", "t", "m", now=3)
        await store.add_events([event("a", 1)], now=4, check_at=5)
        before = (
            await store.read_log(0, 10),
            await store.list_cursors(),
            await store.list_dead_letters("e1"),
        )
    async with opened(backend.new) as store:
        assert (
            await store.read_log(0, 10),
            await store.list_cursors(),
            await store.list_dead_letters("e1"),
        ) == before
        assert await store.get_token(token.id) == token
        assert await store.get_setting("a") == setting("a")
        assert len(await store.list_alerts(open_only=True)) == 1
        assert [d.events for d in await store.due_sessions(5, 10)] == [[event("a", 1).body]]
        assert (await store.append_sessions(sessions(4), received_at=9)).duplicates == 3


async def test_store_not_open_is_a_store_error(backend: Backend) -> None:
    store = backend.new()
    with pytest.raises(StoreError, match="not open"):
        await store.count_sessions()


async def test_migrations_recorded_once_each(backend: Backend, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    for _ in range(2):
        async with opened(backend.new):
            pass
    expected = [(m.version, m.name) for m in migrations_for(backend.name)]
    assert applied_migrations(backend) == expected
    assert not [r for r in caplog.records if "upgrading" in r.getMessage()]  # a new database is no upgrade


async def test_a_database_a_newer_release_upgraded_is_refused(backend: Backend) -> None:
    """This release's SQL may no longer fit it: said at start, rather than run against it (an old
    worker left running through a rolling upgrade, restarted)."""
    async with opened(backend.new):
        pass
    known = len(migrations_for(backend.name))
    insert = f"INSERT INTO schema_migrations (version, name) VALUES ({known + 1}, 'from_the_future')"
    if backend.url is not None:
        with psycopg.connect(backend.url, autocommit=True) as conn:
            conn.execute(insert.encode())
    else:
        assert backend.path is not None
        with sqlite3.connect(backend.path) as conn:
            conn.execute(insert)
    store = backend.new()
    with pytest.raises(
        StoreError, match=f"schema is at version {known + 1}, newer than this release .* \\({known}\\)"
    ):
        await store.open()
    await store.close()


def refuse_cursor_moves(backend: Backend, refused: bool = True) -> None:
    """A trigger that fails every update of a cursor (a failure inside the transaction, as a full
    disk or a lost connection would make one), or none."""
    if backend.url is not None:
        with psycopg.connect(backend.url, autocommit=True) as conn:
            conn.execute(
                "CREATE OR REPLACE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql"
                " AS $$ BEGIN RAISE EXCEPTION 'cursor moves refused'; END $$"
            )
            conn.execute("DROP TRIGGER IF EXISTS no_moves ON export_cursors")
            if refused:
                conn.execute(
                    "CREATE TRIGGER no_moves BEFORE UPDATE ON export_cursors"
                    " FOR EACH ROW EXECUTE FUNCTION refuse()"
                )
        return
    assert backend.path is not None
    with contextlib.closing(sqlite3.connect(backend.path)) as conn:
        conn.execute("DROP TRIGGER IF EXISTS no_moves")
        if refused:
            conn.execute(
                "CREATE TRIGGER no_moves BEFORE UPDATE ON export_cursors"
                " BEGIN SELECT RAISE(ABORT, 'cursor moves refused'); END"
            )
        conn.commit()


async def test_a_retention_alert_and_its_cursor_move_are_written_together(
    backend: Backend, store: Store
) -> None:
    """A purge that fails between saying what an export lost and moving its cursor past it would
    count the same sessions again at the next purge: both are one write, or neither."""
    day = 86_400_000
    await store.ensure_cursor("down", 0, now=0)
    await store.append_sessions(sessions(3), received_at=1 * day)
    refuse_cursor_moves(backend)
    with pytest.raises(StoreError, match="cursor moves refused"):
        await purge_expired(store, retention_ms=7 * day, now=9 * day)
    assert await store.list_alerts() == []
    assert await store.count_sessions() == 3  # nothing purged either
    refuse_cursor_moves(backend, refused=False)
    assert await purge_expired(store, retention_ms=7 * day, now=9 * day) == 3
    [alert] = await store.list_alerts(open_only=True)
    assert (alert.title, alert.occurrences) == ("3 session(s) expired before they were exported", 1)
    cursor = await store.get_cursor("down")
    assert cursor is not None and cursor.position == 3


async def test_retention_counts_only_the_sessions_an_export_of_a_zone_was_owed(store: Store) -> None:
    """Sessions outside an export's management zone were never to be sent: their expiry loses it
    nothing, and raises no alert (a paused zone export saw all of them counted lost)."""
    day = 86_400_000
    service = SettingsService(store, SecretBox([new_key().encode()]))
    rules = [{"attribute": "COUNTRY", "operator": "EQUALS", "value": "austria"}]
    zone = await service.create(
        NewObject(ZONE_SCHEMA, "environment", {"name": "AT", "rules": rules}), "bob", 0
    )
    paused = {"enableUserSessionExport": False}
    in_zone = export_value(
        "https://a.example/x", endpointDefinition=paused, exportBehavior={"managementZone": zone.object_id}
    )
    everything = export_value("https://b.example/x", endpointDefinition=paused)
    created = [
        await service.create(NewObject(EXPORT_SCHEMA, "environment", v), "bob", 0)
        for v in (in_zone, everything)
    ]
    [zoned, plain] = [str(result.object_id) for result in created]
    elsewhere = [session(f"p{n}", country="Poland") for n in range(3)]
    await store.append_sessions([*sessions(2), *elsewhere], received_at=1 * day)
    assert await purge_expired(store, retention_ms=7 * day, now=9 * day) == 5
    titles = {a.export_id: a.title for a in await store.list_alerts(open_only=True)}
    assert titles == {
        zoned: "2 session(s) expired before they were exported",  # the Austrian two, not the Polish three
        plain: "5 session(s) expired before they were exported",
    }
    await store.append_sessions([session(f"q{n}", country="Poland") for n in range(4)], received_at=2 * day)
    await purge_expired(store, retention_ms=7 * day, now=10 * day)
    titles = {a.export_id: a.title for a in await store.list_alerts(open_only=True)}
    assert titles[zoned] == "2 session(s) expired before they were exported"  # none of its zone: nothing more
    assert titles[plain] == "9 session(s) expired before they were exported"
    for export_id in (zoned, plain):
        cursor = await store.get_cursor(export_id)
        assert cursor is not None and cursor.position == 9  # both past what expired


async def test_a_purge_that_read_the_cursors_before_another_moved_them_counts_no_loss_twice(
    backend: Backend, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every serve and worker purges. One that listed the cursors before another purge moved them
    past the expired sessions (but before it deleted them) counts, as it moves the cursors itself,
    only what is still behind them: nothing."""
    day = 86_400_000
    await store.ensure_cursor("down", 0, now=0)
    await store.append_sessions(sessions(3), received_at=1 * day)
    stale = await store.list_cursors()
    boundary = await store.position_before(2 * day)

    def describe(lost: int, position: int, title: str | None) -> NewAlert:
        return NewAlert("retention", f"{lost} session(s) expired before they were exported", "first")

    async with opened(backend.new) as other:  # the other purger, halfway: cursors moved, sessions there
        assert await other.pass_expired("down", boundary, 9 * day, "retention", describe) == 3

    async def listed_before(*_: object) -> list[Cursor]:
        return stale

    monkeypatch.setattr(store, "list_cursors", listed_before)
    assert await purge_expired(store, retention_ms=7 * day, now=9 * day) == 3  # it deletes them
    [alert] = await store.list_alerts(open_only=True)
    assert (alert.title, alert.occurrences) == ("3 session(s) expired before they were exported", 1)


def applied_migrations(backend: Backend) -> list[tuple[int, str]]:
    query = "SELECT version, name FROM schema_migrations ORDER BY version"
    if backend.url is not None:
        with psycopg.connect(backend.url) as conn:
            return [(v, n) for v, n in conn.execute(query).fetchall()]
    assert backend.path is not None
    with sqlite3.connect(backend.path) as conn:
        return [(v, n) for v, n in conn.execute(query).fetchall()]


async def test_the_identity_index_led_by_start_time_keeps_the_log_as_it_was(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """Migration 14 rebuilds the identity's index (on SQLite, the whole table) on a log written by
    an older release: the sessions, their seqs and the high-water mark of seqs stay; duplicates
    are still found. The upgrade is said (it may take a while)."""
    caplog.set_level("INFO")
    as_left_by_migrations(backend, up_to=13)
    old_rows = [
        (
            "t1",
            f"u{n}",
            n,
            n + 10,
            1_000 + n,
            f"id{n}",
            "REAL_USER",
            "WEB",
            f"C{n}",
            f'["a{n}"]',
            n,
            b"{}%d" % n,
        )
        for n in (1, 2, 3, 4)
    ]
    run_sql(backend, f"INSERT INTO sessions ({ALL_COLUMNS}) VALUES ({', '.join('?' * 12)})", old_rows)
    run_sql(backend, "DELETE FROM sessions WHERE start_time > ?", [(2,)])  # the newest, purged
    before = select_all(backend)
    async with opened(backend.new) as store:
        assert select_all(backend) == before  # every column of every session, and its seq
        result = await store.append_sessions([session("u1", start=1), session("u9")], received_at=2_000)
        assert (result.accepted, result.duplicates) == (1, 1)
        new = (await store.read_log(2, 10))[0]
        assert new.user_session_id == "u9" and new.seq > 4  # no seq handed out twice
    assert identity_index_columns(backend) == ["start_time", "tenant_id", "user_session_id"]
    said = [r.getMessage() for r in caplog.records if "upgrading" in r.getMessage()]
    later = [m for m in migrations_for(backend.name) if m.version > 13]
    assert said == [
        f"{backend.name}: upgrading the database to version {m.version} ({m.name})" for m in later
    ]
    assert later[0].name == "identity_by_start_time"


ALL_COLUMNS = (
    "tenant_id, user_session_id, start_time, end_time, received_at, user_id, user_type,"
    " application_type, country, applications, size, body"
)


def select_all(backend: Backend) -> list[tuple[object, ...]]:
    query = f"SELECT seq, {ALL_COLUMNS} FROM sessions ORDER BY seq"
    if backend.url is not None:
        with psycopg.connect(backend.url) as pg:
            return [
                tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in pg.execute(query)
            ]
    assert backend.path is not None
    with sqlite3.connect(backend.path) as conn:
        return conn.execute(query).fetchall()


def as_left_by_migrations(backend: Backend, up_to: int) -> None:
    """The backend's database as an older release left it: migrations 1 to ``up_to`` applied."""
    if backend.url is not None:
        postgresql_at_version(backend.url, up_to)
    else:
        assert backend.path is not None
        sqlite_at_version(backend.path, up_to)


def run_sql(backend: Backend, statement: str, rows: Sequence[tuple[object, ...]]) -> None:
    """``statement`` (``?`` placeholders) once per row, committed."""
    if backend.url is not None:
        with psycopg.connect(backend.url) as pg:
            pg.cursor().executemany(statement.replace("?", "%s"), rows)
        return
    assert backend.path is not None
    with sqlite3.connect(backend.path) as conn:
        conn.executemany(statement, rows)


def identity_index_columns(backend: Backend) -> list[str]:
    if backend.url is not None:
        with psycopg.connect(backend.url) as pg:
            row = pg.execute(
                "SELECT array_agg(a.attname ORDER BY k.n) FROM pg_index i"
                " CROSS JOIN unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)"
                " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
                " WHERE i.indexrelid = 'sessions_identity'::regclass"
            ).fetchone()
            assert row is not None
            return list(row[0])
    assert backend.path is not None
    with sqlite3.connect(backend.path) as conn:
        return [name for _, _, name in conn.execute("PRAGMA index_info(sessions_identity)")]


def test_sqlite_and_postgresql_migrations_agree() -> None:
    def names(dialect: str) -> list[tuple[int, str]]:
        return [(m.version, m.name) for m in migrations_for(dialect)]

    assert names("sqlite") == names("postgresql") != []


async def test_a_postgresql_purge_passes_over_the_rows_another_purge_holds(
    tmp_path: Path, postgres_url: str
) -> None:
    """Purges at once in several processes: one waiting for rows another holds, while that one
    waits for its rows, was ended by PostgreSQL as a deadlock (logged as a failed purge)."""
    with fresh_schema(postgres_url) as url:
        async with opened(lambda: create_store(tmp_path, url)) as store:
            await store.append_sessions(sessions(10), received_at=1)
            with psycopg.connect(url) as other:  # another purge, halfway through its batch
                other.execute("SELECT seq FROM sessions WHERE seq <= 3 FOR UPDATE")
                assert await asyncio.wait_for(store.purge_sessions(10), 10) == 7  # not waiting for it
            assert await store.purge_sessions(10) == 3  # released: deleted by the next purge
            assert await store.count_sessions() == 0


async def test_sqlite_and_postgresql_schemas_have_the_same_columns(tmp_path: Path, postgres_url: str) -> None:
    async with opened(lambda: create_store(tmp_path)):
        pass
    with sqlite3.connect(tmp_path / DATABASE_FILE) as conn:
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        in_sqlite = {
            t: [row[1] for row in conn.execute(f"PRAGMA table_info({t})")]
            for t in tables
            if t not in ("sqlite_sequence", "schema_migrations")
        }
    with fresh_schema(postgres_url) as url:
        async with opened(lambda: create_store(tmp_path, url)):
            pass
        with psycopg.connect(url) as conn:
            rows = conn.execute(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name <> 'schema_migrations'"
                " ORDER BY table_name, ordinal_position"
            ).fetchall()
    in_postgresql: dict[str, list[str]] = {}
    for table, column in rows:
        in_postgresql.setdefault(table, []).append(column)
    assert in_postgresql == in_sqlite


# -- PostgreSQL only ----------------------------------------------------------------------------
@pytest.fixture
def postgres_schema(postgres_url: str) -> Iterator[str]:
    with fresh_schema(postgres_url) as url:
        yield url


def test_factory_selects_postgresql_for_both_schemes(tmp_path: Path) -> None:
    for url in ("postgresql://u:p@db.example/x", "postgres://u:p@db.example/x"):
        assert isinstance(create_store(tmp_path, url), PostgresStore)


async def test_concurrent_opens_migrate_once(tmp_path: Path, postgres_schema: str) -> None:
    stores = [create_store(tmp_path, postgres_schema) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        results = await asyncio.gather(*(s.append_sessions(sessions(5), received_at=1) for s in stores))
        assert sum(r.accepted for r in results) == 5  # and the rest are duplicates, across connections
        assert await stores[0].count_sessions() == 5
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    expected = [(m.version, m.name) for m in migrations_for("postgresql")]
    assert applied_migrations(Backend("postgresql", lambda: stores[0], postgres_schema)) == expected


async def test_another_components_migrations_are_refused(tmp_path: Path, postgres_schema: str) -> None:
    with psycopg.connect(postgres_schema, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        conn.execute("INSERT INTO schema_migrations VALUES (1, 'received')")
    store = create_store(tmp_path, postgres_schema)
    with pytest.raises(StoreError, match=r"not this store's \(1_received\)"):
        await store.open()


async def test_exporter_decisions_commit_without_waiting_for_the_wal(
    tmp_path: Path, postgres_schema: str
) -> None:
    """Per bulk, an exporter's transaction sets synchronous_commit off for itself alone: a server
    crash may forget it (the bulk is sent again); ingest, in the same pooled connections, still
    waits for the WAL."""
    store = create_store(tmp_path, postgres_schema)
    await store.open()
    try:
        with psycopg.connect(postgres_schema, autocommit=True) as conn:  # what each write saw
            conn.execute("CREATE TABLE seen (tbl text, setting text)")
            conn.execute(
                "CREATE FUNCTION note_setting() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                " INSERT INTO seen VALUES (TG_TABLE_NAME, current_setting('synchronous_commit'));"
                " RETURN NULL; END $$"
            )
            for table in ("sessions", "export_cursors"):
                conn.execute(
                    f"CREATE TRIGGER note AFTER INSERT OR UPDATE ON {table}"
                    " FOR EACH STATEMENT EXECUTE FUNCTION note_setting()"
                )
        await store.ensure_cursor("e1", 0, now=1)
        claim = await claimed(store)
        await store.record_bulk(claim, 2, BulkDecision(delivered=2), now=2)
        await store.record_skip(claim, 3, now=3)
        await store.append_sessions(sessions(2), received_at=4)
        with psycopg.connect(postgres_schema, autocommit=True) as conn:
            seen = conn.execute("SELECT tbl, setting FROM seen").fetchall()
        decisions = [setting for table, setting in seen[-3:] if table == "export_cursors"]
        assert decisions == ["off", "off"] and seen[-1] == ("sessions", "on")
    finally:
        await store.close()


async def test_postgresql_compresses_session_and_letter_bodies_with_lz4(
    tmp_path: Path, postgres_schema: str
) -> None:
    """Bodies large enough to be compressed (sessions, dead letters) are compressed with lz4
    (migration 16): the server spends about half the CPU appending and less reading them."""
    pad = "ab" * 8000
    async with opened(lambda: create_store(tmp_path, postgres_schema)) as store:
        await store.append_sessions([session("u1", body=b'{"pad":"%s"}' % pad.encode())], received_at=1)
        await store.ensure_cursor("e1", 0, now=1)
        big = replace(letter(), body=b'{"pad":"%s"}' % pad.encode())
        await store.record_bulk(await claimed(store), 1, BulkDecision(0, letters=(big,)), now=2)
    with psycopg.connect(postgres_schema) as conn:
        methods = conn.execute(
            "SELECT pg_column_compression(body) FROM sessions"
            " UNION ALL SELECT pg_column_compression(body) FROM dead_letters"
        ).fetchall()
    assert methods == [("lz4",), ("lz4",)]


def with_password(url: str, password: str, port: int | None = None) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}:{password}@{parts.hostname}:{port or parts.port or 5432}"
    return urlunsplit(parts._replace(netloc=netloc))


async def test_wrong_password_is_a_store_error_without_the_password(
    tmp_path: Path, postgres_url: str
) -> None:
    store = create_store(tmp_path, with_password(postgres_url, "not-the-Secret-4711"))
    with pytest.raises(StoreError, match="cannot reach PostgreSQL at") as raised:
        await store.open()
    assert "not-the-Secret-4711" not in str(raised.value)


async def test_unreachable_server_is_a_store_error_without_the_password(
    tmp_path: Path, postgres_url: str
) -> None:
    url = with_password(postgres_url, "s3cret-in-url", port=1)  # nothing listens on port 1
    with pytest.raises(StoreError, match=r"cannot reach PostgreSQL at 127\.0\.0\.1:1") as raised:
        await create_store(tmp_path, url).open()
    assert "s3cret-in-url" not in str(raised.value)


async def test_while_postgresql_is_unreachable_calls_fail_fast_and_then_recover(
    tmp_path: Path, postgres_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first call to find the server gone waits the pool's timeout; the calls after it answer
    within the short wait (every request of an outage would hang for the timeout otherwise), and
    the store works again as soon as the server is back."""
    async with behind_a_proxy(postgres_schema, monkeypatch) as (proxy, store):
        await store.append_sessions(sessions(2), received_at=1)
        await proxy.cut()
        took, said = [], []
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(StoreError, match="cannot reach PostgreSQL") as raised:
                await store.count_sessions()
            took.append(time.monotonic() - started)
            said.append(str(raised.value))
        assert max(took[1:]) < 1.0 <= took[0], took
        # why no connection came, the first time: the server's answer to a new one (a role's
        # connection limit, say), not only the pool's wait
        assert "; a new connection fails: connection failed: " in said[0] and "Connection refused" in said[0]
        for _ in range(2):  # reads of the log (their own pool, in a thread) as well
            started = time.monotonic()
            with pytest.raises(StoreError, match="cannot reach PostgreSQL"):
                await store.read_shard(0, 10, 0, 1)
            assert time.monotonic() - started < 1.0
        await proxy.restore()
        assert await eventually(store.count_sessions) == 2

        async def read() -> int:
            return len((await store.read_shard(0, 10, 0, 1)).entries)

        assert await eventually(read) == 2


@contextlib.asynccontextmanager
async def behind_a_proxy(
    postgres_schema: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[TcpProxy, PostgresStore]]:
    """An open store whose server is reached through a proxy the test can cut, with short waits."""
    monkeypatch.setattr(postgresql_database, "CONNECT_TIMEOUT_SECONDS", 2)
    monkeypatch.setattr(postgresql_database, "UNREACHABLE_WAIT_SECONDS", 0.2)
    parts = urlsplit(postgres_schema)
    async with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        store = PostgresStore(with_password(postgres_schema, parts.password or "", port=proxy.port))
        await store.open()
        try:
            yield proxy, store
        finally:
            await store.close()


async def test_a_server_back_after_a_long_outage_is_found_within_seconds(
    tmp_path: Path, postgres_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool's reconnection delay doubles while the server is away: given up on after a few
    seconds, it starts again from 1 s, instead of having grown past the outage's length."""
    monkeypatch.setattr(postgresql_database, "RECONNECT_GIVE_UP_SECONDS", 2.0)
    async with behind_a_proxy(postgres_schema, monkeypatch) as (proxy, store):
        await proxy.cut()
        outage_ends = time.monotonic() + 20  # a delay doubling from 1 s: tries at 15 s, then 31 s
        while time.monotonic() < outage_ends:
            with pytest.raises(StoreError, match="cannot reach PostgreSQL"):
                await store.count_sessions()
            await asyncio.sleep(0.5)
        await proxy.restore()
        restored = time.monotonic()
        assert await eventually(store.count_sessions) == 0
        assert time.monotonic() - restored < 5


async def test_reads_of_the_log_wait_in_threads_of_their_own(tmp_path: Path, postgres_schema: str) -> None:
    """Many exporters reading at once queue for the read connections in the reads' own threads:
    the event loop's default executor (which parses request bodies) stays free meanwhile."""
    # A default executor the reads could fill, whatever the number of CPUs of this machine.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(2))
    async with opened(lambda: PostgresStore(postgres_schema)) as store:
        slow = [
            asyncio.ensure_future(store._db.read(lambda conn: conn.execute("SELECT pg_sleep(0.3)")))
            for _ in range(3 * postgresql_database.READ_CONNECTIONS)
        ]
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await asyncio.to_thread(time.sleep, 0)
        waited = time.monotonic() - started
        await asyncio.gather(*slow)
    assert waited < 0.2, waited


async def test_a_process_stops_in_bounded_time_while_its_database_hangs(
    tmp_path: Path, postgres_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database that stops answering, its connections open (a hung server, a proxy or network
    that drops everything: nothing at the TCP level tells), holds stopping up for a bounded
    time, not until it answers again. The worker's leases then expire by themselves."""
    monkeypatch.setattr(services, "STOP_SECONDS", 1.0)
    monkeypatch.setattr(services, "CLOSE_SECONDS", 1.0)
    parts = urlsplit(postgres_schema)
    async with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        url = with_password(postgres_schema, parts.password or "", port=proxy.port)
        worker = Services.create(ServerConfig(data_dir=tmp_path, database_url=url, lease_seconds=3))
        running = worker.running()
        await running.__aenter__()
        await until(lambda: worker.exports.owner in _worker_rows(postgres_schema), "a heartbeat")
        await proxy.stall()
        started = time.monotonic()
        await asyncio.wait_for(running.__aexit__(None, None, None), timeout=10)
        assert time.monotonic() - started < 4
        await proxy.restore()  # what was left behind finishes, or fails, and is cleaned up
        await worker.store.close()


def _worker_rows(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [owner for (owner,) in conn.execute("SELECT owner FROM export_workers")]


async def test_a_worker_frozen_inside_its_heartbeat_holds_up_no_other_worker(postgres_schema: str) -> None:
    """A stopped process (SIGSTOP, a paused VM, a cut network) inside its heartbeat keeps its
    worker row locked. The others' heartbeats pass it by instead of waiting for it (each holding
    its own leases meanwhile, its exporters waiting for those in turn)."""
    async with opened(lambda: PostgresStore(postgres_schema)) as store:
        async with await psycopg.AsyncConnection.connect(postgres_schema) as frozen:
            await frozen.execute("INSERT INTO export_workers (owner, expires_at) VALUES ('frozen', 1)")
            await frozen.commit()  # its row expired long ago; it is still "inside" a heartbeat:
            noted = await frozen.execute("UPDATE export_workers SET expires_at = 1 WHERE owner = 'frozen'")
            assert noted.rowcount == 1
            assert await store.claim_lease("e1", 0, "a", lease_ms=60_000)
            state = await asyncio.wait_for(store.heartbeat("a", lease_ms=60_000), timeout=5)
            assert state.workers == ("a",) and [lease.owner for lease in state.leases] == ["a"]
        await store.heartbeat("a", lease_ms=60_000)  # once it is gone, its row is forgotten
        async with await psycopg.AsyncConnection.connect(postgres_schema) as conn:
            rows = await (await conn.execute("SELECT owner FROM export_workers ORDER BY owner")).fetchall()
        assert rows == [("a",)]


async def test_the_server_ends_a_transaction_its_client_abandoned(
    postgres_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its locks go with it, instead of staying until the server finds the connection dead (hours
    of TCP keepalives); the client finds its connection broken, and the pool replaces it."""
    monkeypatch.setattr(postgresql_database, "IDLE_IN_TRANSACTION_SECONDS", 1)
    async with opened(lambda: PostgresStore(postgres_schema, max_connections=1)) as store:
        with pytest.raises(StoreError):
            async with store._db.transaction() as conn:
                await conn.execute("SELECT 1")
                await asyncio.sleep(1.5)  # a process stopped in the middle of a transaction
                await conn.execute("SELECT 1")
        assert await eventually(store.count_sessions) == 0  # served again, on a new connection


async def test_a_pool_with_every_connection_busy_is_not_taken_for_an_unreachable_server(
    tmp_path: Path, postgres_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call that times out because every pooled connection is busy leaves the next one its whole
    wait: it is served when a connection comes free."""
    monkeypatch.setattr(postgresql_database, "CONNECT_TIMEOUT_SECONDS", 1.0)
    monkeypatch.setattr(postgresql_database, "UNREACHABLE_WAIT_SECONDS", 0.1)
    store = PostgresStore(postgres_schema, max_connections=1)
    await store.open()
    try:

        async def hold() -> None:
            async with store._connection() as conn:  # the pool's only connection
                await conn.execute("SELECT pg_sleep(1.5)")

        holder = asyncio.create_task(hold())
        await asyncio.sleep(0.05)
        with pytest.raises(StoreError, match="no connection within the timeout"):
            await store.count_sessions()  # at 1.0 s, the connection still busy
        assert await store.count_sessions() == 0  # waits from 1.0 s until it comes free at 1.5 s
        await holder
    finally:
        await store.close()


async def eventually(call: Callable[[], Coroutine[None, None, T]], within: float = 10) -> T:
    """``call``'s result once it stops raising StoreError."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await call()
        except StoreError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_failing_statements_are_store_errors(tmp_path: Path, postgres_schema: str) -> None:
    store = create_store(tmp_path, postgres_schema)
    await store.open()
    try:
        await store.add_token(new_token("ci", frozenset(), 1).record)
        [token] = await store.list_tokens()
        with pytest.raises(StoreError, match=r"^PostgreSQL: .*api_tokens_pkey"):
            await store.add_token(token)
        with psycopg.connect(postgres_schema, autocommit=True) as conn:
            conn.execute("DROP TABLE alerts")
        with pytest.raises(StoreError, match=r"^PostgreSQL: .*alerts"):
            await store.list_alerts()
        assert await store.count_sessions() == 0  # the pool is still fine
    finally:
        await store.close()


async def test_a_cancelled_wait_for_a_connection_is_cancelled(tmp_path: Path, postgres_schema: str) -> None:
    # A connection coming free just as the task waiting for it is cancelled: the task must end
    # cancelled (a shutdown awaits it), whichever event-loop step the cancellation lands in.
    store = PostgresStore(postgres_schema, max_connections=1)
    await store.open()
    try:
        for steps in range(12):
            release = asyncio.Event()

            async def hold(release: asyncio.Event = release) -> None:
                async with store._connection():  # the pool's only connection
                    await release.wait()

            holder = asyncio.create_task(hold())
            await asyncio.sleep(0.01)
            waiter = asyncio.create_task(store.count_sessions())
            await asyncio.sleep(0.01)  # now waiting for the pool
            release.set()
            for _ in range(steps):
                await asyncio.sleep(0)
            if waiter.cancel():
                await asyncio.wait([waiter, holder], timeout=5)
                assert waiter.cancelled(), f"cancellation lost {steps} step(s) after the release"
            await holder
        assert await store.count_sessions() == 0  # and no connection was lost on the way
    finally:
        await store.close()


@pytest.fixture
async def postgres_store(tmp_path: Path, postgres_schema: str) -> AsyncIterator[Store]:
    store = create_store(tmp_path, postgres_schema)
    await store.open()
    yield store
    await store.close()


async def while_locked(url: str, statement: str, during: Callable[[], Coroutine[None, None, T]]) -> T:
    """Run ``during`` while another connection has run ``statement`` and not committed yet (as
    another process in the middle of its transaction), then commit that and wait for ``during``."""
    async with await psycopg.AsyncConnection.connect(url) as other:
        await other.execute(statement)
        task: asyncio.Task[T] = asyncio.create_task(during())
        await asyncio.sleep(0.2)
        assert not task.done(), "it did not wait for the other transaction"
        await other.commit()
    return await task


async def test_events_wait_for_a_part_being_completed(postgres_store: Store, postgres_schema: str) -> None:
    await postgres_store.add_events([event("a", 10)], now=100, check_at=110)
    completing = "UPDATE open_sessions SET completed_until = 50, part = part + 1"
    result = await while_locked(
        postgres_schema,
        completing,
        lambda: postgres_store.add_events([event("b", 40)], now=120, check_at=130),
    )
    assert (result.accepted, result.late) == (0, 1)  # late for the part completed meanwhile


async def test_a_part_waits_for_events_being_added(postgres_store: Store, postgres_schema: str) -> None:
    await postgres_store.add_events([event("a", 10)], now=100, check_at=110)
    [read] = await postgres_store.due_sessions(now=110, limit=10)
    adding = "UPDATE open_sessions SET arrivals = arrivals + 1"
    written = part(record=session("s1", 10), consumed=("a",), until=10, seen_arrivals=read.arrivals)
    result = await while_locked(postgres_schema, adding, lambda: postgres_store.complete_part(written, 120))
    assert result == AppendResult(0, 0)
    assert await postgres_store.read_log(0, 10) == []


async def test_a_reader_never_passes_an_append_that_has_not_committed(
    postgres_store: Store, postgres_schema: str
) -> None:
    # Two appenders: A draws its seq first but commits last (a slow transaction), B commits in
    # between. A reader that returned B's row then would move its cursor past A's seq for good.
    async with await psycopg.AsyncConnection.connect(postgres_schema) as slow:
        await postgresql.append_in_transaction(
            slow, [session("a")], received_at=1
        )  # A: in its transaction, not committed
        fast = asyncio.create_task(postgres_store.append_sessions([session("b")], received_at=2))
        await asyncio.sleep(0.3)  # B has committed by now, unless it must wait for A
        seen = await postgres_store.read_log(0, 10)
        assert [e.user_session_id for e in seen] == [], "the reader saw B while A's seq was uncommitted"
        await slow.commit()
    await fast
    position = seen[-1].seq if seen else 0  # where an exporter's cursor would have moved
    after = await postgres_store.read_log(position, 10)
    assert [e.user_session_id for e in after] == ["a", "b"]
    assert after[0].seq < after[1].seq


async def test_a_cursor_walking_the_log_during_concurrent_appends_sees_every_session_once(
    tmp_path: Path, postgres_schema: str
) -> None:
    appenders = [PostgresStore(postgres_schema, max_connections=2) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in appenders))
    appending = True

    async def append(store: Store, prefix: str) -> None:
        for batch in range(40):
            await store.append_sessions(sessions(3, prefix=f"{prefix}-{batch}-"), received_at=1)

    async def walk() -> list[int]:
        position, seen = 0, []
        while True:
            last = not appending  # one more read once every append has returned
            for entry in await appenders[0].read_log(position, 1000):
                seen.append(entry.seq)
                position = entry.seq
            if last:
                return seen

    try:
        walker = asyncio.create_task(walk())
        await asyncio.gather(*(append(s, f"p{n}") for n, s in enumerate(appenders)))
        appending = False
        seen = await walker
        everything = [e.seq for e in await appenders[0].read_log(0, 10_000)]
    finally:
        await asyncio.gather(*(s.close() for s in appenders))
    assert len(everything) == 4 * 40 * 3
    assert seen == everything  # each once, in order, none passed over


async def test_a_takeover_waits_for_a_cursor_write_under_the_lease(
    postgres_store: Store, postgres_schema: str
) -> None:
    # A write under a lease locks the lease row until it commits: a worker taking the expired
    # lease over waits for it, so the write is never after the takeover.
    assert await postgres_store.claim_lease("e1", 0, "stale", lease_ms=100)
    await asyncio.sleep(0.2)
    writing = "SELECT 1 FROM export_leases WHERE export_id = 'e1' FOR SHARE"
    taken = await while_locked(
        postgres_schema, writing, lambda: postgres_store.claim_lease("e1", 0, "taker", lease_ms=60_000)
    )
    assert taken


async def test_a_large_purge_goes_in_batches(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each batch is a transaction of its own that deletes at most PURGE_BATCH sessions."""
    from sessionexport.store import base

    batches: list[int] = []

    async def recorded(delete_up_to: Callable[[int], Coroutine[None, None, int]]) -> int:
        async def recording(count: int) -> int:
            batches.append(await delete_up_to(count))
            return batches[-1]

        return await base.purge_in_batches(recording)

    monkeypatch.setattr(base, "PURGE_BATCH", 2)
    monkeypatch.setattr(sys.modules[type(store).__module__], "purge_in_batches", recorded)
    await store.append_sessions(sessions(5, "old"), received_at=1_000)
    await store.append_sessions(sessions(2, "new"), received_at=5_000)
    assert await store.purge_sessions(await store.position_before(2_000)) == 5
    assert batches == [2, 2, 1]
    assert [e.user_session_id for e in await store.read_log(0, 10)] == ["new0", "new1"]
    assert await store.purge_sessions(await store.position_before(2_000)) == 0


async def test_discarding_takes_the_pending_letters_up_to_the_id_given(store: Store) -> None:
    await store.ensure_cursor("e1", 0, now=1)
    e1 = await claimed(store, "e1")
    ids = await store.record_bulk(
        e1, 9, BulkDecision(delivered=0, letters=(letter(), letter(), letter())), now=2
    )
    assert await store.claim_dead_letter(ids[0], "e1", now=10, until=1_000) is not None  # a replay sends it
    assert await store.discard_dead_letters("e1", now=20, up_to=ids[1]) == (1, 2)  # ids[1]: not the one sent
    assert [d.id for d in await store.list_dead_letters("e1", state="pending")] == [ids[2], ids[0]]
    assert await store.discard_dead_letters("e1", now=2_000) == (2, 4)  # every one, its claim lapsed
    assert await store.list_dead_letters("e1", state="pending") == []


async def test_a_replay_s_delivery_is_the_export_s_last_success(store: Store) -> None:
    await store.ensure_cursor("e1", 0, now=1)
    await store.note_replayed("e1", now=50)
    cursor = await store.get_cursor("e1")
    assert cursor is not None and cursor.last_success_at == 50
    await store.note_replayed("e1", now=40)  # an older replay finishing late moves nothing back
    cursor = await store.get_cursor("e1")
    assert cursor is not None and cursor.last_success_at == 50
