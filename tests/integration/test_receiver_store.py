"""The receiver's storage contract, run against every backend: SQLite, NDJSON files and PostgreSQL.

PostgreSQL tests need a server: ``SESSIONEXPORT_TEST_DATABASE_URL``, or the local one that
``scripts/postgres`` sets up (``scripts/test`` runs it). Without one they fail, never skip. Each
test gets a schema of its own (``search_path`` in the URL), dropped afterwards, so runs and tests
never see each other's rows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import socket
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import orjson
import psycopg
import pytest

from sessionexport.receiver.store import ReceivedStore, create_received_store
from sessionexport.receiver.store import files as files_store_module
from sessionexport.receiver.store.files import OPEN_FILES, FilesReceivedStore, documents_file, index_file
from sessionexport.receiver.store.postgresql import PostgresReceivedStore
from sessionexport.receiver.store.records import DOCUMENT, LEGACY, SESSION, Document, RequestInfo
from sessionexport.receiver.store.sqlite import _STORED_KEYS, key_locality
from sessionexport.store.base import StoreError
from sessionexport.store.migrations import migrations_for
from tests.support.postgres import fresh_schema
from tests.support.stores import opened, sqlite_at_version

BACKENDS = ["sqlite", "files", "postgresql"]


# -- the backends -------------------------------------------------------------------------------
@dataclass
class Backend:
    name: str
    new: Callable[[], ReceivedStore]  # a store on the same place as every other one of this backend
    folder: Path | None = None  # where the files backend keeps its files


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "postgresql":
        with fresh_schema(request.getfixturevalue("postgres_url")) as url:
            yield Backend("postgresql", lambda: create_received_store(tmp_path, url))
    else:
        storage = "files" if request.param == "files" else None
        folder = tmp_path / "received" if storage else None
        yield Backend(request.param, lambda: create_received_store(tmp_path, storage), folder)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[ReceivedStore]:
    async with opened(backend.new) as s:
        yield s


def request_at(at: int, **changes: object) -> RequestInfo:
    fields: dict[str, object] = {
        "received_at": at,
        "method": "PUT",
        "path": "/export/events",
        "content_type": "application/x-ndjson",
        "size": 1234,
        "client": "127.0.0.1",
    }
    return RequestInfo(**(fields | changes))  # type: ignore[arg-type]


def session(user: str, start: int = 1, note: str = "v1") -> Document:
    # Odd spacing, an escape and UTF-8: any re-serialisation would change these bytes.
    body = f'{{ "tenantId":"t1", "userSessionId":"{user}","startTime":{start}, "note":"caf\u00e9 \\"{note}\\"" }}'
    return Document(SESSION, f"t1-{user}-{start}", body.encode(), user)


def legacy(visit: str) -> Document:
    return Document(LEGACY, f"legacy-v-{visit}-1", f'{{"visitId":"{visit}","startTime":1}}'.encode(), visit)


def es_document(index: str, doc_id: str, body: bytes = b'{"a":1}', *, replaces: bool = False) -> Document:
    return Document(DOCUMENT, f"{index}/{doc_id}", body, None, index, replaces)


def replacing(doc: Document) -> Document:
    """The document as one that replaces a stored one of its key (Elasticsearch's ``index``)."""
    return dataclasses.replace(doc, replaces=True)


async def bodies(store: ReceivedStore, **filters: object) -> list[bytes]:
    return [d.body for d in await store.documents(limit=1000, **filters)]  # type: ignore[arg-type]


async def keys(store: ReceivedStore, limit: int = 1000, **filters: object) -> list[str]:
    return [d.key for d in await store.documents(limit=limit, **filters)]  # type: ignore[arg-type]


# -- the contract -------------------------------------------------------------------------------
async def test_saved_documents_read_back_byte_identical(store: ReceivedStore) -> None:
    docs = [session("u1"), legacy("v1"), es_document("sessions-1", "x", b'{"b": [1, 2.50, "\\u00e9"]}')]
    result = await store.save(request_at(1000, principal="alice"), docs)
    assert result.created == [True, True, True]
    stored = await store.documents(limit=10)
    assert [d.body for d in stored] == [d.body for d in reversed(docs)]
    assert [(d.kind, d.key, d.user_session_id, d.index) for d in stored] == [
        (d.kind, d.key, d.user_session_id, d.index) for d in reversed(docs)
    ]
    assert {(d.request_id, d.received_at) for d in stored} == {(result.request_id, 1000)}
    [record] = await store.requests()
    assert record.id == result.request_id
    assert (record.principal, record.status, record.error) == ("alice", 200, None)
    assert (record.documents, record.stored, record.duplicates) == (3, 3, 0)


async def test_concurrent_saves_of_the_same_documents_in_other_orders_all_succeed(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Senders re-deliver overlapping bulks at once, in any order: each save succeeds, each key is
    stored once, and exactly one save counts it as new (PostgreSQL used to deadlock on them: no
    retry here hides one)."""
    from sessionexport.receiver.store import postgresql as receiver_postgresql

    monkeypatch.setattr(receiver_postgresql, "SAVE_ATTEMPTS", 1)
    async with opened(backend.new) as store:
        for round_number in range(4):
            docs = [session(f"r{round_number}-{n}") for n in range(100)]
            orders = [random.Random(seed).sample(docs, len(docs)) for seed in range(6)]
            results = await asyncio.gather(*(store.save(request_at(1), order) for order in orders))
            assert sum(sum(result.created) for result in results) == len(docs)
        assert (await store.counts()).sessions == 400
        assert len(await store.requests(limit=100)) == 24


async def test_concurrent_saves_mixing_documents_that_keep_and_replace_all_succeed(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Elasticsearch bulks of ``index`` and ``create`` runs over shared ids, saved at once: none
    fails, and each id is created exactly once (on PostgreSQL, runs of both kinds used to lock
    their keys in two orders and deadlock: no retry here hides one)."""
    from sessionexport.receiver.store import postgresql as receiver_postgresql

    monkeypatch.setattr(receiver_postgresql, "SAVE_ATTEMPTS", 1)
    async with opened(backend.new) as store:
        for round_number in range(3):
            ids = [f"r{round_number}-{n}" for n in range(60)]
            bulks = []
            for seed in range(8):
                order = random.Random(seed).sample(ids, len(ids))
                # runs of five that replace (index), then five that keep (create)
                bulks.append([es_document("s", i, replaces=n % 10 < 5) for n, i in enumerate(order)])
            results = await asyncio.gather(*(store.save(request_at(1), bulk) for bulk in bulks))
            assert sum(sum(result.created) for result in results) == len(ids)
        assert (await store.counts()).documents == 180


async def test_a_bulk_of_twenty_thousand_documents_of_both_kinds_is_saved_whole(backend: Backend) -> None:
    """No per-key resource of the database may run out (PostgreSQL's shared lock table did, for
    locks taken per key): a large valid bulk is stored, not refused as "storage unavailable"."""
    docs = [es_document("s", f"d{n}", replaces=n % 3 != 0) for n in range(20_000)]
    async with opened(backend.new) as store:
        result = await store.save(request_at(1), docs)
        again = await store.save(request_at(2), docs[:10])
    assert sum(result.created) == 20_000 and again.created == [False] * 10


async def test_postgresql_a_save_that_deadlocked_is_run_again(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL breaks a deadlock (saves mixing documents that keep and replace may still make
    one) by ending one transaction: that save is run again, whole, and kept once."""
    from sessionexport.receiver.store import postgresql as receiver_postgresql

    real_save_documents = receiver_postgresql._save_documents
    ended: list[str] = []

    async def deadlocks_once(*args: Any) -> list[bool]:
        if not ended:
            ended.append("once")
            raise psycopg.errors.DeadlockDetected("deadlock detected")
        return await real_save_documents(*args)

    monkeypatch.setattr(receiver_postgresql, "_save_documents", deadlocks_once)
    with fresh_schema(postgres_url) as url:
        async with opened(lambda: create_received_store(tmp_path, url)) as store:
            result = await store.save(request_at(1), [session("u1")])
            assert (ended, result.created) == (["once"], [True])
            assert [r.id for r in await store.requests()] == [result.request_id]  # the first was undone
            assert await keys(store) == ["t1-u1-1"]


async def test_duplicates_are_kept_by_documents_that_keep(store: ReceivedStore) -> None:
    first = await store.save(request_at(1), [session("u1", note="first")])
    again = await store.save(request_at(2), [session("u1", note="second"), session("u2")])
    assert again.created == [False, True]
    [kept] = await store.documents(user_session_id="u1")
    assert (kept.body, kept.request_id) == (session("u1", note="first").body, first.request_id)
    record = (await store.requests(limit=1))[0]
    assert (record.id, record.documents, record.stored, record.duplicates) == (again.request_id, 2, 1, 1)
    within = await store.save(request_at(3), [session("u3", note="a"), session("u3", note="b")])
    assert within.created == [True, False]
    assert await bodies(store, user_session_id="u3") == [session("u3", note="a").body]
    assert (await store.counts()).sessions == 3


async def test_duplicates_are_replaced_by_documents_that_replace(store: ReceivedStore) -> None:
    await store.save(
        request_at(1),
        [es_document("i", "1", b'{"v":1}', replaces=True), es_document("i", "2", replaces=True)],
    )
    before = {d.key: d.seq for d in await store.documents()}
    second = await store.save(
        request_at(2),
        [es_document("i", "1", b'{"v":2}', replaces=True), es_document("i", "3", replaces=True)],
    )
    assert second.created == [False, True]
    stored = {d.key: d for d in await store.documents()}
    replaced = stored["i/1"]
    assert (replaced.body, replaced.request_id, replaced.received_at) == (b'{"v":2}', second.request_id, 2)
    assert replaced.seq == before["i/1"]  # a replaced document keeps its place in "newest first"
    assert await keys(store) == ["i/3", "i/2", "i/1"]
    record = (await store.requests(limit=1))[0]
    assert (record.stored, record.duplicates) == (1, 1)
    within = await store.save(
        request_at(3),
        [
            es_document("i", "4", b'{"v":"a"}', replaces=True),
            es_document("i", "4", b'{"v":"b"}', replaces=True),
        ],
    )
    assert within.created == [True, False]
    assert await bodies(store, request_id=within.request_id) == [b'{"v":"b"}']
    assert (await store.counts()).documents == 4


def create(doc_id: str, body: bytes) -> Document:
    """An Elasticsearch ``create``: keeps a stored document of its key."""
    return es_document("i", doc_id, body)


def index(doc_id: str, body: bytes) -> Document:
    """An Elasticsearch ``index``: replaces a stored document of its key."""
    return es_document("i", doc_id, body, replaces=True)


async def test_one_save_applies_keeping_and_replacing_documents_in_order(
    backend: Backend, store: ReceivedStore
) -> None:
    before = await store.save(request_at(1), [create("old", b'{"v":0}'), session("u0")])
    docs = [
        create("a", b'{"a":1}'),  # new
        index("a", b'{"a":2}'),  # replaces what the create just stored
        index("b", b'{"b":1}'),  # new
        create("b", b'{"b":2}'),  # kept: the index came first
        index("c", b'{"c":1}'),  # new
        index("c", b'{"c":2}'),  # replaces it
        create("old", b'{"v":1}'),  # kept: stored by an earlier request
        index("old", b'{"v":2}'),  # replaces it
        create("old", b'{"v":3}'),  # kept again
        session("u0", note="again"),  # sessions keep
        session("u1"),
        replacing(session("u1", note="replaced")),  # a session could replace too
    ]
    result = await store.save(request_at(2), docs)
    assert result.created == [True, False, True, False, True, False, False, False, False, False, True, False]
    assert (result.stored, result.duplicates) == (4, 8)
    records = await store.requests()
    assert [r.id for r in records] == [result.request_id, before.request_id]  # one request row each
    assert (records[0].documents, records[0].stored, records[0].duplicates) == (12, 4, 8)
    expected = {
        "i/a": b'{"a":2}',
        "i/b": b'{"b":1}',
        "i/c": b'{"c":2}',
        "i/old": b'{"v":2}',
        "t1-u0-1": session("u0").body,
        "t1-u1-1": session("u1", note="replaced").body,
    }
    stored = await store.documents(limit=100)
    assert {d.key: d.body for d in stored} == expected
    assert len(stored) == len(expected)  # each key once
    assert {d.key for d in stored if d.request_id == result.request_id} == expected.keys() - {"t1-u0-1"}
    counts = await store.counts()
    assert (counts.documents, counts.sessions, counts.requests) == (4, 2, 2)
    await store.close()
    async with opened(backend.new) as again:  # what a reopen reads is what was answered
        assert {d.key: d.body for d in await again.documents(limit=100)} == expected
        assert await again.requests() == records


@pytest.mark.parametrize(
    ("first", "second", "created", "kept"),
    [
        (create, index, [True, False], b'{"n":2}'),
        (index, create, [True, False], b'{"n":1}'),
        (index, index, [True, False], b'{"n":2}'),
        (create, create, [True, False], b'{"n":1}'),
    ],
    ids=["create-index", "index-create", "index-index", "create-create"],
)
async def test_the_same_key_twice_in_one_request(
    store: ReceivedStore,
    first: Callable[[str, bytes], Document],
    second: Callable[[str, bytes], Document],
    created: list[bool],
    kept: bytes,
) -> None:
    result = await store.save(request_at(1), [first("x", b'{"n":1}'), second("x", b'{"n":2}')])
    assert result.created == created
    assert await bodies(store) == [kept]
    [record] = await store.requests()
    assert (record.id, record.documents, record.stored, record.duplicates) == (result.request_id, 2, 1, 1)
    # the same pair again, now that the key is stored: neither creates
    again = await store.save(request_at(2), [first("x", b'{"n":3}'), second("x", b'{"n":4}')])
    assert again.created == [False, False]
    replaced_by = [doc.body for doc in (first("x", b'{"n":3}'), second("x", b'{"n":4}')) if doc.replaces]
    assert await bodies(store) == (replaced_by[-1:] or [kept])
    assert len(await store.requests()) == 2


async def test_a_failed_mixed_save_leaves_nothing(
    backend: Backend, store: ReceivedStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.save(request_at(1), [create("x", b'{"n":0}')])
    docs = [index("x", b'{"n":1}'), create("y", b'{"n":1}'), index("y", b'{"n":2}'), session("u1")]
    with pytest.raises(StoreError):
        await store.save(request_at(2), [*docs, *poison(backend, monkeypatch)])
    monkeypatch.undo()
    assert await bodies(store) == [b'{"n":0}']
    assert [r.received_at for r in await store.requests()] == [1]
    retried = await store.save(request_at(3), docs)
    assert retried.created == [False, True, False, True]
    assert {d.key: d.body for d in await store.documents()} == {
        "i/x": b'{"n":1}',
        "i/y": b'{"n":2}',
        "t1-u1-1": session("u1").body,
    }


async def test_same_key_in_different_kinds_is_distinct(store: ReceivedStore) -> None:
    key = "same-key"
    docs = [Document(SESSION, key, b'{"s":1}', "u"), Document(LEGACY, key, b'{"l":1}', "u")]
    docs.append(Document(DOCUMENT, key, b'{"d":1}', "u", "idx"))
    result = await store.save(request_at(1), docs)
    assert result.created == [True, True, True]
    for doc in docs:
        assert await bodies(store, kind=doc.kind) == [doc.body]


async def test_failed_save_leaves_nothing(
    backend: Backend, store: ReceivedStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.save(request_at(1), [session("u0")])
    good = [session("u1"), session("u2")]
    with pytest.raises(StoreError):
        await store.save(request_at(2), [*good, *poison(backend, monkeypatch)])
    monkeypatch.undo()
    assert await bodies(store) == [session("u0").body]
    assert [(r.received_at, r.status) for r in await store.requests()] == [(1, 200)]
    assert (await store.counts()).sessions == 1
    if backend.folder is not None:  # nor in the files that other tools read
        assert lines_of(backend.folder) == [session("u0").body]
    retried = await store.save(request_at(3), good)
    assert retried.created == [True, True]
    await store.close()
    async with opened(backend.new) as again:
        assert await bodies(again) == [d.body for d in reversed([session("u0"), *good])]
        assert [r.received_at for r in await again.requests()] == [3, 1]


def poison(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> list[Document]:
    """Make the next save fail after some of its documents were written; the documents to add to it."""
    if backend.name != "files":
        # NOT NULL on body: the request row and the good documents are already in the transaction.
        return [Document(SESSION, "t1-poison-1", cast(bytes, None), "poison")]
    calls = []
    real_fsync = os.fsync

    def fsync_failing_once_on_the_index(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:  # the documents are written and synced; the index sync hits a disk error
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_failing_once_on_the_index)
    return []


async def test_refused_requests_are_recorded(store: ReceivedStore) -> None:
    refused = await store.refuse(request_at(5, principal="mallory"), 401, "bad credentials")
    [record] = await store.requests()
    assert record.id == refused
    assert (record.status, record.error, record.principal) == (401, "bad credentials", "mallory")
    assert (record.documents, record.stored, record.duplicates) == (0, 0, 0)
    assert await store.documents() == []


async def test_counts(store: ReceivedStore) -> None:
    assert (await store.counts()).as_json() == {
        "sessions": 0,
        "legacy": 0,
        "documents": 0,
        "requests": 0,
        "refusedRequests": 0,
    }
    await store.save(request_at(1), [session("u1"), session("u2"), legacy("v1")])
    await store.save(request_at(2), [session("u1"), es_document("i", "1")])
    await store.refuse(request_at(3), 400, "not JSON")
    await store.refuse(request_at(4), 413, "too large")
    counts = await store.counts()
    assert (counts.sessions, counts.legacy, counts.documents) == (2, 1, 1)
    assert (counts.requests, counts.refused_requests) == (4, 2)


async def test_documents_filter_order_and_limit(store: ReceivedStore) -> None:
    first = await store.save(request_at(1), [session("u1", 1), session("u2", 1)])
    second = await store.save(request_at(2), [session("u1", 2), legacy("u1"), session("u3")])
    everything = await store.documents(limit=100)
    assert [d.key for d in everything] == ["t1-u3-1", "legacy-v-u1-1", "t1-u1-2", "t1-u2-1", "t1-u1-1"]
    seqs = [d.seq for d in everything]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == 5
    assert await keys(store, limit=2) == ["t1-u3-1", "legacy-v-u1-1"]
    assert await keys(store, user_session_id="u1") == ["legacy-v-u1-1", "t1-u1-2", "t1-u1-1"]
    assert await keys(store, user_session_id="u1", kind=SESSION) == ["t1-u1-2", "t1-u1-1"]
    assert await keys(store, request_id=first.request_id) == ["t1-u2-1", "t1-u1-1"]
    only = await keys(store, request_id=second.request_id, kind=LEGACY, user_session_id="u1")
    assert only == ["legacy-v-u1-1"]
    assert await store.documents(user_session_id="nobody") == []
    assert await store.documents(kind=DOCUMENT) == []


async def test_documents_page_after_the_last_one_read(store: ReceivedStore) -> None:
    await store.save(request_at(1), [session(f"u{n}") for n in range(5)])
    await store.save(request_at(2), [session("u0", 2), legacy("u0")])
    for filters in ({}, {"request_id": 1}, {"user_session_id": "u0"}):
        everything = [d.key for d in await store.documents(limit=100, **filters)]
        paged: list[str] = []
        before = None
        while page := await store.documents(limit=2, before_seq=before, **filters):
            paged += [d.key for d in page]
            before = page[-1].seq
        assert paged == everything, filters


async def test_session_lookup_spans_hours_in_seq_order(store: ReceivedStore) -> None:
    """Documents of one session id received hours apart come back newest seq first, limit applied
    across the hours; a replaced version keeps its place in seq order though received later."""
    hour = 3_600_000
    indexed = Document(DOCUMENT, "i/a", b'{"v":1}', "u1", "i", replaces=True)
    await store.save(request_at(1 * hour), [indexed, session("u1", 1), session("u2", 1)])
    await store.save(request_at(3 * hour + 5), [session("u1", 2)])
    await store.save(request_at(8 * hour), [dataclasses.replace(indexed, body=b'{"v":2}')])
    assert await keys(store, user_session_id="u1") == ["t1-u1-2", "t1-u1-1", "i/a"]
    assert await keys(store, user_session_id="u1", limit=2) == ["t1-u1-2", "t1-u1-1"]
    [replaced] = await store.documents(user_session_id="u1", kind=DOCUMENT)
    assert (replaced.body, replaced.received_at) == (b'{"v":2}', 8 * hour)
    assert await keys(store, user_session_id="u2") == ["t1-u2-1"]


async def test_sqlite_session_lookups_go_through_the_index_by_hour(tmp_path: Path) -> None:
    from sessionexport.receiver.store.sqlite import session_probe

    async with opened(lambda: create_received_store(tmp_path, None)) as store:
        await store.save(request_at(1), [session("u1")])
    index = "SEARCH documents USING INDEX documents_by_hour_and_session"
    with sqlite3.connect(tmp_path / "received.db") as conn:
        for request_id, kind in [(None, None), (1, None), (None, SESSION), (1, SESSION)]:
            probe, params = session_probe("u1", request_id, kind)
            plan = [row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + probe, (*params, 0, 20))]
            assert plan == [f"{index} (<expr>=? AND user_session_id=?)"], plan


def test_a_keys_locality_is_the_number_that_ends_it() -> None:
    assert key_locality("t1-u1-1700000000123") == 1_700_000_000_123
    assert key_locality("legacy-v-7-0042") == 42
    assert key_locality("i/a") == key_locality("t1-u1-") == key_locality("12345") == 0
    assert key_locality("x-" + "9" * 18) == 10**18 - 1 and key_locality("x-" + "9" * 19) == 0
    assert key_locality("x-\u0661\u0662") == 0  # digits of other scripts are not read
    assert key_locality("a\x00-12") == 0  # as SQLite reads it (see key_locality)


# Keys as they come (sessions', legacy, Elasticsearch _ids of every shape) and edge cases.
LOCALITY_KEYS = [
    "t1-u1-1700000000123",
    "t1-u1-",
    "-5",
    "5",
    "",
    "a--7",
    "x-" + "9" * 18,
    "x-" + "9" * 19,
    "x-\u0661\u0662",
    "caf\u00e9-12",
    "legacy--v-1",
    "i/a",
    "i/0",
    "i/-0",
    "a\x00-12",
    "a-12\x00",
    *(f"t{n % 3}-{n * 7919 % 100_003}_{n}-{1_700_000_000_000 + n * 104_729}" for n in range(200)),
]


async def test_migration_3_keeps_every_document_and_their_uniqueness(tmp_path: Path) -> None:
    """A receiver database as release 2 left it: after the upgrade every document and request is
    there as it was, seqs carry on after the highest, each key's locality is the store's own
    reading of it, and a document received again is still known."""
    path = tmp_path / "received.db"
    sqlite_at_version(path, 2, "sessionexport.receiver")
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute(
            "INSERT INTO requests (received_at, method, path, content_type, size, client, status)"
            " VALUES (1, 'PUT', '/export/events', 'application/json', 10, 'c', 200)"
        )
        for n, key in enumerate(LOCALITY_KEYS):
            conn.execute(
                "INSERT INTO documents (request_id, received_at, kind, key, user_session_id, index_name, body)"
                " VALUES (1, ?, ?, ?, ?, ?, ?)",
                (
                    n,
                    (SESSION, LEGACY, DOCUMENT)[n % 3],
                    key,
                    f"u{n}",
                    "i" if n % 3 == 2 else None,
                    b"{}%d" % n,
                ),
            )
        conn.execute("DELETE FROM documents WHERE seq = (SELECT max(seq) FROM documents)")
        before = conn.execute("SELECT * FROM documents ORDER BY seq").fetchall()
        high = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'documents'").fetchone()[0]
    async with opened(lambda: create_received_store(tmp_path, None)) as store:
        again = [d for d in await store.documents(limit=1000) if d.seq == before[5][0]]
        result = await store.save(
            request_at(9), [Document(again[0].kind, again[0].key, b"{}"), session("new")]
        )
        assert result.created == [False, True]
        newest = await store.documents(limit=1)
        assert newest[0].key == "t1-new-1" and newest[0].seq == high + 1
    with sqlite3.connect(path) as conn:
        columns = "seq, request_id, received_at, kind, key, user_session_id, index_name, body"
        after = conn.execute(
            f"SELECT {columns} FROM documents WHERE seq <= ? ORDER BY seq", (high,)
        ).fetchall()
        localities = conn.execute("SELECT key, locality FROM documents").fetchall()
    assert after == before
    assert localities and all(locality == key_locality(key) for key, locality in localities)


async def test_sqlite_finds_known_keys_through_the_unique_index(tmp_path: Path) -> None:
    async with opened(lambda: create_received_store(tmp_path, None)) as store:
        await store.save(request_at(1), [session("u1")])
    with sqlite3.connect(tmp_path / "received.db") as conn:
        query = _STORED_KEYS.format(wanted="(?, ?), (?, ?)")
        plan = [row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + query, (1, "a", 0, "b", SESSION))]
    index = "SEARCH d USING COVERING INDEX documents_identity (kind=? AND locality=? AND key=?)"
    assert index in plan, plan


async def test_requests_newest_first(store: ReceivedStore) -> None:
    ids = [(await store.save(request_at(1), [session("u1")])).request_id]
    ids.append(await store.refuse(request_at(2), 401, "no"))
    ids.append((await store.save(request_at(3), [])).request_id)
    ids.append((await store.save(request_at(4), [replacing(session("u1"))])).request_id)
    assert len(set(ids)) == 4
    assert [r.id for r in await store.requests()] == ids[::-1]
    assert [r.received_at for r in await store.requests(limit=2)] == [4, 3]
    assert [(r.status, r.error) for r in await store.requests()][2] == (401, "no")


async def test_reopening_keeps_everything_and_idempotence(backend: Backend, store: ReceivedStore) -> None:
    await store.save(request_at(1), [session("u1"), legacy("v1")])
    await store.save(request_at(2), [es_document("i", "1", b'{"v":1}', replaces=True)])
    await store.save(request_at(3), [es_document("i", "1", b'{"v":2}', replaces=True)])
    await store.refuse(request_at(4), 403, "forbidden")
    documents, requests, counts = await store.documents(), await store.requests(), await store.counts()
    await store.close()
    async with opened(backend.new) as again:
        assert (await again.documents(), await again.requests(), await again.counts()) == (
            documents,
            requests,
            counts,
        )
        result = await again.save(request_at(5), [session("u1", note="late"), session("u9")])
        assert result.created == [False, True]
        newest = await again.documents(limit=1)
        assert newest[0].key == "t1-u9-1" and newest[0].seq > max(d.seq for d in documents)
        assert await bodies(again, kind=SESSION) == [session("u9").body, session("u1").body]
        assert await again.refuse(request_at(6), 401, "x") > result.request_id


def test_sqlite_and_postgresql_migrations_agree() -> None:
    def names(dialect: str) -> list[tuple[int, str]]:
        return [(m.version, m.name) for m in migrations_for(dialect, "sessionexport.receiver")]

    assert names("sqlite") == names("postgresql") != []


# -- files backend ------------------------------------------------------------------------------
def lines_of(folder: Path) -> list[bytes]:
    """Every line of the documents files, as another tool reading them in name order would see them."""
    found: list[bytes] = []
    for path in sorted(folder.glob("documents-*.ndjson")):
        data = path.read_bytes()
        assert data == b"" or data.endswith(b"\n"), f"{path.name} ends in a partial line"
        found.extend(data.splitlines())
    return found


async def test_files_rotate_past_rotate_bytes_and_reads_see_all(tmp_path: Path) -> None:
    folder = tmp_path / "received"
    docs = [session(f"user-{n:03d}") for n in range(30)]
    store = FilesReceivedStore(folder, rotate_bytes=600)
    await store.open()
    for n in range(0, 30, 3):
        await store.save(request_at(n), docs[n : n + 3])
    files = sorted(folder.glob("documents-*.ndjson"))
    assert len(files) >= 4
    assert all(path.stat().st_size <= 600 for path in files)
    assert lines_of(folder) == [d.body for d in docs]
    assert await bodies(store) == [d.body for d in reversed(docs)]
    await store.save(request_at(99), [replacing(session("user-000", note="new"))])
    await store.close()
    again = FilesReceivedStore(folder, rotate_bytes=600)
    await again.open()
    try:
        assert await bodies(again, user_session_id="user-000") == [session("user-000", note="new").body]
        assert len(await again.documents(limit=100)) == 30
        assert (await again.save(request_at(100), docs[:3])).created == [False] * 3
    finally:
        await again.close()


async def test_files_newest_first_holds_after_the_oldest_pair_of_files_is_removed(tmp_path: Path) -> None:
    """Old pairs of rotated files may be removed while no receiver runs: a document replaced in a
    later file (keeping its first seq) must still be listed in seq order, and paging finds all."""
    folder = tmp_path / "received"
    async with opened(lambda: FilesReceivedStore(folder, rotate_bytes=150)) as store:
        await store.save(request_at(1), [session("a")])  # pair 1: seq 1
        await store.save(request_at(2), [session("c"), replacing(session("a", note="v2"))])  # pair 2
    assert sorted(p.name for p in folder.glob("documents-*")) == [
        "documents-000001.ndjson",
        "documents-000002.ndjson",
    ]
    for name in ("documents-000001.ndjson", "index-000001.ndjson"):
        (folder / name).unlink()
    async with opened(lambda: FilesReceivedStore(folder, rotate_bytes=150)) as store:
        assert await keys(store) == ["t1-c-1", "t1-a-1"]  # newest first: c (seq 2), then a (seq 1)
        first = await store.documents(limit=1)
        rest = await store.documents(limit=1, before_seq=first[0].seq)
        assert [d.key for d in first + rest] == ["t1-c-1", "t1-a-1"]


async def test_files_keep_a_bounded_number_of_descriptors_open_however_many_pairs(tmp_path: Path) -> None:
    """Every pair of files ever written used to hold two descriptors until the store closed: a
    receiver running for long enough ran out of them and could store nothing more."""
    folder = tmp_path / "received"

    def open_descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_descriptors()
    docs = [session(f"user-{n:03d}") for n in range(60)]
    async with opened(lambda: FilesReceivedStore(folder, rotate_bytes=150)) as store:
        for doc in docs:
            await store.save(request_at(1), [doc])
        assert len(list(folder.glob("documents-*.ndjson"))) >= 3 * OPEN_FILES
        assert open_descriptors() - before <= OPEN_FILES + 8  # the store's, its threads', its lock
        assert await bodies(store) == [d.body for d in reversed(docs)]  # files closed are read again
        assert open_descriptors() - before <= OPEN_FILES + 8


@pytest.fixture
def files_backend(tmp_path: Path) -> Backend:
    return Backend("files", lambda: FilesReceivedStore(tmp_path / "received"), tmp_path / "received")


async def saved_twice(backend: Backend) -> Path:
    """Two saves, then closed: what the torn-file tests damage. Returns the folder."""
    async with opened(backend.new) as store:
        await store.save(request_at(1), [session("a1"), session("a2")])
        await store.save(request_at(2), [session("b1"), session("b2")])
    assert backend.folder is not None
    return backend.folder


async def test_files_torn_request_line_drops_that_save_whole(files_backend: Backend) -> None:
    folder = await saved_twice(files_backend)
    requests_file = folder / "requests.ndjson"
    data = requests_file.read_bytes()
    requests_file.write_bytes(data[: data.rindex(b"\n", 0, -1) + 20])  # the last line cut in the middle
    async with opened(files_backend.new) as store:
        assert await bodies(store) == [session("a2").body, session("a1").body]
        assert [r.received_at for r in await store.requests()] == [1]
        assert lines_of(folder) == [session("a1").body, session("a2").body]
        assert (await store.save(request_at(3), [session("b1")])).created == [True]
    async with opened(files_backend.new) as store:
        assert await bodies(store, user_session_id="b1") == [session("b1").body]
        assert [r.received_at for r in await store.requests()] == [3, 1]


async def test_files_partial_lines_after_a_crash_are_cut(files_backend: Backend) -> None:
    folder = await saved_twice(files_backend)
    sizes = {name: (folder / name).stat().st_size for name in (documents_file(1), index_file(1))}
    with (folder / documents_file(1)).open("ab") as file:
        file.write(session("c1").body + b"\n" + b'{"tenantId":"t1","userSess')
    with (folder / index_file(1)).open("ab") as file:
        file.write(b'{"seq":5,"request":3,"received_at":3,"ki')
    async with opened(files_backend.new) as store:
        assert len(await store.documents()) == 4
        assert {name: (folder / name).stat().st_size for name in sizes} == sizes
        assert (await store.save(request_at(3), [session("c1")])).created == [True]
    assert lines_of(folder)[-1] == session("c1").body


async def test_files_document_cut_mid_line_is_dropped_not_fatal(files_backend: Backend) -> None:
    folder = await saved_twice(files_backend)
    path = folder / documents_file(1)
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    async with opened(files_backend.new) as store:
        assert await bodies(store) == [session(u).body for u in ("b1", "a2", "a1")]
        assert (await store.save(request_at(3), [session("b2")])).created == [True]
    assert all(orjson.loads(line) for line in lines_of(folder))


async def test_files_damage_before_committed_lines_refuses_to_open(files_backend: Backend) -> None:
    folder = await saved_twice(files_backend)
    path = folder / "requests.ndjson"
    first, rest = path.read_bytes().split(b"\n", 1)
    path.write_bytes(b"#" + first[1:] + b"\n" + rest)
    with pytest.raises(StoreError, match="damaged"):
        await files_backend.new().open()


async def test_files_old_request_lines_trimmed_by_hand_leave_the_documents_readable(
    files_backend: Backend,
) -> None:
    """requests.ndjson grows with every request: an operator may cut its start."""
    folder = await saved_twice(files_backend)
    path = folder / "requests.ndjson"
    path.write_bytes(path.read_bytes().split(b"\n", 1)[1])  # as sed -i 1d does
    async with opened(files_backend.new) as store:
        assert await bodies(store) == [session(u).body for u in ("b2", "b1", "a2", "a1")]
        assert [r.id for r in await store.requests()] == [2]
        assert (await store.save(request_at(3), [session("c1")])).request_id == 3


async def test_files_refuse_to_open_when_requests_ndjson_lost_its_end(files_backend: Backend) -> None:
    """Its index lines would look uncommitted, and truncating them would drop stored documents."""
    folder = await saved_twice(files_backend)
    (folder / "requests.ndjson").write_bytes(b"")
    sizes = {path.name: path.stat().st_size for path in folder.glob("*-*.ndjson")}
    with pytest.raises(
        StoreError, match=r"holds documents of request 2, but requests\.ndjson ends at request 0"
    ):
        await files_backend.new().open()
    assert {path.name: path.stat().st_size for path in folder.glob("*-*.ndjson")} == sizes


async def test_files_keep_only_the_recent_request_records_in_memory(
    files_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files_store_module, "RECENT_REQUESTS", 3)
    async with opened(files_backend.new) as store:
        for n in range(1, 6):
            await store.save(request_at(n), [session(f"u{n}")])
        await store.refuse(request_at(6), 400, "bad")
        assert [r.id for r in await store.requests(limit=10)] == [6, 5, 4]
    async with opened(files_backend.new) as store:
        assert [r.id for r in await store.requests(limit=10)] == [6, 5, 4]
        counts = await store.counts()
        assert (counts.requests, counts.refused_requests, counts.sessions) == (6, 1, 5)


async def test_files_refuse_multi_line_documents_and_a_second_writer(files_backend: Backend) -> None:
    async with opened(files_backend.new) as store:
        with pytest.raises(StoreError, match="one document per line"):
            await store.save(request_at(1), [session("u1"), Document(SESSION, "k", b'{\n"a":1}')])
        assert await store.documents() == [] and await store.requests() == []
        with pytest.raises(StoreError, match="in use"):
            await files_backend.new().open()


async def test_files_read_only_beside_the_writer_sees_what_is_committed(files_backend: Backend) -> None:
    """What the ``received`` commands open while ``receive`` runs: no lock, nothing changed, the
    save under way (here: its document and index lines, not yet its request line) left alone."""
    async with opened(files_backend.new) as writer:
        await writer.save(request_at(1), [session("a1"), session("a2")])
        folder = files_backend.folder
        assert folder is not None
        with (folder / documents_file(1)).open("ab") as file:  # a save half done, as the writer does it
            file.write(session("b1").body + b"\n")
        with (folder / index_file(1)).open("ab") as file:
            file.write(b'{"seq":3,"request":2,"received_at":2,"ki')
        sizes = {name: (folder / name).stat().st_size for name in os.listdir(folder)}

        async with opened(lambda: FilesReceivedStore(folder, read_only=True)) as reader:
            assert await bodies(reader) == [session("a2").body, session("a1").body]
            assert (await reader.counts()).sessions == 2
            assert [r.received_at for r in await reader.requests()] == [1]
            with pytest.raises(StoreError, match="read-only"):
                await reader.save(request_at(3), [session("c1")])
        assert {name: (folder / name).stat().st_size for name in os.listdir(folder)} == sizes


async def test_files_read_only_of_a_missing_folder_says_so(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="nothing was received there"):
        await FilesReceivedStore(tmp_path / "nowhere", read_only=True).open()
    assert not (tmp_path / "nowhere").exists()


# -- PostgreSQL backend -------------------------------------------------------------------------
async def test_postgresql_concurrent_opens_migrate_once(postgres_url: str) -> None:
    expected = [m.version for m in migrations_for("postgresql", "sessionexport.receiver")]
    for _ in range(5):  # a race that a missing lock loses only sometimes: give it several chances
        with fresh_schema(postgres_url) as url:
            stores = [PostgresReceivedStore(url) for _ in range(3)]
            try:
                await asyncio.gather(*(s.open() for s in stores))
                with psycopg.connect(url) as conn:
                    rows = conn.execute(
                        "SELECT version FROM receiver_schema_migrations ORDER BY version"
                    ).fetchall()
                assert [row[0] for row in rows] == expected
                await stores[0].save(request_at(1), [session("u1")])
                assert (await stores[2].counts()).sessions == 1
            finally:
                await asyncio.gather(*(s.close() for s in stores))


async def test_postgresql_compresses_bodies_with_lz4(postgres_url: str) -> None:
    """Stored bodies large enough to be compressed are compressed with lz4 (migration 4)."""
    with fresh_schema(postgres_url) as url:
        async with opened(lambda: PostgresReceivedStore(url)) as store:
            large = dataclasses.replace(
                session("u1"), body=b'{"userSessionId":"u1","pad":"%s"}' % (b"ab" * 8000)
            )
            await store.save(request_at(1), [large])
        with psycopg.connect(url) as conn:
            [(method,)] = conn.execute("SELECT pg_column_compression(body) FROM documents").fetchall()
    assert method == "lz4"


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_postgresql_unreachable_server_is_a_clear_store_error() -> None:
    port = unused_port()
    store = PostgresReceivedStore(f"postgresql://someone:hunter2-secret@127.0.0.1:{port}/db")
    with pytest.raises(StoreError, match=f"cannot reach PostgreSQL at 127.0.0.1:{port}") as caught:
        await store.open()
    assert "hunter2" not in str(caught.value)
    with pytest.raises(StoreError, match="not open"):
        await store.counts()


async def test_postgresql_wrong_password_never_leaks_it(postgres_url: str) -> None:
    parts = urlsplit(postgres_url)
    wrong = parts._replace(netloc=f"{parts.username}:not-the-password-42@{parts.hostname}:{parts.port}")
    with pytest.raises(StoreError, match="cannot reach PostgreSQL") as caught:
        await PostgresReceivedStore(urlunsplit(wrong)).open()
    assert "not-the-password-42" not in str(caught.value)


@pytest.mark.parametrize("storage", [None, "files"])
async def test_a_new_receiver_data_directory_is_private(tmp_path: Path, storage: str | None) -> None:
    async with opened(lambda: create_received_store(tmp_path / "receiver", storage)) as store:
        await store.save(request_at(1), [session("u1")])
    folders = [tmp_path / "receiver", *([tmp_path / "receiver" / "received"] if storage else [])]
    assert [folder.stat().st_mode & 0o777 for folder in folders] == [0o700] * len(folders)
