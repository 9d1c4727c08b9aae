"""The receiver toolkit as it runs: `sessionexport receive` processes on loopback, HTTPS with its own
self-signed certificate, the exporter and the official Elasticsearch client as senders."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from elasticsearch import Elasticsearch, ElasticsearchWarning, helpers
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from sessionexport.cli import app as cli_app
from sessionexport.config import ServerConfig
from sessionexport.model.validation import compact
from sessionexport.receiver import cli as receiver_cli
from sessionexport.receiver.app import ReceiverConfig, ReceiverOptions, create_receiver_app
from sessionexport.receiver.bulk import TYPES_DEPRECATED
from sessionexport.receiver.store import create_received_store
from tests.conftest import sample
from tests.support.engine import Engine, export_value, running_engine, sessions, until
from tests.support.postgres import fresh_schema
from tests.support.receiver_process import ReceiverProcess

DOC_CHECK = (
    '{"visitorId":"14804637803609BCTKP776NMJBOIF3R8OD6R0E4NQALJO","visitId":"16229530",'
    '"startTime":1480463779085,"endTime":1480463784889,"visitType":"SYNTHETIC"}'
)
NDJSON = {"Content-Type": "application/x-ndjson"}


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[ReceiverProcess]:
    process = ReceiverProcess(tmp_path / "receiver").start()
    yield process
    process.stop()


def counts(r: ReceiverProcess, **kwargs: Any) -> dict[str, int]:
    response = httpx.get(f"{r.base}/received/counts", verify=r.verify, **kwargs)
    assert response.status_code == 200, response.text
    result: dict[str, int] = response.json()
    return result


def identities(r: ReceiverProcess, **kwargs: Any) -> list[tuple[str, str, int]]:
    response = httpx.get(f"{r.base}/received/documents", params={"limit": 1000}, verify=r.verify, **kwargs)
    docs = response.json()["documents"]
    return [
        (d["document"]["tenantId"], d["document"]["userSessionId"], d["document"]["startTime"]) for d in docs
    ]


def identity(line: bytes) -> tuple[str, str, int]:
    value = orjson.loads(line)
    return value["tenantId"], value["userSessionId"], value["startTime"]


def test_the_documented_curl_check_gets_200_and_is_kept_as_legacy(tmp_path: Path) -> None:
    r = ReceiverProcess(tmp_path / "receiver", http=True).start()
    try:
        command = ["curl", "-s", "-v", "-H", "Content-Type: application/json", "-X", "PUT", "-d", DOC_CHECK]
        done = subprocess.run([*command, r.url], capture_output=True, text=True, timeout=30, check=True)
        assert "< HTTP/1.1 200" in done.stderr
        assert orjson.loads(done.stdout) == {"stored": 1, "duplicates": 0, "legacy": 1, "requestId": 1}
        assert counts(r) == {"sessions": 0, "legacy": 1, "documents": 0, "requests": 1, "refusedRequests": 0}
        [doc] = httpx.get(f"{r.base}/received/documents?kind=legacy").json()["documents"]
        assert doc["document"] == orjson.loads(DOC_CHECK)
    finally:
        r.stop()


def test_self_signed_certificate_is_printed_and_reused(tmp_path: Path) -> None:
    first = ReceiverProcess(tmp_path / "receiver").start()
    first.stop()
    assert "self-signed TLS certificate generated" in first.output()
    fingerprint = first.output().split("SHA-256 fingerprint ")[1].split()[0]
    second = ReceiverProcess(tmp_path / "receiver").start()
    try:
        assert f"SHA-256 fingerprint {fingerprint}" in second.output() and "reused" in second.output()
        assert counts(second)["sessions"] == 0  # the certificate verifies (httpx verify=its file)
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{second.base}/health")  # not trusted without it: verification stays on
    finally:
        second.stop()


def test_sessions_stored_once_each_and_read_back_byte_identical(receiver: ReceiverProcess) -> None:
    mobile, web = (
        compact(sample("doc-mobile-session.json")),
        compact(sample("doc-web-synthetic-session.json")),
    )
    body = mobile + b"\n\n" + web + b"\n"
    first = httpx.put(receiver.url, content=body, headers=NDJSON, verify=receiver.verify)
    assert first.json() == {"stored": 2, "duplicates": 0, "legacy": 0, "requestId": 1}
    again = httpx.post(
        receiver.url, content=body, headers={"Content-Type": "application/json"}, verify=receiver.verify
    )
    assert again.json() == {"stored": 0, "duplicates": 2, "legacy": 0, "requestId": 2}
    session_id = orjson.loads(mobile)["userSessionId"]
    found = httpx.get(
        f"{receiver.base}/received/documents", params={"userSessionId": session_id}, verify=receiver.verify
    )
    [doc] = found.json()["documents"]
    assert orjson.dumps(doc["document"]) == orjson.dumps(orjson.loads(mobile))
    runner = CliRunner()
    shown = runner.invoke(cli_app, ["received", "show", session_id, "--data-dir", str(receiver.data_dir)])
    assert shown.exit_code == 0 and shown.stdout.strip().encode() == mobile  # the stored bytes exactly
    bogus = httpx.get(f"{receiver.base}/received/documents", params={"kind": "bogus"}, verify=receiver.verify)
    assert bogus.status_code == 400 and "kind must be session, legacy or document" in bogus.text


def test_the_received_commands_read_a_files_store_while_the_receiver_writes_it(tmp_path: Path) -> None:
    receiver = ReceiverProcess(tmp_path / "receiver", "--storage", "files").start()
    try:
        mobile = compact(sample("doc-mobile-session.json"))
        stored = httpx.put(receiver.url, content=mobile, headers=NDJSON, verify=receiver.verify)
        assert stored.json()["stored"] == 1
        where = ["--data-dir", str(receiver.data_dir), "--storage", "files"]
        counts = CliRunner().invoke(cli_app, ["received", "counts", *where])
        assert counts.exit_code == 0, counts.output
        assert orjson.loads(counts.stdout)["sessions"] == 1
        session_id = orjson.loads(mobile)["userSessionId"]
        shown = CliRunner().invoke(cli_app, ["received", "show", session_id, *where])
        assert shown.exit_code == 0 and shown.stdout.strip().encode() == mobile
        again = httpx.put(receiver.url, content=mobile, headers=NDJSON, verify=receiver.verify)
        assert again.json()["duplicates"] == 1  # the receiver still writes, its folder untouched
        broken = httpx.put(receiver.url, content=b"{broken", headers=NDJSON, verify=receiver.verify)
        assert broken.status_code == 400
        listed = CliRunner().invoke(cli_app, ["received", "requests", *where], env={"COLUMNS": "80"})
        assert listed.exit_code == 0, listed.output
        third, second, first = listed.stdout.splitlines()  # a line a request, newest first, never cut
        assert first.startswith("#1  ") and "  PUT /export/events  200  " in first
        assert first.endswith(f"{len(mobile):,} bytes  stored 1, duplicates 0")
        assert second.endswith("stored 0, duplicates 1")
        assert "  400  7 bytes  refused: " in third and "line 1" in third
        whole = CliRunner().invoke(cli_app, ["received", "requests", "--id", "1", *where])
        assert whole.exit_code == 0 and whole.stdout.strip().encode() == mobile
        nothing = CliRunner().invoke(cli_app, ["received", "requests", "--id", "3", *where])
        assert nothing.exit_code == 1 and "no document was stored from request #3" in nothing.output
        forgot = CliRunner().invoke(cli_app, ["received", "counts", "--data-dir", str(receiver.data_dir)])
        assert forgot.exit_code == 2 and "keeps files, not a database: add --storage files" in forgot.output
    finally:
        receiver.stop()


def test_the_documents_of_a_request_are_read_page_after_page(
    receiver: ReceiverProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One request may hold thousands of sessions: the read API and the CLI reach every one."""
    lines = sessions(7)
    assert (
        httpx.put(receiver.url, content=b"\n".join(lines), headers=NDJSON, verify=receiver.verify).json()[
            "stored"
        ]
        == 7
    )
    seen: list[bytes] = []
    query = "requestId=1&limit=3"
    while True:
        page = httpx.get(f"{receiver.base}/received/documents?{query}", verify=receiver.verify).json()
        seen += [orjson.dumps(d["document"]) for d in page["documents"]]
        if page["nextBefore"] is None:
            break
        query = f"requestId=1&limit=3&before={page['nextBefore']}"
    assert sorted(seen) == sorted(lines)
    monkeypatch.setattr(receiver_cli, "PAGE_DOCUMENTS", 2)
    printed = CliRunner().invoke(
        cli_app, ["received", "requests", "--id", "1", "--data-dir", str(receiver.data_dir)]
    )
    assert printed.exit_code == 0, printed.output
    assert sorted(line.encode() for line in printed.stdout.splitlines()) == sorted(lines)


@pytest.mark.parametrize("route", ["requests", "documents"])
@pytest.mark.parametrize("limit", ["0", "-3", "1001", "99999999999999999999"])
def test_a_read_limit_out_of_range_is_refused_not_taken_as_the_nearest(
    receiver: ReceiverProcess, route: str, limit: str
) -> None:
    answer = httpx.get(f"{receiver.base}/received/{route}", params={"limit": limit}, verify=receiver.verify)
    assert answer.status_code == 400
    assert "limit must be between 1 and 1000" in answer.text


@pytest.mark.parametrize(
    ("body", "headers", "status", "expected"),
    [
        (b'{"tenantId":"t","userSessionId":"s","startTime":1700000000000}\n{broken', NDJSON, 400, "line 2"),
        (b'{"tenantId":"t","userSessionId":"s","startTime":"yesterday"}', NDJSON, 400, "startTime"),
        (b"\n\n", NDJSON, 400, "no sessions"),
        (
            b'{"tenantId":"t","userSessionId":"s","startTime":1700000000000}',
            {"Content-Type": "text/plain"},
            415,
            "text/plain",
        ),
        (b"x" * (2 * 1024 * 1024), NDJSON, 413, "over"),
    ],
    ids=["broken-json", "wrong-type", "empty", "wrong-content-type", "too-large"],
)
def test_malformed_bodies_are_refused_with_nothing_stored(
    tmp_path: Path, body: bytes, headers: dict[str, str], status: int, expected: str
) -> None:
    r = ReceiverProcess(tmp_path / "receiver", "--max-body-mb", "1").start()
    try:
        response = httpx.put(r.url, content=body, headers=headers, verify=r.verify)
        assert response.status_code == status, response.text
        assert expected in response.text
        assert counts(r) == {"sessions": 0, "legacy": 0, "documents": 0, "requests": 1, "refusedRequests": 1}
        [record] = httpx.get(f"{r.base}/received/requests", verify=r.verify).json()["requests"]
        assert record["status"] == status and record["stored"] == 0
    finally:
        r.stop()


def test_a_bad_line_among_good_ones_stores_none_of_them(receiver: ReceiverProcess) -> None:
    good = sessions(3)
    body = b"\n".join(
        [
            good[0],
            good[1],
            b'{"tenantId":"t","userSessionId":"s","startTime":1,"userActions":[{"type":"Bogus"}]}',
            good[2],
        ]
    )
    response = httpx.put(receiver.url, content=body, headers=NDJSON, verify=receiver.verify)
    assert response.status_code == 400
    problems = response.json()["error"]["problems"]
    assert {p["location"] for p in problems} == {"line 3"}
    assert any(p["path"] == "userActions[0].type" for p in problems)
    assert counts(receiver)["sessions"] == 0


def test_thousands_of_bad_lines_get_the_first_100_listed_and_a_count(receiver: ReceiverProcess) -> None:
    response = httpx.put(receiver.url, content=b"1\n" * 3000, headers=NDJSON, verify=receiver.verify)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"] == "nothing stored: 3000 problem(s) (the first 100 listed)"
    assert len(error["problems"]) == 100


# -- auth kinds, with the exporter as the sender ----------------------------------------------------


@pytest.fixture
async def exporter_engine(tmp_path: Path, receiver_for_engine: ReceiverProcess) -> AsyncIterator[Engine]:
    config = ServerConfig(data_dir=tmp_path / "data", ca_bundle=receiver_for_engine.ca_file)
    async with running_engine(config) as engine:
        yield engine


AUTH_KINDS: dict[str, tuple[list[str], dict[str, Any]]] = {
    "none": ([], {"active": False}),
    "basic": (
        ["--basic", "exporter:s3cret pass"],
        {
            "active": True,
            "authType": "basic",
            "basicAuth": {"username": "exporter", "password": "s3cret pass"},
        },
    ),
    "oauth2": (
        ["--oauth-client", "exporter:client-secret"],
        {
            "active": True,
            "authType": "oauth2",
            "oAuth2": {
                "accessTokenUrl": "TOKEN_URL",
                "clientId": "exporter",
                "clientSecret": "client-secret",
            },
        },
    ),
}


def test_oauth_clients_from_the_environment_are_one_a_line_and_keep_their_spaces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Split at any whitespace, "exporter:pa ss:word" made two clients ("exporter:pa", "ss:word")."""
    monkeypatch.setenv("SESSIONEXPORT_RECEIVER_OAUTH_CLIENT", "exporter:pa ss:word\nother:s2\n")
    r = ReceiverProcess(tmp_path / "r", http=True).start()
    try:

        def token(client: str, secret: str) -> httpx.Response:
            form = {"grant_type": "client_credentials"}
            return httpx.post(f"{r.base}/oauth2/token", data=form, auth=(client, secret))

        for client, secret in (("exporter", "pa ss:word"), ("other", "s2")):
            answer = token(client, secret)
            assert answer.status_code == 200 and answer.json()["access_token"], answer.text
        assert token("exporter", "pa").json()["error"] == "invalid_client"
    finally:
        r.stop()


@pytest.fixture(params=sorted(AUTH_KINDS))
def auth_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def receiver_for_engine(auth_kind: str, tmp_path: Path) -> Iterator[ReceiverProcess]:
    process = ReceiverProcess(tmp_path / "receiver", *AUTH_KINDS[auth_kind][0]).start()
    yield process
    process.stop()


async def test_the_exporter_delivers_into_the_receiver_with_each_auth_kind(
    exporter_engine: Engine, receiver_for_engine: ReceiverProcess, auth_kind: str
) -> None:
    r = receiver_for_engine
    auth = orjson.loads(
        orjson.dumps(AUTH_KINDS[auth_kind][1]).replace(b"TOKEN_URL", f"{r.base}/oauth2/token".encode())
    )
    lines = sessions(120, seed=7)
    await exporter_engine.create_export(export_value(r.url, authentication=auth))
    await exporter_engine.ingest(lines)
    credentials = await asyncio.to_thread(read_credentials, r, auth_kind)

    def all_there() -> bool:
        return counts(r, **credentials)["sessions"] == len(lines)

    await until(lambda: asyncio.to_thread(all_there), "every session received", within=30)
    await asyncio.to_thread(check_delivery, r, auth_kind, lines, credentials)


def read_credentials(r: ReceiverProcess, kind: str) -> dict[str, Any]:
    """What the test itself presents to the read API of a receiver that demands authentication."""
    if kind == "basic":
        return {"auth": ("exporter", "s3cret pass")}
    if kind == "oauth2":
        form = {"grant_type": "client_credentials", "client_id": "exporter", "client_secret": "client-secret"}
        token = httpx.post(f"{r.base}/oauth2/token", data=form, verify=r.verify).json()["access_token"]
        return {"headers": {"Authorization": f"Bearer {token}"}}
    return {}


def check_delivery(r: ReceiverProcess, kind: str, lines: list[bytes], credentials: dict[str, Any]) -> None:
    assert sorted(identities(r, **credentials)) == sorted(identity(line) for line in lines)
    if kind != "none":
        assert httpx.put(r.url, content=lines[0], headers=NDJSON, verify=r.verify).status_code == 401
        records = httpx.get(f"{r.base}/received/requests", verify=r.verify, **credentials).json()["requests"]
        assert {rec["principal"] for rec in records} == {"exporter"}


# -- Elasticsearch ------------------------------------------------------------------------------------


def es_client(r: ReceiverProcess) -> Elasticsearch:
    return Elasticsearch(r.base, ca_certs=str(r.ca_file), request_timeout=30)


def test_elasticsearch_helpers_bulk_against_the_bulk_endpoint(receiver: ReceiverProcess) -> None:
    lines = sessions(50, seed=3)
    actions = [
        {"_index": "sessions", "_id": "-".join(map(str, identity(line))), "_source": orjson.loads(line)}
        for line in lines
    ]
    client = es_client(receiver)
    ok, errors = helpers.bulk(client, actions, chunk_size=20)
    assert (ok, errors) == (50, [])
    ok, errors = helpers.bulk(client, actions[:10])  # a re-send overwrites, never duplicates
    assert (ok, errors) == (10, [])
    assert counts(receiver)["documents"] == 50
    stored = httpx.get(f"{receiver.base}/received/documents?kind=document&limit=1000", verify=receiver.verify)
    assert {d["key"] for d in stored.json()["documents"]} == {f"sessions/{a['_id']}" for a in actions}


def test_the_elasticsearch_client_with_compressed_requests(receiver: ReceiverProcess) -> None:
    """``http_compress=True``: the official client gzips every request body."""
    lines = sessions(30, seed=5)
    actions = [
        {"_index": "gz", "_id": f"doc-{n}", "_source": orjson.loads(line)} for n, line in enumerate(lines)
    ]
    client = Elasticsearch(
        receiver.base, ca_certs=str(receiver.ca_file), request_timeout=30, http_compress=True
    )
    ok, errors = helpers.bulk(client, actions, chunk_size=10)
    assert (ok, errors) == (30, [])
    stored = httpx.get(f"{receiver.base}/received/documents?kind=document&limit=1000", verify=receiver.verify)
    assert sorted(d["key"] for d in stored.json()["documents"]) == sorted(f"gz/doc-{n}" for n in range(30))


def bulk_body(*actions: tuple[str, str, dict[str, Any]]) -> bytes:
    lines = [
        orjson.dumps({action: {"_index": "s", "_id": doc_id}}) + b"\n" + orjson.dumps(source) + b"\n"
        for action, doc_id, source in actions
    ]
    return b"".join(lines)


@pytest.mark.parametrize("storage", ["sqlite", "files", "postgresql"])
def test_bulk_operations_on_one_id_apply_in_order_as_one_request(
    tmp_path: Path, storage: str, request: pytest.FixtureRequest
) -> None:
    with contextlib.ExitStack() as stack:
        options = []
        if storage == "files":
            options = ["--storage", "files"]
        elif storage == "postgresql":
            url = stack.enter_context(fresh_schema(request.getfixturevalue("postgres_url")))
            options = ["--storage", url]
        r = ReceiverProcess(tmp_path / "receiver", *options).start()
        stack.callback(r.stop)

        def bulk(*actions: tuple[str, str, dict[str, Any]]) -> list[dict[str, Any]]:
            response = httpx.post(
                f"{r.base}/_bulk", content=bulk_body(*actions), headers=NDJSON, verify=r.verify
            )
            assert response.status_code == 200, response.text
            items: list[dict[str, Any]] = response.json()["items"]
            return [item[action] for item, (action, _, _) in zip(items, actions, strict=True)]

        def requests() -> list[tuple[str, int, int, int]]:
            found = httpx.get(f"{r.base}/received/requests", verify=r.verify).json()["requests"]
            return [(q["path"], q["documents"], q["stored"], q["duplicates"]) for q in found]

        def stored(doc_id: str) -> Any:
            found = httpx.get(f"{r.base}/received/documents?kind=document&limit=1000", verify=r.verify)
            [doc] = [d for d in found.json()["documents"] if d["key"] == f"s/{doc_id}"]
            return doc["document"]

        # create, then index: Elasticsearch creates, then replaces (no version conflict)
        first, second = bulk(("create", "x", {"n": 1}), ("index", "x", {"n": 2}))
        assert (first["status"], first["result"], first["_version"]) == (201, "created", 1)
        assert (second["status"], second["result"], second["_version"]) == (200, "updated", 2)
        assert "error" not in first and "error" not in second
        assert stored("x") == {"n": 2}
        assert requests() == [("/_bulk", 2, 1, 1)]  # one HTTP request, one request record

        # index, then create: created, then a version conflict for the create
        first, second = bulk(("index", "y", {"n": 1}), ("create", "y", {"n": 2}))
        assert (first["status"], first["result"]) == (201, "created")
        assert second["status"] == 409
        # a shard-level failure: Elasticsearch names the index, shard and index UUID
        assert second["error"] == {
            "type": "version_conflict_engine_exception",
            "reason": "[y]: version conflict, document already exists",
            "index": "s",
            "shard": "0",
            "index_uuid": second["error"]["index_uuid"],
        }
        assert re.fullmatch(r"[\w-]{22}", second["error"]["index_uuid"])
        assert stored("y") == {"n": 1}

        # index twice: created, then updated
        first, second = bulk(("index", "z", {"n": 1}), ("index", "z", {"n": 2}))
        assert [(i["status"], i["result"]) for i in (first, second)] == [(201, "created"), (200, "updated")]
        assert stored("z") == {"n": 2}

        assert requests() == [("/_bulk", 2, 1, 1)] * 3
        assert counts(r)["documents"] == 3 and counts(r)["requests"] == 3

        # a userSessionId holding NUL: the document is stored all the same (PostgreSQL had refused
        # the whole request); only its lookup key is left out
        [nul] = bulk(("index", "n", {"userSessionId": "a\u0000b"}))
        assert (nul["status"], nul["result"]) == (201, "created")
        assert stored("n") == {"userSessionId": "a\u0000b"}


def test_a_bulk_whose_items_all_fail_is_still_one_request(tmp_path: Path) -> None:
    r = ReceiverProcess(tmp_path / "receiver", "--bulk-fail", "429:.").start()
    try:
        body = bulk_body(("create", "a", {"n": 1}), ("index", "b", {"n": 2}))
        response = httpx.post(f"{r.base}/_bulk", content=body, headers=NDJSON, verify=r.verify)
        assert response.status_code == 200 and response.json()["errors"] is True
        assert [next(iter(i.values()))["status"] for i in response.json()["items"]] == [429, 429]
        records = httpx.get(f"{r.base}/received/requests", verify=r.verify).json()["requests"]
        assert [(q["status"], q["documents"], q["stored"]) for q in records] == [(200, 0, 0)]
        assert counts(r)["documents"] == 0
    finally:
        r.stop()


def test_planted_item_failures_reach_the_client(tmp_path: Path) -> None:
    r = ReceiverProcess(
        tmp_path / "receiver", "--bulk-fail", "400:-bad$", "--bulk-fail", "429:-busy$:1"
    ).start()
    try:
        actions = [{"_index": "s", "_id": f"doc-{n}", "_source": {"n": n}} for n in range(4)]
        actions += [
            {"_index": "s", "_id": "doc-bad", "_source": {}},
            {"_index": "s", "_id": "doc-busy", "_source": {}},
        ]
        ok, errors = helpers.bulk(es_client(r), actions, raise_on_error=False)
        assert ok == 4
        failed = {e["index"]["_id"]: (e["index"]["status"], e["index"]["error"]["type"]) for e in errors}  # type: ignore[union-attr]
        assert failed == {
            "doc-bad": (400, "document_parsing_exception"),
            "doc-busy": (429, "es_rejected_execution_exception"),
        }
        ok, errors = helpers.bulk(es_client(r), [actions[-1]], raise_on_error=False)
        assert (ok, errors) == (1, [])  # the 429 was transient: the retry is stored
        assert counts(r)["documents"] == 5
    finally:
        r.stop()


def test_bulk_lines_ending_in_crlf_are_stored_as_one_line_each_in_files(tmp_path: Path) -> None:
    """A ``\\r`` before a ``\\n`` ends a line, as in Elasticsearch; one inside a document is JSON
    whitespace. The files store keeps one document per line: both are stored, not refused as a
    storage failure (503)."""
    r = ReceiverProcess(tmp_path / "receiver", "--storage", "files").start()
    try:
        body = b'{"index":{"_index":"s","_id":"1"}}\r\n{"a": 1}\r\n{"index":{"_index":"s","_id":"2"}}\n{"a":\r2}\n'
        accept = {"Accept": "application/vnd.elasticsearch+json; compatible-with=8, text/plain"}
        response = httpx.post(f"{r.base}/_bulk", content=body, headers=NDJSON | accept, verify=r.verify)
        assert response.status_code == 200 and response.json()["errors"] is False, response.text
        assert response.headers["Content-Type"] == "application/vnd.elasticsearch+json; compatible-with=8"
        docs = httpx.get(f"{r.base}/received/documents", verify=r.verify).json()["documents"]
        assert sorted((d["key"], d["document"]) for d in docs) == [("s/1", {"a": 1}), ("s/2", {"a": 2})]
    finally:
        r.stop()


def test_another_method_on_bulk_is_refused_in_elasticsearch_s_words(receiver: ReceiverProcess) -> None:
    response = httpx.get(f"{receiver.base}/idx/_bulk", verify=receiver.verify)
    assert response.status_code == 405
    assert response.headers["X-Elastic-Product"] == "Elasticsearch"
    assert response.headers["Allow"] == "POST, PUT"
    assert response.json() == {
        "error": "Incorrect HTTP method for uri [/idx/_bulk] and method [GET], allowed: [POST, PUT]",
        "status": 405,
    }


def test_bulk_bodies_of_a_type_elasticsearch_does_not_take_get_406(receiver: ReceiverProcess) -> None:
    body = b'{"index":{"_index":"s","_id":"1"}}\n{"a":1}\n'
    for content_type in ("text/plain", ""):
        response = httpx.post(
            f"{receiver.base}/_bulk",
            content=body,
            headers={"Content-Type": content_type},
            verify=receiver.verify,
        )
        assert response.status_code == 406
        assert response.json() == {
            "error": f"Content-Type header [{content_type}] is not supported",
            "status": 406,
        }
    assert counts(receiver)["documents"] == 0


def test_an_action_line_that_is_not_utf8_is_refused_as_elasticsearch_does(receiver: ReceiverProcess) -> None:
    """A 500 would have the sender retry and dead-letter what can never be read."""
    good = b'{"index":{"_index":"s","_id":"1"}}\n{"a":1}\n'
    for bad in (b'{"index":{"_index":"s\xff"}}\n', b'{"index\xff":{}}\n', b'{"index":{"_id":-\xff}}\n'):
        response = httpx.post(
            f"{receiver.base}/_bulk",
            content=good + bad + b'{"a":2}\n',
            headers=NDJSON,
            verify=receiver.verify,
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["type"] == "x_content_parse_exception"
        assert response.json()["error"]["reason"].startswith("[3:")
    records = httpx.get(f"{receiver.base}/received/requests", verify=receiver.verify).json()["requests"]
    assert [q["status"] for q in records] == [400, 400, 400]
    assert counts(receiver)["documents"] == 0


def test_a_session_id_too_long_to_index_is_refused_with_its_line(receiver: ReceiverProcess) -> None:
    session = orjson.loads(sample("doc-mobile-session.json"))
    session["userSessionId"] = "x" * 201
    body = compact(sample("doc-web-synthetic-session.json")) + b"\n" + orjson.dumps(session) + b"\n"
    response = httpx.put(
        f"{receiver.base}/export/events", content=body, headers=NDJSON, verify=receiver.verify
    )
    assert response.status_code == 400
    assert response.json()["error"]["problems"] == [
        {"location": "line 2", "path": "userSessionId", "message": "at most 200 characters (it has 201)"}
    ]
    assert counts(receiver)["sessions"] == 0


def test_type_in_bulk_actions_follows_the_chosen_elasticsearch_version(tmp_path: Path) -> None:
    body = b'{"index":{"_index":"s","_type":"_doc","_id":"1"}}\n{"a":1}\n'
    headers = {"Content-Type": "application/x-ndjson"}
    for version, status in (("8", 400), ("7", 200)):
        r = ReceiverProcess(tmp_path / f"receiver-{version}", "--es-version", version).start()
        try:
            response = httpx.post(f"{r.base}/_bulk", content=body, headers=headers, verify=r.verify)
            assert response.status_code == status
            assert response.headers["X-Elastic-Product"] == "Elasticsearch"
            if version == "7":
                assert response.json()["items"][0]["index"]["_type"] == "_doc"
                # named types are deprecated on 7: its clients raise the header as a warning
                with pytest.warns(ElasticsearchWarning, match=re.escape(TYPES_DEPRECATED)):
                    es_client(r).bulk(operations=[{"index": {"_index": "s", "_type": "t", "_id": "2"}}, {}])
            else:
                assert "unknown parameter [_type]" in response.json()["error"]["reason"]
            typed = httpx.post(
                f"{r.base}/s/_doc/_bulk", content=b'{"index":{}}\n{"b":2}\n', headers=headers, verify=r.verify
            )
            assert typed.status_code == (200 if version == "7" else 400)  # ES 8 has no typed endpoints
            if version == "7":
                assert typed.json()["items"][0]["index"]["_type"] == "_doc"
                assert TYPES_DEPRECATED in typed.headers["Warning"]
            else:
                assert typed.json()["error"] == "no handler found for uri [/s/_doc/_bulk] and method [POST]"
            # A date-math index as Elasticsearch writes it in a URL: its "/" encoded, one segment.
            dated = httpx.post(
                f"{r.base}/%3Csess-%7Bnow%2Fd%7D%3E/_bulk",
                content=b'{"index":{}}\n{"c":3}\n',
                headers=headers,
                verify=r.verify,
            )
            assert dated.status_code == 200, dated.text
            [item] = dated.json()["items"]
            assert item["index"]["status"] == 201 and item["index"]["_index"] == "<sess-{now/d}>"
            assert "_type" not in item["index"] if version == "8" else item["index"]["_type"] == "_doc"
            assert "Warning" not in dated.headers  # no type named, nothing deprecated
        finally:
            r.stop()


def test_numeric_ids_op_type_and_sequence_numbers_as_elasticsearch_has_them(
    receiver: ReceiverProcess,
) -> None:
    body = (
        b'{"index":{"_index":"s","_id":12345678901234567890123}}\n{"x":1}\n'
        b'{"index":{"_index":"s","_id":12345678901234567890124}}\n{"x":2}\n'
        b'{"index":{"_index":"s","_id":12345678901234567890123,"op_type":"create"}}\n{"x":3}\n'
    )
    response = httpx.post(f"{receiver.base}/_bulk", content=body, headers=NDJSON, verify=receiver.verify)
    items = [next(iter(item.values())) for item in response.json()["items"]]
    assert [item["status"] for item in items] == [201, 201, 409]  # two ids; the create conflicts
    assert items[0]["_seq_no"] != items[1]["_seq_no"]
    assert counts(receiver)["documents"] == 2


# -- crash safety ---------------------------------------------------------------------------------------


def test_kill_9_during_requests_loses_nothing_acknowledged(tmp_path: Path) -> None:
    r = ReceiverProcess(tmp_path / "receiver").start()
    acknowledged: list[bytes] = []
    batches = [sessions(40, seed=seed) for seed in range(1, 400)]
    stop = threading.Event()

    def send() -> None:
        with httpx.Client(verify=r.verify, timeout=10) as client:
            for batch in batches:
                if stop.is_set():
                    return
                try:
                    response = client.put(r.url, content=b"\n".join(batch), headers=NDJSON)
                except httpx.HTTPError:
                    return  # the receiver died under us
                if response.status_code == 200:
                    acknowledged.extend(batch)

    senders = [threading.Thread(target=send) for _ in range(3)]
    for thread in senders:
        thread.start()
    deadline = random.uniform(0.8, 2.0)
    threading.Event().wait(deadline)
    r.kill()
    stop.set()
    for thread in senders:
        thread.join(30)
    assert acknowledged, "nothing was acknowledged before the kill; the test proves nothing"
    restarted = ReceiverProcess(tmp_path / "receiver")
    restarted.port = r.port
    restarted.start()
    try:
        stored = set(identities_all(restarted))
        missing = {identity(line) for line in acknowledged} - stored
        assert not missing, f"{len(missing)} acknowledged session(s) lost"
    finally:
        restarted.stop()


def identities_all(r: ReceiverProcess) -> list[tuple[str, str, int]]:
    runner = CliRunner()
    result = runner.invoke(cli_app, ["received", "last", "-n", "1000", "--data-dir", str(r.data_dir)])
    assert result.exit_code == 0, result.output
    found = [identity(line.encode()) for line in result.stdout.splitlines() if line]
    total = counts(r)["sessions"]
    if total > len(found):  # more than one page: ask per request instead
        found = []
        for record in httpx.get(f"{r.base}/received/requests?limit=1000", verify=r.verify).json()["requests"]:
            docs = httpx.get(
                f"{r.base}/received/documents",
                params={"requestId": record["id"], "limit": 1000},
                verify=r.verify,
            ).json()["documents"]
            found += [identity(orjson.dumps(d["document"])) for d in docs]
    return found


# -- the conformance checker against the reference endpoint ------------------------------------------


@pytest.mark.parametrize("auth", ["basic", "oauth2"])
def test_check_endpoint_finds_nothing_wrong_with_the_receiver(tmp_path: Path, auth: str) -> None:
    r = ReceiverProcess(tmp_path / "receiver", *AUTH_KINDS[auth][0]).start()
    try:
        arguments = [r.url, "--ca-bundle", str(r.ca_file), "--count-url", f"{r.base}/received/counts"]
        if auth == "basic":
            arguments += ["--basic", "exporter:s3cret pass"]
        else:
            arguments += ["--token-url", f"{r.base}/oauth2/token", "--client-id", "exporter"]
            arguments += ["--client-secret", "client-secret"]
        result = CliRunner().invoke(cli_app, ["check-endpoint", *arguments], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        assert "FAIL" not in result.output and "WARN" not in result.output, result.output
        assert "re-sent bulk" in result.output and "auth: wrong credentials" in result.output
    finally:
        r.stop()


def test_check_endpoint_checks_the_bulk_endpoint_item_by_item(tmp_path: Path) -> None:
    """With --index, check-endpoint sends Elasticsearch bulks: the receiver's _bulk passes, and the
    same with every item made to fail answers 200 with errors, which fails every bulk check."""
    for faults, expected_exit in (([], 0), (["--bulk-fail", "400:."], 1)):
        r = ReceiverProcess(
            tmp_path / f"receiver-{expected_exit}", "--basic", "exporter:s3cret", *faults
        ).start()
        try:
            arguments = [f"{r.base}/_bulk", "--ca-bundle", str(r.ca_file), "--index", "sessions"]
            arguments += ["--basic", "exporter:s3cret", "--count-url", f"{r.base}/received/counts"]
            arguments += ["--count-key", "documents"]
            result = CliRunner().invoke(cli_app, ["check-endpoint", *arguments], env={"COLUMNS": "250"})
            assert result.exit_code == expected_exit, result.output
            if expected_exit == 0:
                assert "FAIL" not in result.output and "WARN" not in result.output, result.output
                assert counts(r, auth=("exporter", "s3cret"))["documents"] > 2  # as documents of the index
            else:
                failed = [line for line in result.output.splitlines() if "FAIL" in line]
                assert len(failed) == 6, result.output  # 4 samples, the large and the re-sent bulk
                assert all("item(s) failed, first: 400" in line for line in failed), result.output
                assert "planted failure for [" in result.output  # what the endpoint said, brackets kept
        finally:
            r.stop()


# -- PostgreSQL storage, several processes -----------------------------------------------------------


def test_several_receiver_processes_share_postgresql(tmp_path: Path, postgres_url: str) -> None:
    with fresh_schema(postgres_url) as url:
        r = ReceiverProcess(tmp_path / "receiver", "--storage", url, "--workers", "2").start()
        try:
            batches = [sessions(30, seed=seed) for seed in range(1, 9)]

            def send(batch: list[bytes]) -> int:
                with httpx.Client(verify=r.verify) as client:
                    first = client.put(r.url, content=b"\n".join(batch), headers=NDJSON)
                    again = client.put(r.url, content=b"\n".join(batch), headers=NDJSON)
                    assert first.status_code == again.status_code == 200
                    return int(first.json()["stored"]) + int(again.json()["stored"])

            threads_stored: list[int] = []
            workers = [threading.Thread(target=lambda b=b: threads_stored.append(send(b))) for b in batches]
            for thread in workers:
                thread.start()
            for thread in workers:
                thread.join(60)
            assert sum(threads_stored) == 240  # every session once, every re-send a duplicate
            assert counts(r)["sessions"] == 240
        finally:
            r.stop()


def test_files_storage_refuses_several_processes(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli_app, ["receive", "--data-dir", str(tmp_path), "--storage", "files", "--workers", "2", "--http"]
    )
    assert result.exit_code == 2
    assert "one process" in result.output


def test_bearer_jwts_of_an_external_issuer(tmp_path: Path) -> None:
    key = RSAKey.generate_key(2048, parameters={"kid": "issuer-1"})
    jwks = tmp_path / "jwks.json"
    jwks.write_text(orjson.dumps(KeySet([key]).as_dict(private=False)).decode())
    options = ["--jwks", str(jwks), "--jwt-issuer", "https://idp.test", "--jwt-audience", "sessions"]
    r = ReceiverProcess(tmp_path / "receiver", *options).start()
    try:
        now = int(time.time())

        def bearer(**claims: object) -> dict[str, str]:
            base = {"sub": "exporter-svc", "iss": "https://idp.test", "aud": "sessions", "exp": now + 300}
            token = jwt.encode({"alg": "RS256", "kid": "issuer-1"}, {**base, **claims}, key)
            return {**NDJSON, "Authorization": f"Bearer {token}"}

        line = sessions(1, seed=5)[0]
        assert httpx.put(r.url, content=line, headers=bearer(), verify=r.verify).status_code == 200
        for wrong in (bearer(aud="elsewhere"), bearer(exp=now - 10), bearer(iss="https://evil.test"), NDJSON):
            response = httpx.put(r.url, content=line, headers=wrong, verify=r.verify)
            assert response.status_code == 401 and "Bearer" in response.headers["WWW-Authenticate"]
        records = httpx.get(f"{r.base}/received/requests", headers=bearer(), verify=r.verify).json()[
            "requests"
        ]
        assert [rec["principal"] for rec in records] == ["exporter-svc"]
    finally:
        r.stop()


def test_undecodable_credentials_get_401_and_unreadable_keys_503(tmp_path: Path) -> None:
    """Neither is a server error: a Basic header that is not ASCII is no credentials (401); when
    the issuer's keys cannot be fetched, a Bearer token can be judged neither way (503, retry)."""
    options = ["--basic", "user:pw", "--oauth-client", "c:s", "--jwks", "https://127.0.0.1:1/jwks.json"]
    r = ReceiverProcess(tmp_path / "receiver", *options).start()
    try:
        line = sessions(1, seed=5)[0]
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        for method, path, body, headers in [
            ("POST", "/export/events", line, NDJSON),
            ("POST", "/_bulk", line, NDJSON),
            ("GET", "/received/counts", b"", {}),
            ("POST", "/oauth2/token", b"grant_type=client_credentials", form),
        ]:
            raw = {k.encode(): v.encode() for k, v in headers.items()}
            raw[b"Authorization"] = b"Basic \xe9\xe9\xe9\xe9"
            response = httpx.request(method, f"{r.base}{path}", content=body, headers=raw, verify=r.verify)
            assert response.status_code == 401, (path, response.text)
        bearer = {**NDJSON, "Authorization": "Bearer a.b.c"}
        response = httpx.put(r.url, content=line, headers=bearer, verify=r.verify)
        assert response.status_code == 503 and response.headers["Retry-After"]
        assert "the JWKS could not be loaded" in response.json()["error"]["message"]
        assert counts(r, headers={"Authorization": "Basic dXNlcjpwdw=="})["sessions"] == 0
    finally:
        r.stop()


def test_jwks_over_plain_http_is_refused_at_start(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli_app, ["receive", "--data-dir", str(tmp_path), "--http", "--jwks", "http://127.0.0.1:9/jwks.json"]
    )
    assert result.exit_code == 2
    assert "https:// only" in result.output


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--events-path", "export"], "--events-path 'export': must start with / and name a path"),
        (["--events-path", "/received/counts"], "is one of the receiver's own routes"),
        (["--jwks", "/nowhere/jwks.json"], "--jwks: no such file /nowhere/jwks.json"),
        (["--jwks", "{not_jwks}"], "not a JWKS (KeyError('keys'))"),
        (["--storage", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1"], "cannot reach PostgreSQL"),
        # no keys, no JWT checked: it would have been open to all
        (["--jwt-issuer", "https://idp.test"], "give --jwks too"),
        (["--jwt-audience", "sessions"], "give --jwks too"),
        (["--oauth-client", "c:one", "--oauth-client", "c:two"], "client 'c' is given twice"),
    ],
)
def test_options_that_cannot_work_end_receive_at_start_in_one_line(
    tmp_path: Path, options: list[str], said: str
) -> None:
    """Not a traceback from the server's start, nor a receiver that answers 503 to every token."""
    not_jwks = tmp_path / "one.json"
    not_jwks.write_text('{"kty": "RSA"}')
    options = [o.format(not_jwks=not_jwks) for o in options]
    result = CliRunner().invoke(
        cli_app, ["receive", "--data-dir", str(tmp_path), "--http", "--port", "0", *options]
    )
    assert result.exit_code == 2, result.output
    assert said in result.output and isinstance(result.exception, SystemExit)  # not an uncaught error


def test_read_api_refuses_ids_and_urls_no_document_can_have(receiver: ReceiverProcess) -> None:
    for query in ({"requestId": str(10**23)}, {"requestId": "0"}):
        response = httpx.get(f"{receiver.base}/received/documents", params=query, verify=receiver.verify)
        assert response.status_code == 400 and "requestId" in response.json()["error"]["message"]
    response = httpx.get(f"{receiver.base}/received/documents?userSessionId=%00", verify=receiver.verify)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "NUL (%00) is not allowed in a URL"


async def test_a_storage_failure_is_503_retry_later_with_nothing_stored(tmp_path: Path) -> None:
    """A sender re-sends on 503: the request is not lost, and no 500 hides the cause."""
    config = ReceiverConfig(store=create_received_store(tmp_path))
    app = create_receiver_app(config)
    async with app.router.lifespan_context(app):
        await config.store.close()  # the store fails from now on: every call raises StoreError
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://receiver.test") as client:
            response = await client.put("/export/events", content=sessions(1)[0], headers=NDJSON)
            read = await client.get("/received/counts")
        await config.store.open()
        assert (await config.store.counts()).sessions == 0
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert response.json()["error"]["message"] == "storage is unavailable; nothing was stored. Retry later."
    # a read stores nothing anyway: it is not told so
    assert (
        read.status_code == 503 and read.json()["error"]["message"] == "storage is unavailable. Retry later."
    )


def test_received_last_refuses_a_kind_it_does_not_know(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli_app, ["received", "last", "--kind", "sesion", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "--kind takes session, legacy or document, not 'sesion'" in result.output


@pytest.mark.parametrize("storage", ["sqlite", "files"])
def test_metrics_count_what_is_stored_with_the_receivers_own_authentication(
    tmp_path: Path, storage: str
) -> None:
    options = ["--basic", "user:pw"] + (["--storage", "files"] if storage == "files" else [])
    r = ReceiverProcess(tmp_path / "receiver", *options).start()
    basic = {"Authorization": "Basic dXNlcjpwdw=="}
    try:
        for body in (b"\n".join(sessions(4, seed=9)), DOC_CHECK.encode(), b"{not json"):
            httpx.put(r.url, content=body, headers={**NDJSON, **basic}, verify=r.verify)
        httpx.put(r.url, content=sessions(1)[0], headers=NDJSON, verify=r.verify)  # no credentials: 401
        assert httpx.get(f"{r.base}/metrics", verify=r.verify).status_code == 401
        scraped = httpx.get(f"{r.base}/metrics", headers=basic, verify=r.verify)
        assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
        samples = {
            (sample.name, tuple(sample.labels.values())): sample.value
            for family in text_string_to_metric_families(scraped.text)
            for sample in family.samples
        }
        assert samples[("sessionexport_received_documents_total", ("session",))] == 4
        assert samples[("sessionexport_received_documents_total", ("legacy",))] == 1
        assert samples[("sessionexport_received_documents_total", ("document",))] == 0
        assert samples[("sessionexport_received_requests_total", ("stored",))] == 2
        assert (
            samples[("sessionexport_received_requests_total", ("refused",))]
            == counts(r, headers=basic)["refusedRequests"]
            >= 1
        )
    finally:
        r.stop()


async def test_the_token_route_answers_a_form_with_an_encoding_it_does_not_take_without_a_server_error(
    tmp_path: Path,
) -> None:
    """An empty form naming an encoding passes the door (there is no body to refuse) and reaches
    the form reader: OAuth's invalid_request, not a 500."""
    app = create_receiver_app(ReceiverOptions(data_dir=str(tmp_path), oauth_clients=("c:s",)).build())
    transport = httpx.ASGITransport(app=app)
    form = {"Content-Type": "application/x-www-form-urlencoded", "Content-Encoding": "br"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://r") as r,
    ):
        answer = await r.post("/oauth2/token", content=b"", headers=form)
        assert answer.status_code == 415, answer.text
        assert answer.json()["error"] == "invalid_request"


def test_the_certificate_to_trust_is_named_ready_to_paste(tmp_path: Path) -> None:
    """A data directory with a space: the path said for --ca-bundle is quoted for a shell."""
    r = ReceiverProcess(tmp_path / "r ü [1]").start()
    try:
        assert f"--ca-bundle '{r.ca_file}'" in r.output()
    finally:
        r.stop()
