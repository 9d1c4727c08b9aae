"""schemathesis against the server's own OpenAPI document: generated requests (valid and not)
to every settings route of a real server on loopback; no 5xx, and every answer matches the
documented status codes, content types and schemas."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from sessionexport import tokens
from sessionexport.api.app import create_app
from sessionexport.clock import now_ms
from sessionexport.config import ServerConfig
from sessionexport.store import create_store
from sessionexport.store.records import TokenRecord
from tests.support.threaded_server import ThreadedServer

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    data_dir: Path = tmp_path_factory.mktemp("schemathesis")
    new = tokens.new_token("schemathesis", frozenset(s.value for s in tokens.Scope), now_ms())
    asyncio.run(_add_token(data_dir, new.record))
    server = ThreadedServer(create_app(ServerConfig(data_dir=data_dir, run_exporters=False))).start()
    url = f"http://127.0.0.1:{server.port}"
    assert httpx.get(f"{url}/health").status_code == 200
    yield url, new.token
    server.stop()


async def _add_token(data_dir: Path, record: TokenRecord) -> None:
    store = create_store(data_dir)
    await store.open()
    await store.add_token(record)
    await store.close()


# The document the server serves (the same app factory builds it; it needs no server to exist).
schema = schemathesis.openapi.from_dict(
    create_app(ServerConfig(data_dir=Path(tempfile.mkdtemp()))).openapi()
).include(path_regex="^/api/v2/settings")


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_settings_routes_conform_to_their_openapi(
    case: schemathesis.Case[Any], live_server: tuple[str, str]
) -> None:
    url, token = live_server
    case.call_and_validate(base_url=url, headers={"Authorization": f"Api-Token {token}"}, checks=CHECKS)


# Export routes that send nothing anywhere (the test export and replays reach real endpoints).
export_schema = schemathesis.openapi.from_dict(
    create_app(ServerConfig(data_dir=Path(tempfile.mkdtemp()))).openapi()
).include(
    path_regex=r"^/api/v2/(exports/(sample|mapping)|exports/\{objectId\}/(sample|mapping|status|deadletters|position)|alerts)$"
)


@export_schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_export_routes_conform_to_their_openapi(
    case: schemathesis.Case[Any], live_server: tuple[str, str]
) -> None:
    url, token = live_server
    case.call_and_validate(base_url=url, headers={"Authorization": f"Api-Token {token}"}, checks=CHECKS)


def test_every_operation_says_what_it_does_and_which_scopes_it_needs() -> None:
    """One security requirement holding every scope a route checks (OpenAPI reads several
    requirements as alternatives), named in its description as well."""
    document = create_app(ServerConfig(data_dir=Path(tempfile.mkdtemp()))).openapi()
    operations = {
        (method.upper(), path): op for path, ops in document["paths"].items() for method, op in ops.items()
    }
    assert [key for key, op in operations.items() if not op.get("description")] == []
    unsecured = [key for key, op in operations.items() if not op.get("security")]
    assert unsecured == [("GET", "/health")]
    for key, op in operations.items():
        if key in unsecured:
            continue
        [requirement] = op["security"]
        for scope in requirement["ApiToken"]:
            assert f"`{scope}`" in op["description"], key
    assert operations[("POST", "/api/v2/exports/test")]["security"] == [
        {"ApiToken": ["exports.manage", "sessions.read"]}
    ]
    assert operations[("GET", "/metrics")]["security"] == [{"ApiToken": ["metrics.read"]}]
    # the body limits hold for any request: a GET sent with a body over them gets 413 too
    assert set(operations[("GET", "/metrics")]["responses"]) == {"200", "401", "403", "413", "415", "503"}
    assert set(operations[("GET", "/health")]["responses"]) == {"200", "413", "415", "503"}
    for ingest in (("POST", "/api/v2/usersessions"), ("POST", "/api/v2/rum/events")):
        assert {"413", "415"} <= set(operations[ingest]["responses"]), ingest
        assert "Content-Encoding: gzip" in operations[ingest]["description"], ingest


def test_every_operation_documents_the_errors_it_can_give_and_what_it_answers() -> None:
    """The answers of the global handlers and middleware (401/403 for a token, 413/415 for any
    body, one sent where none belongs included, 503 for the store) on every operation they apply
    to, each error with the envelope's schema, and a schema for every JSON success."""
    document = create_app(ServerConfig(data_dir=Path(tempfile.mkdtemp()))).openapi()
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            where, responses = f"{method.upper()} {path}", op["responses"]
            expected = {"413", "415", "503"} | ({"401", "403"} if op.get("security") else set())
            assert expected <= set(responses), where
            for code, response in responses.items():
                content = response.get("content", {})
                if code[0] in "45":
                    assert content["application/json"]["schema"], (where, code)
                elif "application/json" in content:
                    assert content["application/json"]["schema"] not in ({}, None), (where, code)
            if "{objectId}" not in path:
                assert "objectId" not in responses.get("404", {}).get("description", ""), where
    listing = document["paths"]["/api/v2/usersessions"]["get"]["responses"]["400"]["description"]
    assert "query parameters" in listing and "line" not in listing
