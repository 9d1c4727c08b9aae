"""Test export, sample data and mapping downloads through the real HTTP API, against real HTTPS
receivers on loopback (the scripted test receiver, and the receiver toolkit's _bulk)."""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from sessionexport.cli import app as cli_app
from sessionexport.settings.objects import NewObject, SettingsService
from sessionexport.settings.schemas import EXPORT_SCHEMA
from sessionexport.settings.secrets import KEY_FILE, SecretBox, new_key
from sessionexport.store import create_store
from tests.conftest import make_token
from tests.integration.test_export_elasticsearch import direct, engine_trusting, identity_id
from tests.integration.test_export_engine import engine, receiver, tls
from tests.support.engine import Engine, export_value, sessions
from tests.support.receiver import RESET, STALL, Receiver
from tests.support.receiver_process import ReceiverProcess, free_port

pytestmark = pytest.mark.store  # on PostgreSQL too (tests/support/backend.py)

__all__ = ["engine", "receiver", "tls"]  # fixtures used here

TEST = "/api/v2/exports/test"


async def run_test(engine: Engine, value: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = await engine.client.post(TEST, json={"value": value}, headers=engine.headers)
    return response.status_code, response.json()


async def test_a_test_export_sends_up_to_50_recent_sessions_as_the_exporter_would(
    engine: Engine, receiver: Receiver
) -> None:
    await engine.ingest(sessions(70, seed=1))
    status, result = await run_test(engine, export_value(receiver.url, endpointDefinition={"usePost": True}))
    assert status == 200, result
    assert result["success"] is True and result["statusCode"] == 200 and result["error"] is None
    assert result["sessionsSent"] == 50 and result["itemErrors"] == []
    assert isinstance(result["responseTimeMs"], int)
    [request] = receiver.requests
    assert request.method == "POST" and len(request.lines) == 50
    assert request.headers["content-type"] == "application/json"


async def test_a_test_export_sends_what_the_first_bulk_would_hold(engine: Engine, receiver: Receiver) -> None:
    """The flush rules hold for a test export too: never a body over flushMaxBytes."""
    lines = sessions(10, seed=2)
    await engine.ingest(lines)
    fitting = sum(len(line) + 1 for line in lines[:3])
    value = export_value(receiver.url, {"flushMaxBytes": fitting})
    status, result = await run_test(engine, value)
    assert (status, result["sessionsSent"]) == (200, 3), result
    [request] = receiver.requests
    assert request.lines == lines[:3]


async def test_http_urls_are_refused_with_the_violation(engine: Engine) -> None:
    await engine.ingest(sessions(2))
    status, body = await run_test(engine, export_value("http://127.0.0.1:9/export"))
    assert status == 400
    [violation] = body["error"]["constraintViolations"]
    assert violation["path"] == "value.endpointDefinition.endpointUrl" and "https" in violation["message"]


async def test_no_sessions_in_the_window_is_refused(engine: Engine, receiver: Receiver) -> None:
    status, body = await run_test(engine, export_value(receiver.url))
    assert status == 400
    assert "No sessions from the last 7 days" in body["error"]["message"]
    assert receiver.requests == []


async def test_secrets_must_be_entered_again(engine: Engine, receiver: Receiver) -> None:
    await engine.ingest(sessions(2))
    auth = {"active": True, "authType": "basic", "basicAuth": {"username": "u", "password": "*****"}}
    status, body = await run_test(engine, export_value(receiver.url, authentication=auth))
    assert status == 400
    [violation] = body["error"]["constraintViolations"]
    assert violation["path"] == "value.authentication.basicAuth.password"
    assert "enter the secret again" in violation["message"]


async def test_wrong_credentials_are_reported_precisely(engine: Engine, receiver: Receiver) -> None:
    receiver.behaviour.basic = ("exporter", "right")
    await engine.ingest(sessions(3))
    auth = {"active": True, "authType": "basic", "basicAuth": {"username": "exporter", "password": "wrong"}}
    status, result = await run_test(engine, export_value(receiver.url, authentication=auth))
    assert status == 200
    assert (result["success"], result["statusCode"]) == (False, 401)
    assert result["error"] == "the endpoint refused the credentials (HTTP 401)"


async def test_token_endpoint_failures_are_reported_as_such(engine: Engine, receiver: Receiver) -> None:
    receiver.behaviour.oauth_clients = {"exporter": "right"}
    await engine.ingest(sessions(3))
    auth = {
        "active": True,
        "authType": "oauth2",
        "oAuth2": {"accessTokenUrl": receiver.token_url, "clientId": "exporter", "clientSecret": "wrong"},
    }
    status, result = await run_test(engine, export_value(receiver.url, authentication=auth))
    assert status == 200 and result["success"] is False and result["statusCode"] is None
    assert result["error"].startswith("the access token could not be obtained: token endpoint answered")
    assert "401" in result["error"] and "OAuth token" not in result["error"]  # said once, not twice
    assert [r.path for r in receiver.requests] == []  # nothing sent without a token
    assert result["sessionsSent"] == 0


async def test_timeouts_are_reported_with_the_configured_timeout(engine: Engine, receiver: Receiver) -> None:
    receiver.behaviour.script.append(STALL)
    receiver.behaviour.stall_seconds = 3
    await engine.ingest(sessions(3))
    status, result = await run_test(engine, export_value(receiver.url, {"timeoutSeconds": 0.5}))
    assert status == 200
    assert (result["success"], result["statusCode"], result["sessionsSent"]) == (False, None, 3)  # sent
    assert result["error"] == "no answer within 0.5 s"


async def test_a_body_the_endpoint_read_before_it_hung_up_counts_as_sent(
    engine: Engine, receiver: Receiver
) -> None:
    receiver.behaviour.script.append(RESET)
    await engine.ingest(sessions(3))
    status, result = await run_test(engine, export_value(receiver.url))
    assert status == 200 and result["success"] is False and result["statusCode"] is None
    assert len(receiver.requests[0].lines) == 3 and result["sessionsSent"] == 3, result
    assert result["error"].startswith("the endpoint broke the HTTP exchange")


async def test_a_body_that_found_no_endpoint_counts_as_not_sent(engine: Engine) -> None:
    await engine.ingest(sessions(3))
    status, result = await run_test(engine, export_value(f"https://127.0.0.1:{free_port()}/export"))
    assert status == 200 and result["success"] is False and result["sessionsSent"] == 0, result
    assert result["error"].startswith("connection failed")


async def test_elasticsearch_item_errors_are_listed_per_session(tmp_path: Path) -> None:
    lines = sessions(5, seed=21)
    bad = orjson.loads(lines[3])
    r = ReceiverProcess(tmp_path / "es", "--bulk-fail", f"400:^{identity_id(lines[3])}$").start()
    try:
        async with engine_trusting(tmp_path, r.ca_file) as es_engine:
            await es_engine.ingest(lines)
            status, result = await run_test(es_engine, direct(r))
            assert status == 200 and result["success"] is False and result["statusCode"] == 200
            assert result["sessionsSent"] == 5
            assert result["error"] == "1 of 5 session(s) rejected by Elasticsearch"
            [item] = result["itemErrors"]
            assert item["userSessionId"] == bad["userSessionId"]
            assert (item["status"], item["type"]) == (400, "document_parsing_exception")
            assert "planted failure" in item["reason"]
    finally:
        r.stop()


# -- sample data ----------------------------------------------------------------------------------


async def saved_export(engine: Engine, value: dict[str, Any]) -> str:
    body = [{"schemaId": EXPORT_SCHEMA, "scope": "environment", "value": value}]
    response = await engine.client.post("/api/v2/settings/objects", json=body, headers=engine.headers)
    assert response.status_code == 200, response.text
    object_id: str = response.json()[0]["objectId"]
    return object_id


async def test_sample_of_a_saved_export_is_what_it_would_send(engine: Engine) -> None:
    lines = sessions(60, seed=3)
    await engine.ingest(lines)
    value = export_value(
        "https://es.example.test:9200/_bulk",
        endpointDefinition={
            "contentType": "application/x-ndjson",
            "usePost": True,
            "enableUserSessionExport": False,
        },
        sendDirect={"active": True, "indexName": "rum", "docType": "_doc"},
    )
    object_id = await saved_export(engine, value)
    response = await engine.client.get(f"/api/v2/exports/{object_id}/sample", headers=engine.headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.headers["content-disposition"] == f'attachment; filename="sample-{object_id}.ndjson"'
    body = response.content
    assert body.endswith(b"\n")
    pairs = body.rstrip(b"\n").split(b"\n")
    assert len(pairs) == 100  # 50 sessions, each after its action line
    newest = lines[-50:]
    for n, line in enumerate(newest):
        action = orjson.loads(pairs[2 * n])
        assert action == {"index": {"_index": "rum", "_type": "_doc", "_id": identity_id(line)}}
        assert pairs[2 * n + 1] == line  # the stored bytes, not re-serialised


async def test_sample_of_an_unsaved_value_and_when_there_is_nothing(
    engine: Engine, receiver: Receiver
) -> None:
    value = export_value(receiver.url)
    empty = await engine.client.post("/api/v2/exports/sample", json={"value": value}, headers=engine.headers)
    assert empty.status_code == 404 and "No sessions" in empty.json()["error"]["message"]
    lines = sessions(4, seed=5)
    await engine.ingest(lines)
    response = await engine.client.post(
        "/api/v2/exports/sample", json={"value": value}, headers=engine.headers
    )
    assert response.status_code == 200
    assert response.content == b"".join(line + b"\n" for line in lines)
    assert receiver.requests == []  # nothing was sent anywhere


async def test_sample_needs_no_secrets(engine: Engine, receiver: Receiver) -> None:
    await engine.ingest(sessions(1))
    auth = {"active": True, "authType": "basic", "basicAuth": {"username": "u", "password": "*****"}}
    value = export_value(receiver.url, authentication=auth)
    response = await engine.client.post(
        "/api/v2/exports/sample", json={"value": value}, headers=engine.headers
    )
    assert response.status_code == 200


# -- mapping --------------------------------------------------------------------------------------


async def test_mapping_reflects_the_document_type(engine: Engine) -> None:
    plain = export_value(
        "https://es.example.test/_bulk",
        endpointDefinition={
            "contentType": "application/x-ndjson",
            "usePost": True,
            "enableUserSessionExport": False,
        },
        sendDirect={"active": True, "indexName": "rum"},
    )
    typed = {**plain, "sendDirect": {"active": True, "indexName": "rum", "docType": "_doc"}}
    object_id = await saved_export(engine, plain)
    untyped = (await engine.client.get(f"/api/v2/exports/{object_id}/mapping", headers=engine.headers)).json()
    assert untyped["mappings"]["properties"]["startTime"] == {"type": "date", "format": "epoch_millis"}
    wrapped = await engine.client.post(
        "/api/v2/exports/mapping", json={"value": typed}, headers=engine.headers
    )
    assert wrapped.status_code == 200
    assert wrapped.json()["mappings"]["_doc"]["properties"] == untyped["mappings"]["properties"]
    index = await engine.client.get(f"/api/v2/exports/{object_id}/mapping?form=index", headers=engine.headers)
    assert index.json()["settings"] == {"index": {"number_of_shards": 3, "number_of_replicas": 1}}
    assert index.json()["mappings"] == untyped["mappings"]
    missing = await engine.client.get("/api/v2/exports/nope/mapping", headers=engine.headers)
    assert missing.status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", TEST),
        ("post", "/api/v2/exports/sample"),
        ("post", "/api/v2/exports/mapping"),
        ("get", "/api/v2/exports/x/sample"),
        ("get", "/api/v2/exports/x/mapping"),
    ],
)
async def test_routes_need_a_token(engine: Engine, method: str, path: str) -> None:
    response = await getattr(engine.client, method)(
        path, **({"json": {"value": {}}} if method == "post" else {})
    )
    assert response.status_code == 401


# -- the CLI ----------------------------------------------------------------------------------------


def test_cli_export_test_sample_and_mapping(tmp_path: Path, receiver: Receiver, tls: Any) -> None:
    data = tmp_path / "data"
    source = tmp_path / "sessions.ndjson"
    lines = sessions(6, seed=8)
    source.write_bytes(b"\n".join(lines) + b"\n")
    runner = CliRunner()
    assert runner.invoke(cli_app, ["ingest", str(source), "--data-dir", str(data)]).exit_code == 0
    value_file = tmp_path / "value.json"
    value_file.write_bytes(orjson.dumps(export_value(receiver.url)))
    tested = runner.invoke(
        cli_app,
        [
            "export",
            "test",
            "--value",
            str(value_file),
            "--data-dir",
            str(data),
            "--ca-bundle",
            str(tls.ca_file),
        ],
    )
    assert tested.exit_code == 0, tested.output
    assert orjson.loads(tested.stdout)["sessionsSent"] == 6
    assert len(receiver.requests) == 1
    sample = runner.invoke(cli_app, ["export", "sample", "--value", str(value_file), "--data-dir", str(data)])
    assert sample.exit_code == 0 and sample.stdout.encode() == b"".join(line + b"\n" for line in lines)
    mapping = runner.invoke(cli_app, ["export", "mapping", "--doc-type", "_doc"])
    assert "_doc" in orjson.loads(mapping.stdout)["mappings"]
    nowhere = tmp_path / "no-server-here"
    alone = runner.invoke(
        cli_app, ["export", "mapping", "--value", str(value_file), "--data-dir", str(nowhere)]
    )
    assert alone.exit_code == 0 and "mappings" in orjson.loads(alone.stdout)  # a value needs no server
    assert not nowhere.exists()
    value_file.write_bytes(orjson.dumps(export_value("http://insecure.test/x")))
    refused = runner.invoke(cli_app, ["export", "test", "--value", str(value_file), "--data-dir", str(data)])
    assert refused.exit_code == 2 and "endpointDefinition.endpointUrl" in refused.output
    value_file.write_bytes(orjson.dumps(export_value("http://127.0.0.1:9/x")))  # loopback, if allowed
    for command in ("sample", "mapping"):
        args = ["export", command, "--value", str(value_file), "--data-dir", str(data)]
        assert runner.invoke(cli_app, args).exit_code == 2
        assert runner.invoke(cli_app, [*args, "--allow-http-loopback"]).exit_code == 0
    missing = runner.invoke(cli_app, ["export", "mapping", "--value", str(tmp_path / "missing.json")])
    assert missing.exit_code == 2 and "cannot read --value" in missing.output
    args = ["export", "sample", "--value", str(value_file), "--data-dir", str(data), "--allow-http-loopback"]
    unwritable = runner.invoke(cli_app, [*args, "-o", str(tmp_path / "missing" / "sample.ndjson")])
    assert unwritable.exit_code == 2 and "cannot write" in unwritable.output
    # written as generate writes: whole or not at all (a file beside it, renamed), gzipped as .gz
    packed = runner.invoke(cli_app, [*args, "-o", str(tmp_path / "sample.ndjson.gz")])
    assert packed.exit_code == 0, packed.output
    assert gzip.decompress((tmp_path / "sample.ndjson.gz").read_bytes()).splitlines() == lines
    assert not list(tmp_path.glob(".*.partial"))


def test_cli_sample_and_mapping_of_a_saved_export_need_no_key_and_make_none(
    tmp_path: Path, receiver: Receiver
) -> None:
    """The server keeps its key in its environment: these commands read no stored secret, and a
    key file they made would later be taken by a server started there for its own."""
    data = tmp_path / "data"
    source = tmp_path / "sessions.ndjson"
    source.write_bytes(b"\n".join(sessions(3, seed=9)) + b"\n")
    runner = CliRunner()
    assert runner.invoke(cli_app, ["ingest", str(source), "--data-dir", str(data)]).exit_code == 0
    basic = {"active": True, "authType": "basic", "basicAuth": {"username": "u", "password": "secret"}}
    value = export_value(receiver.url, authentication=basic)

    async def save() -> str:
        store = create_store(data)
        await store.open()
        try:
            service = SettingsService(store, SecretBox([new_key().encode()]))  # the server's key
            result = await service.create(NewObject(EXPORT_SCHEMA, "environment", value), "test", 0)
            assert result.object_id is not None
            return result.object_id
        finally:
            await store.close()

    object_id = asyncio.run(save())
    for command in ("sample", "mapping"):
        done = runner.invoke(cli_app, ["export", command, "--object-id", object_id, "--data-dir", str(data)])
        assert done.exit_code == 0, done.output
    value_file = tmp_path / "value.json"
    value_file.write_bytes(orjson.dumps(export_value("http://127.0.0.1:9/x")))
    tested = runner.invoke(
        cli_app,
        ["export", "test", "--value", str(value_file), "--data-dir", str(data), "--allow-http-loopback"],
    )
    assert tested.exit_code == 1, tested.output  # it ran (nothing listens there)
    assert not (data / KEY_FILE).exists()


@pytest.mark.parametrize(
    ("method", "path", "scopes"),
    [
        ("post", TEST, ["exports.manage"]),
        ("post", "/api/v2/exports/sample", ["settings.read"]),
        ("get", "/api/v2/exports/x/sample", ["settings.read"]),
        ("get", "/api/v2/exports/x/deadletters/1/body", ["settings.read"]),
    ],
)
async def test_session_content_needs_sessions_read(
    engine: Engine, method: str, path: str, scopes: list[str]
) -> None:
    from sessionexport.tokens import Scope

    token = await make_token(engine.app.state.store, frozenset(Scope(s).value for s in scopes), name="narrow")
    call = getattr(engine.client, method)
    response = await call(
        path,
        headers={"Authorization": f"Api-Token {token}"},
        **({"json": {"value": {}}} if method == "post" else {}),
    )
    assert response.status_code == 403
    assert "sessions.read" in response.text
