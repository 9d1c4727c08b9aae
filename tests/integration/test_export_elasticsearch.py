"""Elasticsearch direct mode end to end: the exporter against the receiver toolkit's _bulk (a real
process on loopback, HTTPS, answering in Elasticsearch's documented shapes, with planted item
failures). No real Elasticsearch can run on this machine; the receiver follows ES's documented
responses: 200 with ``errors: true`` and mixed items, the ES 8 ``_type`` rejection, 429 items."""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from sessionexport.config import ServerConfig
from tests.support.engine import Engine, export_value, running_engine, sessions, until
from tests.support.receiver_process import ReceiverProcess

pytestmark = pytest.mark.store  # on PostgreSQL too (tests/support/backend.py)


def engine_trusting(tmp_path: Path, ca_file: Path) -> AbstractAsyncContextManager[Engine]:
    return running_engine(ServerConfig(data_dir=tmp_path / "data", ca_bundle=ca_file))


def direct(r: ReceiverProcess, doc_type: str | None = None, **tuning: Any) -> dict[str, Any]:
    return export_value(
        f"{r.base}/_bulk",
        {"retries": 2, "backoffSeconds": 0.05, **tuning},
        endpointDefinition={"contentType": "application/x-ndjson", "usePost": True},
        sendDirect={"active": True, "indexName": "sessions", **({"docType": doc_type} if doc_type else {})},
    )


def identity_id(line: bytes) -> str:
    value = orjson.loads(line)
    return f"{value['tenantId']}-{value['userSessionId']}-{value['startTime']}"


async def received(r: ReceiverProcess, path: str, **params: Any) -> Any:
    async with httpx.AsyncClient(verify=r.verify) as client:
        response = await client.get(f"{r.base}/received/{path}", params=params)
        response.raise_for_status()
        return response.json()


async def status_when(engine: Engine, export_id: str, condition: Any, what: str) -> dict[str, Any]:
    async def check() -> bool:
        return bool(condition(await engine.status(export_id)))

    await until(check, what, within=30)
    return await engine.status(export_id)


async def test_documents_indexed_by_identity_without_type_on_es8(tmp_path: Path) -> None:
    r = ReceiverProcess(tmp_path / "es").start()
    try:
        async with engine_trusting(tmp_path, r.ca_file) as engine:
            export_id = await engine.create_export(direct(r))
            lines = sessions(30, seed=4)
            await engine.ingest(lines)
            await status_when(engine, export_id, lambda s: s["deliveredSessions"] == 30, "30 delivered")
            docs = (await received(r, "documents", kind="document", limit=100))["documents"]
            assert {d["key"] for d in docs} == {f"sessions/{identity_id(line)}" for line in lines}
            requests = (await received(r, "requests"))["requests"]
            assert all(rec["status"] == 200 for rec in requests)  # no _type: ES 8 accepts it
    finally:
        r.stop()


async def test_gzip_bulks_are_indexed_as_uncompressed_ones(tmp_path: Path) -> None:
    r = ReceiverProcess(tmp_path / "es").start()
    try:
        async with engine_trusting(tmp_path, r.ca_file) as engine:
            export_id = await engine.create_export(direct(r, compression="gzip"))
            lines = sessions(30, seed=5)
            await engine.ingest(lines)
            await status_when(engine, export_id, lambda s: s["deliveredSessions"] == 30, "30 delivered")
            docs = (await received(r, "documents", kind="document", limit=100))["documents"]
            assert {d["key"] for d in docs} == {f"sessions/{identity_id(line)}" for line in lines}
            assert sorted(orjson.dumps(d["document"]) for d in docs) == sorted(lines)
    finally:
        r.stop()


async def test_doc_type_is_sent_for_es7_and_refused_whole_by_es8(tmp_path: Path) -> None:
    es7 = ReceiverProcess(tmp_path / "es7", "--es-version", "7").start()
    es8 = ReceiverProcess(tmp_path / "es8").start()
    try:
        # each receiver has its own self-signed certificate: one engine trusting each
        async with engine_trusting(tmp_path / "a", es7.ca_file) as engine:
            ok = await engine.create_export(direct(es7, doc_type="_doc"))
            await engine.ingest(sessions(5, seed=6))
            await status_when(engine, ok, lambda s: s["deliveredSessions"] == 5, "ES 7 takes _type")
        async with engine_trusting(tmp_path / "b", es8.ca_file) as engine:
            refused = await engine.create_export(direct(es8, doc_type="_doc"))
            await engine.ingest(sessions(5, seed=6))
            status = await status_when(engine, refused, lambda s: s["deadLetters"] == 1, "a dead letter")
            assert status["failedSessions"] == 5 and status["deliveredSessions"] == 0
            # Elasticsearch's own reason, not only the status
            assert status["lastError"].startswith("Request failed: HTTP 400: illegal_argument_exception: ")
            assert "unknown parameter [_type]" in status["lastError"]
            records = (await received(es8, "requests"))["requests"]
            # a request Elasticsearch refuses whole with 400 is not tried again: it would fail the same
            assert len(records) == 1 and "unknown parameter [_type]" in records[0]["error"]
    finally:
        es7.stop()
        es8.stop()


async def test_mixed_items_rejected_ones_become_per_session_dead_letters(tmp_path: Path) -> None:
    lines = sessions(12, seed=8)
    bad = {identity_id(lines[2]), identity_id(lines[7])}
    r = ReceiverProcess(tmp_path / "es", *[a for b in bad for a in ("--bulk-fail", f"400:^{b}$")]).start()
    try:
        async with engine_trusting(tmp_path, r.ca_file) as engine:
            export_id = await engine.create_export(direct(r))
            await engine.ingest(lines)
            status = await status_when(
                engine, export_id, lambda s: s["position"] and not s["backlog"], "decided"
            )
            assert (status["deliveredSessions"], status["failedSessions"], status["deadLetters"]) == (
                10,
                2,
                1,  # one letter per kind of rejection, not per session
            )
            letters = (
                await engine.client.get(f"/api/v2/exports/{export_id}/deadletters", headers=engine.headers)
            ).json()
            [letter] = letters["deadLetters"]
            assert [s[1] for s in letter["sessions"]] == [
                orjson.loads(lines[i])["userSessionId"] for i in (2, 7)
            ]
            assert "document_parsing_exception" in letter["reason"] and letter["sessionCount"] == 2
            [attempt] = letter["attempts"]  # the request got 200; these sessions got 400
            assert (attempt["attempt"], attempt["status"]) == (1, 400)
            assert attempt["error"].startswith("400 document_parsing_exception")
            alerts = (await engine.client.get("/api/v2/alerts", headers=engine.headers)).json()["alerts"]
            assert any("2 session(s) rejected by Elasticsearch" in a["title"] for a in alerts)
            metrics = (await engine.client.get("/metrics", headers=engine.headers)).text
            assert f'sessionexport_sessions_failed_total{{export="{export_id}"}} 2.0' in metrics
            assert f'sessionexport_sessions_delivered_total{{export="{export_id}"}} 10.0' in metrics
            assert len((await received(r, "requests"))["requests"]) == 1  # 400 items are not retried
    finally:
        r.stop()


async def test_busy_items_are_retried_alone_then_delivered(tmp_path: Path) -> None:
    lines = sessions(10, seed=9)
    busy = [identity_id(lines[i]) for i in (1, 4, 5)]
    r = ReceiverProcess(tmp_path / "es", *[a for b in busy for a in ("--bulk-fail", f"429:^{b}$:1")]).start()
    try:
        async with engine_trusting(tmp_path, r.ca_file) as engine:
            export_id = await engine.create_export(direct(r))
            await engine.ingest(lines)
            status = await status_when(
                engine, export_id, lambda s: s["deliveredSessions"] == 10, "all delivered"
            )
            assert (status["retriedItems"], status["failedSessions"], status["deadLetters"]) == (3, 0, 0)
            first, second = reversed((await received(r, "requests"))["requests"])
            assert (first["documents"], second["documents"]) == (7, 3)  # only the busy ones again
            again = (await received(r, "documents", requestId=second["id"]))["documents"]
            assert {d["key"] for d in again} == {f"sessions/{b}" for b in busy}
    finally:
        r.stop()


async def test_a_letter_of_items_refused_in_different_attempts_keeps_log_order(tmp_path: Path) -> None:
    """The first session busy, then refused; the second refused at once: one letter (one kind of
    rejection), its sessions in log order (it said seq 2-1)."""
    lines = sessions(3, seed=12)
    first, second = identity_id(lines[0]), identity_id(lines[1])
    faults = ("--bulk-fail", f"429:^{first}$:1", "--bulk-fail", f"400:^({first}|{second})$")
    r = ReceiverProcess(tmp_path / "es", *faults).start()
    try:
        async with engine_trusting(tmp_path, r.ca_file) as engine:
            export_id = await engine.create_export(direct(r))
            await engine.ingest(lines)
            await status_when(engine, export_id, lambda s: s["deadLetters"] == 1, "dead letter")
            [letter] = (
                await engine.client.get(f"/api/v2/exports/{export_id}/deadletters", headers=engine.headers)
            ).json()["deadLetters"]
            assert letter["lastSeq"] - letter["firstSeq"] == 1
            assert [s[1] for s in letter["sessions"]] == [
                orjson.loads(lines[i])["userSessionId"] for i in (0, 1)
            ]
    finally:
        r.stop()


async def test_items_still_busy_after_the_last_attempt_are_dead_lettered(tmp_path: Path) -> None:
    lines = sessions(4, seed=10)
    r = ReceiverProcess(tmp_path / "es", "--bulk-fail", f"503:^{identity_id(lines[0])}$").start()
    try:
        async with engine_trusting(tmp_path, r.ca_file) as engine:
            export_id = await engine.create_export(direct(r))
            await engine.ingest(lines)
            status = await status_when(engine, export_id, lambda s: s["deadLetters"] == 1, "dead letter")
            assert (status["deliveredSessions"], status["failedSessions"], status["retriedItems"]) == (
                3,
                1,
                2,
            )
            letter = (
                await engine.client.get(f"/api/v2/exports/{export_id}/deadletters", headers=engine.headers)
            ).json()
            assert "503" in letter["deadLetters"][0]["reason"]
            # busy in every attempt (three here), each with what its item was answered
            attempts = letter["deadLetters"][0]["attempts"]
            assert [(a["attempt"], a["status"]) for a in attempts] == [(1, 503), (2, 503), (3, 503)]
    finally:
        r.stop()


async def test_413_splits_the_bulk(tmp_path: Path) -> None:
    r = ReceiverProcess(
        tmp_path / "es", "--max-body-mb", "0.03"
    ).start()  # ~31 KB: a few sessions per request
    try:
        async with engine_trusting(tmp_path, r.ca_file) as engine:
            export_id = await engine.create_export(direct(r))
            lines = sessions(16, seed=12)
            await engine.ingest(lines)
            status = await status_when(
                engine, export_id, lambda s: s["deliveredSessions"] == 16, "all delivered"
            )
            assert status["deadLetters"] == 0
            requests = (await received(r, "requests", limit=100))["requests"]
            assert any(rec["status"] == 413 for rec in requests)
            assert sum(rec["stored"] for rec in requests) == 16
    finally:
        r.stop()


async def test_plain_endpoint_413_also_splits(tmp_path: Path) -> None:
    r = ReceiverProcess(tmp_path / "plain", "--max-body-mb", "0.03").start()
    try:
        async with engine_trusting(tmp_path, r.ca_file) as engine:
            export_id = await engine.create_export(export_value(r.url, {"retries": 1}))
            await engine.ingest(sessions(16, seed=13))
            await status_when(engine, export_id, lambda s: s["deliveredSessions"] == 16, "all delivered")
            assert (await received(r, "counts"))["sessions"] == 16
    finally:
        r.stop()


async def test_replay_of_a_rejected_document_counts_only_when_every_item_succeeds(tmp_path: Path) -> None:
    lines = sessions(3, seed=14)
    r = ReceiverProcess(tmp_path / "es", "--bulk-fail", f"400:^{identity_id(lines[1])}$:1").start()
    try:
        async with engine_trusting(tmp_path, r.ca_file) as engine:
            export_id = await engine.create_export(direct(r))
            await engine.ingest(lines)
            await status_when(engine, export_id, lambda s: s["deadLetters"] == 1, "dead letter")
            replay = await engine.client.post(
                f"/api/v2/exports/{export_id}/deadletters/replay", headers=engine.headers
            )
            assert replay.json()["replayed"] == 1  # the planted failure happened once only
            await asyncio.sleep(0)
            assert (await received(r, "counts"))["documents"] == 3
    finally:
        r.stop()
