"""The export engine against real HTTPS receivers on loopback (certificates from a test CA)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import gzip
import os
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from sessionexport.clock import DAY_MS, now_ms
from sessionexport.config import ServerConfig
from sessionexport.export import supervisor as supervisor_module
from sessionexport.export.auth import NoCredentials
from sessionexport.export.config import ExportConfig
from sessionexport.export.delivery import Sender
from sessionexport.export.exporter import Exporter
from sessionexport.export.tuning import ExportTuning
from sessionexport.retention import purge_expired
from sessionexport.settings.schemas import EXPORT_SCHEMA, ZONE_SCHEMA
from tests.conftest import make_token
from tests.support.backend import backend_database
from tests.support.connect_proxy import ConnectProxy
from tests.support.engine import OBJECTS, Engine, export_value, running_engine, sessions, until
from tests.support.receiver import RESET, STALL, TRICKLE, Answer, Receiver, Tls

pytestmark = pytest.mark.store  # on PostgreSQL too (tests/support/backend.py)


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    return Tls.create(tmp_path)


@pytest.fixture
def receiver(tls: Tls) -> Iterator[Receiver]:
    r = Receiver(tls).start()
    yield r
    r.stop()


@pytest.fixture
async def engine(tmp_path: Path, tls: Tls) -> AsyncIterator[Engine]:
    async with running_engine(ServerConfig(data_dir=tmp_path / "data", ca_bundle=tls.ca_file)) as running:
        yield running


async def delivered(engine: Engine, export_id: str, count: int) -> bool:
    return bool((await engine.status(export_id))["deliveredSessions"] == count)


async def test_sessions_reach_an_https_receiver_byte_for_byte(engine: Engine, receiver: Receiver) -> None:
    export_id = await engine.create_export(export_value(receiver.url))
    lines = sessions(25)
    await engine.ingest(lines)
    await until(lambda: len(receiver.sessions()) == 25, "25 sessions delivered")
    assert sorted(receiver.sessions()) == sorted(lines)
    request = receiver.requests[0]
    assert request.method == "PUT"
    assert request.headers["content-type"] == "application/json"
    assert request.body.endswith(b"\n")
    await until(lambda: delivered(engine, export_id, 25), "delivery recorded")
    status = await engine.status(export_id)
    assert status["state"] == "running" and status["backlog"] == 0 and status["lastSuccess"]


async def test_gzip_compression_sends_the_same_bytes_compressed_and_counts_bytes_before_it(
    engine: Engine, receiver: Receiver
) -> None:
    limit = 60_000
    tuning = {"compression": "gzip", "flushMaxBytes": limit, "flushIntervalSeconds": 0.3}
    export_id = await engine.create_export(export_value(receiver.url, tuning))
    lines = sessions(40, seed=8)
    await engine.ingest(lines)
    await until(lambda: delivered(engine, export_id, 40), "40 delivered")
    assert {r.headers.get("content-encoding") for r in receiver.requests} == {"gzip"}
    bodies = [gzip.decompress(r.body) for r in receiver.requests]
    assert sorted(line for body in bodies for line in body.split(b"\n") if line) == sorted(lines)
    # the byte rule counts the body before compression (as the receiver will hold it)
    assert len(bodies) > 1 and all(len(body) <= limit for body in bodies)
    assert sum(len(r.body) for r in receiver.requests) * 3 < sum(len(body) for body in bodies)


async def test_count_rule_flushes_at_max_sessions(engine: Engine, receiver: Receiver) -> None:
    await engine.create_export(
        export_value(receiver.url, {"flushMaxSessions": 10, "flushIntervalSeconds": 30})
    )
    await engine.ingest(sessions(25))
    await until(lambda: len(receiver.requests) >= 2, "two full bulks")
    assert [len(r.lines) for r in receiver.requests[:2]] == [10, 10]  # the last 5 wait for a time rule


async def test_byte_rule_never_exceeds_max_bytes_and_big_session_goes_alone(
    engine: Engine, receiver: Receiver
) -> None:
    limit = 20_000
    await engine.create_export(
        export_value(receiver.url, {"flushMaxBytes": limit, "flushIntervalSeconds": 0.3})
    )
    small = sessions(12, seed=3, kind="mobile", actions=(1, 1))
    big = sessions(1, seed=4, kind="web", actions=(30, 30))
    assert len(big[0]) > limit
    await engine.ingest([*small[:6], *big, *small[6:]])
    await until(lambda: len(receiver.sessions()) == 13, "13 sessions")
    alone = [r for r in receiver.requests if big[0] in r.lines]
    assert len(alone) == 1 and alone[0].lines == big
    assert all(len(r.body) <= limit for r in receiver.requests if big[0] not in r.lines)
    assert sorted(receiver.sessions()) == sorted([*small, *big])


async def test_interval_rule_sends_a_partial_bulk(engine: Engine, receiver: Receiver) -> None:
    await engine.create_export(
        export_value(receiver.url, {"flushIntervalSeconds": 0.5, "flushQuietSeconds": 60})
    )
    started = time.monotonic()
    await engine.ingest(sessions(3))
    await until(lambda: len(receiver.requests) == 1, "one partial bulk")
    waited = receiver.requests[0].at - started
    assert 0.4 <= waited < 5 and len(receiver.requests[0].lines) == 3


async def test_quiet_rule_fires_before_a_long_interval(engine: Engine, receiver: Receiver) -> None:
    await engine.create_export(
        export_value(receiver.url, {"flushIntervalSeconds": 60, "flushQuietSeconds": 0.5})
    )
    started = time.monotonic()
    await engine.ingest(sessions(4))
    await until(lambda: len(receiver.requests) == 1, "bulk after the quiet period")
    assert receiver.requests[0].at - started < 10 and len(receiver.requests[0].lines) == 4


@pytest.mark.parametrize(
    ("use_post", "content_type"), [(False, "application/json"), (True, "application/x-ndjson")]
)
async def test_method_and_content_type_follow_the_configuration(
    engine: Engine, receiver: Receiver, use_post: bool, content_type: str
) -> None:
    await engine.create_export(
        export_value(receiver.url, endpointDefinition={"usePost": use_post, "contentType": content_type})
    )
    await engine.ingest(sessions(2))
    await until(lambda: len(receiver.requests) == 1, "one request")
    assert receiver.requests[0].method == ("POST" if use_post else "PUT")
    assert receiver.requests[0].headers["content-type"] == content_type


async def test_basic_authentication(engine: Engine, receiver: Receiver) -> None:
    receiver.behaviour.basic = ("exporter", "s3cret pass")
    auth = {
        "active": True,
        "authType": "basic",
        "basicAuth": {"username": "exporter", "password": "s3cret pass"},
    }
    export_id = await engine.create_export(export_value(receiver.url, authentication=auth))
    await engine.ingest(sessions(3))
    await until(lambda: delivered(engine, export_id, 3), "delivered with basic auth")
    assert all(getattr(r, "answered", 0) == 200 for r in receiver.requests)


async def test_oauth2_token_is_fetched_cached_and_refreshed_on_401(
    engine: Engine, receiver: Receiver
) -> None:
    receiver.behaviour.oauth_clients = {"exporter": "client-secret"}
    auth = {
        "active": True,
        "authType": "oauth2",
        "oAuth2": {
            "accessTokenUrl": receiver.token_url,
            "clientId": "exporter",
            "clientSecret": "client-secret",
            "scope": "session-export-api",
        },
    }
    export_id = await engine.create_export(export_value(receiver.url, authentication=auth))
    await engine.ingest(sessions(2, seed=1))
    await until(lambda: delivered(engine, export_id, 2), "first bulk")
    await engine.ingest(sessions(2, seed=2))
    await until(lambda: delivered(engine, export_id, 4), "second bulk with the cached token")
    assert len(receiver.token_requests) == 1
    assert receiver.token_requests[0] == {
        "grant_type": "client_credentials",
        "scope": "session-export-api",
        "client_id": "exporter",
        "client_secret": "client-secret",
    }
    receiver.expire_tokens()  # the endpoint now refuses the cached token: 401, new token, retried
    await engine.ingest(sessions(2, seed=3))
    await until(lambda: delivered(engine, export_id, 6), "bulk after the token was refused")
    assert len(receiver.token_requests) == 2
    assert [getattr(r, "answered", 0) for r in receiver.requests[-2:]] == [401, 200]


@pytest.mark.parametrize(
    "answered",
    [
        {"expires_in": 30},  # within the 30 s leeway: every bulk needs a fresh token
        {"expires_in": 0},  # expired already (Authlib reads a falsy expires_in as "never")
        # expires_at is no field of RFC 6749: some send one in their own unit, or garbage
        {"expires_in": 30, "expires_at": 1_795_959_999_000},
        {"expires_in": 30, "expires_at": {"a": 1}},
    ],
    ids=["30s", "0s", "expires-at-ms", "expires-at-object"],
)
async def test_oauth2_token_is_renewed_before_it_expires(
    engine: Engine, receiver: Receiver, answered: dict[str, object]
) -> None:
    receiver.behaviour.oauth_clients = {"exporter": "client-secret"}
    receiver.behaviour.token_extra = answered  # what it says; its tokens stay valid for 300 s
    auth = {
        "active": True,
        "authType": "oauth2",
        "oAuth2": {
            "accessTokenUrl": receiver.token_url,
            "clientId": "exporter",
            "clientSecret": "client-secret",
        },
    }
    export_id = await engine.create_export(export_value(receiver.url, authentication=auth))
    for seed in (1, 2):
        await engine.ingest(sessions(1, seed=seed))
        await until(functools.partial(delivered, engine, export_id, seed), f"bulk {seed}")
    assert len(receiver.token_requests) == 2
    assert "scope" not in receiver.token_requests[0]


@pytest.mark.parametrize(
    ("status", "extra", "said"),
    [
        (503, {}, "token endpoint answered HTTP 503: server_error"),  # its OAuth error
        # not an exporter that fails and restarts in a loop: the token alert names the field
        (200, {"expires_in": "soon"}, "token endpoint answered an expires_in that is not seconds: 'soon'"),
        # kept, it failed every request before it went out (no 401 to replace it), and the
        # HTTP library's message quoted it: refused, and never shown
        (
            200,
            {"access_token": "tok\nsecret-value"},
            "an access_token that no Authorization header can carry",
        ),
    ],
    ids=["refused", "expiry-not-seconds", "unsendable-token"],
)
async def test_token_endpoint_failure_is_its_own_alert(
    engine: Engine, receiver: Receiver, status: int, extra: dict[str, object], said: str
) -> None:
    receiver.behaviour.oauth_clients = {"exporter": "client-secret"}
    receiver.behaviour.token_status, receiver.behaviour.token_extra = status, extra
    auth = {
        "active": True,
        "authType": "oauth2",
        "oAuth2": {
            "accessTokenUrl": receiver.token_url,
            "clientId": "exporter",
            "clientSecret": "client-secret",
        },
    }
    export_id = await engine.create_export(
        export_value(receiver.url, {"retries": 1, "backoffSeconds": 0.01}, authentication=auth)
    )
    await engine.ingest(sessions(1))
    await until(lambda: dead_letters(engine, export_id, 1), "dead letter")
    alerts = (await engine.client.get("/api/v2/alerts", headers=engine.headers)).json()["alerts"]
    assert [(a["kind"], a["objectId"]) for a in alerts] == [("token", export_id)]
    assert said in alerts[0]["title"]
    assert "secret-value" not in str(alerts)
    assert not [r for r in receiver.requests]  # nothing was sent without a token


async def test_an_answer_that_trickles_in_is_cut_at_the_timeout(engine: Engine, receiver: Receiver) -> None:
    """timeoutSeconds bounds the whole exchange, not each read: a byte every 0.2 s never trips
    a per-read timeout, and would hold the export for 20 s."""
    receiver.behaviour.script.append(TRICKLE)
    tuning = {"timeoutSeconds": 1, "retries": 1, "backoffSeconds": 0.01}
    export_id = await engine.create_export(export_value(receiver.url, tuning))
    await engine.ingest(sessions(2))
    await until(lambda: delivered(engine, export_id, 2), "delivered by the second attempt", within=8)
    assert len(receiver.requests) == 2
    assert receiver.requests[1].at - receiver.requests[0].at < 3


async def test_an_endless_answer_is_read_only_as_far_as_its_reason(
    engine: Engine, receiver: Receiver
) -> None:
    receiver.behaviour.script.append(Answer(500, endless=True))
    export_id = await engine.create_export(export_value(receiver.url, {"retries": 1, "backoffSeconds": 0.01}))
    await engine.ingest(sessions(2))
    await until(lambda: delivered(engine, export_id, 2), "delivered by the second attempt")
    assert receiver.streamed < 32 << 20  # of a gigabyte on offer: the start, and what the network held


async def test_retry_after_is_waited_out_before_the_next_attempt(engine: Engine, receiver: Receiver) -> None:
    receiver.behaviour.script.append(Answer(429, {"Retry-After": "2"}))
    export_id = await engine.create_export(export_value(receiver.url, {"retries": 1, "backoffSeconds": 0.01}))
    await engine.ingest(sessions(2))
    await until(lambda: delivered(engine, export_id, 2), "delivered by the second attempt")
    assert receiver.requests[1].at - receiver.requests[0].at >= 1.9


async def test_one_session_too_large_for_the_endpoint_is_kept_at_once(
    engine: Engine, receiver: Receiver
) -> None:
    receiver.behaviour.script.extend([413] * 10)
    export_id = await engine.create_export(export_value(receiver.url, {"retries": 3, "backoffSeconds": 0.01}))
    await engine.ingest(sessions(1))
    await until(lambda: dead_letters(engine, export_id, 1), "dead letter")
    assert len(receiver.requests) == 1  # no retry can make it smaller
    status = await engine.status(export_id)
    assert status["openAlerts"][0]["title"] == "Request failed: HTTP 413"


async def test_credentials_an_endpoint_echoes_back_are_masked_everywhere(
    engine: Engine, receiver: Receiver
) -> None:
    password = "SuperSecretPw123"
    encoded = base64.b64encode(f"u:{password}".encode()).decode()
    echo = orjson.dumps({"message": f"refused Authorization: Basic {encoded} (user u, password {password})"})
    cut_across = orjson.dumps({"message": "x" * 190 + f" {password}"})  # where the reason is cut: 200
    json = {"Content-Type": "application/json"}
    receiver.behaviour.script.extend([Answer(400, json, cut_across), Answer(400, json, echo)])
    auth = {"active": True, "authType": "basic", "basicAuth": {"username": "u", "password": password}}
    export_id = await engine.create_export(
        export_value(receiver.url, {"retries": 1, "backoffSeconds": 0.01}, authentication=auth)
    )
    await engine.ingest(sessions(1))
    await until(lambda: dead_letters(engine, export_id, 1), "dead letter")
    shown = [
        (await engine.client.get(path, headers=engine.headers)).text
        for path in (
            f"/api/v2/exports/{export_id}/status",
            "/api/v2/alerts",
            f"/api/v2/exports/{export_id}/deadletters",
        )
    ]
    for text in shown:
        assert "refused Authorization: Basic *****" in text and "password *****" in text
        assert password[:8] not in text and encoded[:8] not in text


async def test_credentials_echoed_in_elasticsearch_item_reasons_are_masked(
    engine: Engine, receiver: Receiver
) -> None:
    password = 'Pass"wört-2024'  # JSON escapes two of its characters
    item = {"index": {"status": 400, "error": {"type": "x", "reason": f"user u with {password} may not"}}}
    json = {"Content-Type": "application/json"}
    receiver.behaviour.script.append(Answer(200, json, orjson.dumps({"errors": True, "items": [item]})))
    auth = {"active": True, "authType": "basic", "basicAuth": {"username": "u", "password": password}}
    value = export_value(
        receiver.url.replace("/export/events", "/_bulk"),
        {"retries": 0},
        authentication=auth,
        endpointDefinition={"contentType": "application/x-ndjson", "usePost": True},
        sendDirect={"active": True, "indexName": "sessions"},
    )
    export_id = await engine.create_export(value)
    await engine.ingest(sessions(1))
    await until(lambda: dead_letters(engine, export_id, 1), "dead letter")
    letters, alerts = [
        (await engine.client.get(path, headers=engine.headers)).content.decode()
        for path in (f"/api/v2/exports/{export_id}/deadletters", "/api/v2/alerts")
    ]
    assert "user u with ***** may not" in letters
    for text in (letters, alerts):
        assert "wört" not in text and 'Pass\\"w' not in text


async def test_a_redirect_is_not_followed_and_says_where_it_leads(engine: Engine, receiver: Receiver) -> None:
    """Following it would send the sessions (and credentials) somewhere the configuration does not name."""
    receiver.behaviour.script.append(Answer(308, {"Location": "https://elsewhere.example/in"}))
    export_id = await engine.create_export(export_value(receiver.url, {"retries": 0}))
    await engine.ingest(sessions(1))
    await until(lambda: dead_letters(engine, export_id, 1), "dead letter")
    assert len(receiver.requests) == 1
    title = (await engine.status(export_id))["openAlerts"][0]["title"]
    assert title == (
        "Request failed: HTTP 308: redirects to https://elsewhere.example/in"
        " (not followed: set endpointUrl to where it leads)"
    )


async def replay_all(engine: Engine, export_id: str) -> dict[str, Any]:
    replay = await engine.client.post(
        f"/api/v2/exports/{export_id}/deadletters/replay", headers=engine.headers
    )
    assert replay.status_code == 200, replay.text
    return dict(replay.json())


async def test_a_letter_too_large_for_the_endpoint_now_is_split_on_replay(
    engine: Engine, receiver: Receiver
) -> None:
    receiver.behaviour.script.extend([500, 500])
    export_id = await engine.create_export(export_value(receiver.url, {"retries": 1, "backoffSeconds": 0.01}))
    lines = sessions(4)
    await engine.ingest(lines)
    await until(lambda: dead_letters(engine, export_id, 1), "dead letter")
    receiver.requests.clear()
    receiver.behaviour.max_lines = 1  # the endpoint came back with a smaller body limit
    result = await replay_all(engine, export_id)
    assert (result["replayed"], result["failed"]) == (1, 0)
    assert sorted(receiver.sessions()) == sorted(lines)
    assert [len(r.lines) for r in receiver.requests] == [4, 2, 1, 1, 2, 1, 1]


async def test_a_letter_kept_in_elasticsearch_mode_reaches_a_plain_endpoint_as_sessions(
    engine: Engine, receiver: Receiver
) -> None:
    receiver.behaviour.script.extend([500, 500])
    es_mode = {"active": True, "indexName": "sessions"}
    bulk_api = {"endpointUrl": receiver.url.replace("/export/events", "/_bulk"), "usePost": True}
    value = export_value(
        receiver.url,
        {"retries": 1, "backoffSeconds": 0.01},
        sendDirect=es_mode,
        endpointDefinition={**bulk_api, "contentType": "application/x-ndjson"},
    )
    export_id = await engine.create_export(value)
    lines = sessions(3)
    await engine.ingest(lines)
    await until(lambda: dead_letters(engine, export_id, 1), "dead letter")
    assert len(receiver.requests[0].lines) == 6  # kept with its action lines
    value["sendDirect"] = {"active": False}
    value["endpointDefinition"] = {
        "endpointUrl": receiver.url,
        "contentType": "application/json",
        "usePost": False,
    }
    changed = await engine.client.put(f"{OBJECTS}/{export_id}", json={"value": value}, headers=engine.headers)
    assert changed.status_code == 200, changed.text
    receiver.requests.clear()
    result = await replay_all(engine, export_id)
    assert result["replayed"] == 1
    [request] = receiver.requests
    assert request.lines == lines  # the sessions alone, as the export now sends them


async def dead_letters(engine: Engine, export_id: str, count: int) -> bool:
    response = await engine.client.get(f"/api/v2/exports/{export_id}/deadletters", headers=engine.headers)
    return len(response.json()["deadLetters"]) == count


async def test_without_notifications_a_failing_export_still_says_failing(
    engine: Engine, receiver: Receiver
) -> None:
    """disableNotification silences alerts, not the state: monitoring reads the state."""
    receiver.behaviour.script.extend([500, 500])
    value = export_value(receiver.url, {"retries": 1, "backoffSeconds": 0.05})
    value["exportBehavior"]["disableNotification"] = True
    export_id = await engine.create_export(value)
    await engine.ingest(sessions(2))
    await until(lambda: dead_letters(engine, export_id, 1), "dead letter after 2 attempts")
    status = await engine.status(export_id)
    assert (status["state"], status["openAlerts"]) == ("failing", [])
    text = (await engine.client.get("/metrics", headers=engine.headers)).text
    assert f'sessionexport_export_state{{export="{export_id}",state="failing"}} 1.0' in text
    await engine.ingest(sessions(2, seed=99))  # the endpoint answers 200 again
    await until(lambda: delivered(engine, export_id, 2), "delivered again")
    assert (await engine.status(export_id))["state"] == "running"


async def test_stall_retries_dead_letter_alert_then_replay(engine: Engine, receiver: Receiver) -> None:
    receiver.behaviour.stall_seconds = 2
    receiver.behaviour.script.extend([STALL] * 4)
    tuning = {"timeoutSeconds": 0.3, "retries": 3, "backoffSeconds": 0.05}
    export_id = await engine.create_export(export_value(receiver.url, tuning))
    lines = sessions(3)
    await engine.ingest(lines)
    await until(lambda: dead_letters(engine, export_id, 1), "dead letter after 4 attempts")
    assert len(receiver.requests) == 4  # the first attempt and 3 retries
    letters = (
        await engine.client.get(f"/api/v2/exports/{export_id}/deadletters", headers=engine.headers)
    ).json()
    letter = letters["deadLetters"][0]
    assert letter["reason"] == "Request timeout" and letter["sessionCount"] == 3
    identities = [[s["tenantId"], s["userSessionId"], s["startTime"]] for s in map(orjson.loads, lines)]
    assert letter["sessions"] == identities
    settings_only = await make_token(engine.app.state.store, frozenset({"settings.read"}))
    seen = await engine.client.get(
        f"/api/v2/exports/{export_id}/deadletters", headers={"Authorization": f"Api-Token {settings_only}"}
    )
    assert seen.status_code == 200 and "sessions" not in seen.json()["deadLetters"][0]  # keys to session data
    assert [a["attempt"] for a in letter["attempts"]] == [1, 2, 3, 4]
    assert all("no answer within 0.3 s" in a["error"] for a in letter["attempts"])
    body = await engine.client.get(
        f"/api/v2/exports/{export_id}/deadletters/{letter['id']}/body", headers=engine.headers
    )
    assert body.content == receiver.requests[0].body
    status = await engine.status(export_id)
    assert status["state"] == "failing" and status["deadLetters"] == 1 and status["backlog"] == 0
    assert status["openAlerts"][0]["title"] == "Request timeout"

    replay = await engine.client.post(  # the same letter named three times is sent once
        f"/api/v2/exports/{export_id}/deadletters/replay",
        json={"ids": [letter["id"]] * 3},
        headers=engine.headers,
    )
    assert replay.status_code == 200 and replay.json()["replayed"] == 1
    assert len(replay.json()["results"]) == 1 and len(receiver.requests) == 5
    assert receiver.requests[-1].body == body.content and getattr(receiver.requests[-1], "answered", 0) == 200
    status = await engine.status(export_id)
    assert (status["deadLetters"], status["failedSessions"], status["replayedSessions"]) == (0, 3, 3)
    assert status["deliveredSessions"] == 0  # by the exporter: the replay's are counted apart
    text = (await engine.client.get("/metrics", headers=engine.headers)).text
    assert f'sessionexport_sessions_replayed_total{{export="{export_id}"}} 3.0' in text
    assert f'sessionexport_sessions_failed_total{{export="{export_id}"}} 3.0' in text
    assert status["state"] == "running" and status["openAlerts"] == []  # the replay's success closed it
    assert status["lastSuccess"] is not None and status["lastSuccess"] >= letter["createdAt"]  # not "never"

    # Once retention is past the replay, its session content is gone; what the letter says stays.
    await purge_expired(engine.app.state.store, retention_ms=DAY_MS, now=now_ms() + 2 * DAY_MS)
    gone = await engine.client.get(
        f"/api/v2/exports/{export_id}/deadletters/{letter['id']}/body", headers=engine.headers
    )
    assert gone.status_code == 410 and "retention has removed its body" in gone.text
    assert (await engine.status(export_id))["replayedSessions"] == 3


async def test_a_replay_closes_the_alert_of_its_letters_shard_only(
    engine: Engine, receiver: Receiver
) -> None:
    receiver.behaviour.script.extend([500] * 4)
    tuning = {"retries": 0, "flushMaxSessions": 1, "shards": 2}
    export_id = await engine.create_export(export_value(receiver.url, tuning))
    await engine.ingest(sessions(4, seed=43))
    await until(lambda: dead_letters(engine, export_id, 4), "four dead letters")

    async def open_kinds() -> list[str]:
        return sorted(a["kind"] for a in (await engine.status(export_id))["openAlerts"])

    assert await open_kinds() == ["delivery:shard-0", "delivery:shard-1"]
    letters = (
        await engine.client.get(f"/api/v2/exports/{export_id}/deadletters", headers=engine.headers)
    ).json()
    shard_1 = next(letter["id"] for letter in letters["deadLetters"] if letter["firstSeq"] % 2 == 1)
    replay = await engine.client.post(
        f"/api/v2/exports/{export_id}/deadletters/replay", json={"ids": [shard_1]}, headers=engine.headers
    )
    assert replay.json()["replayed"] == 1
    assert await open_kinds() == ["delivery:shard-0"]  # shard 0's letters are still undelivered


async def test_two_replays_at_once_send_a_letter_once(engine: Engine, receiver: Receiver) -> None:
    receiver.behaviour.script.extend([500, 500])
    export_id = await engine.create_export(export_value(receiver.url, {"retries": 0, "flushMaxSessions": 2}))
    await engine.ingest(sessions(4, seed=41))
    await until(lambda: dead_letters(engine, export_id, 2), "two dead letters")
    receiver.behaviour.delay_seconds = 0.5  # each replay's request takes a while: they overlap
    replay = f"/api/v2/exports/{export_id}/deadletters/replay"
    answers = await asyncio.gather(
        *(engine.client.post(replay, headers=engine.headers) for _ in range(3))  # three "replay all"
    )
    bodies = [a.json() for a in answers]
    assert sum(b["replayed"] for b in bodies) == 2 and all(b["failed"] == 0 for b in bodies)
    skipped = [i for b in bodies for i in b["skipped"]]
    assert skipped  # they overlapped: the letters the others were sending were skipped
    assert len(receiver.requests) == 2 + 2  # the two failures, then each letter once
    status = await engine.status(export_id)
    assert status["deadLetters"] == 0  # both replayed


async def test_a_replay_asked_with_a_misspelt_field_sends_nothing(engine: Engine, receiver: Receiver) -> None:
    """{"id": [...]} is no "ids" left out (which means every pending letter): it is refused."""
    receiver.behaviour.script.extend([500, 500])
    export_id = await engine.create_export(export_value(receiver.url, {"retries": 0, "flushMaxSessions": 2}))
    await engine.ingest(sessions(4, seed=42))
    await until(lambda: dead_letters(engine, export_id, 2), "two dead letters")
    listed = await engine.client.get(f"/api/v2/exports/{export_id}/deadletters", headers=engine.headers)
    answer = await engine.client.post(
        f"/api/v2/exports/{export_id}/deadletters/replay",
        json={"id": [listed.json()["deadLetters"][0]["id"]]},
        headers=engine.headers,
    )
    assert answer.status_code == 400
    [violation] = answer.json()["error"]["constraintViolations"]
    assert violation["path"] == "id" and "not permitted" in violation["message"]
    assert len(receiver.requests) == 2  # the two failures only
    assert (await engine.status(export_id))["deadLetters"] == 2


async def test_a_replay_in_the_background_answers_at_once(engine: Engine, receiver: Receiver) -> None:
    receiver.behaviour.script.extend([500, 500])
    export_id = await engine.create_export(export_value(receiver.url, {"retries": 0, "flushMaxSessions": 2}))
    await engine.ingest(sessions(4, seed=44))
    await until(lambda: dead_letters(engine, export_id, 2), "two dead letters")
    receiver.behaviour.delay_seconds = 0.5  # each letter takes a while
    started = time.monotonic()
    answer = await engine.client.post(
        f"/api/v2/exports/{export_id}/deadletters/replay",
        params={"background": "true"},
        headers=engine.headers,
    )
    assert answer.status_code == 202 and answer.json() == {"replaying": 2}
    assert time.monotonic() - started < 0.5  # it did not wait for them
    await until(lambda: dead_letters(engine, export_id, 0), "both replayed")
    assert len(receiver.requests) == 2 + 2


async def test_a_replay_follows_edits_of_its_export_and_stops_when_it_is_paused(
    engine: Engine, receiver: Receiver, tls: Tls
) -> None:
    """Each letter goes as the export is saved when its turn comes: after an edit, to the new
    endpoint; after a pause, nowhere (the rest stay pending, listed as skipped)."""
    receiver.behaviour.script.extend([500] * 6)
    value = export_value(receiver.url, {"retries": 0, "flushMaxSessions": 1})
    export_id = await engine.create_export(value)
    await engine.ingest(sessions(6, seed=46))
    await until(lambda: dead_letters(engine, export_id, 6), "six dead letters")
    moved_to = Receiver(tls).start()
    try:
        receiver.behaviour.delay_seconds = moved_to.behaviour.delay_seconds = 0.3

        async def put(value: dict[str, Any]) -> None:
            changed = await engine.client.put(
                f"{OBJECTS}/{export_id}", json={"value": value}, headers=engine.headers
            )
            assert changed.is_success, changed.text

        replay = asyncio.create_task(
            engine.client.post(f"/api/v2/exports/{export_id}/deadletters/replay", headers=engine.headers)
        )
        await until(lambda: len(receiver.requests) == 6 + 1, "the first letter sent")
        value["endpointDefinition"]["endpointUrl"] = moved_to.url
        await put(value)
        await until(lambda: len(moved_to.requests) >= 1, "the letters after the edit go to the new endpoint")
        value["endpointDefinition"]["enableUserSessionExport"] = False
        await put(value)
        answer = (await replay).json()
        sent_old, sent_new = len(receiver.requests) - 6, len(moved_to.requests)
        assert sent_old <= 2 and sent_new >= 1  # the letter under way at the edit may finish where it went
        assert answer["replayed"] == sent_old + sent_new and answer["failed"] == 0
        assert len(answer["skipped"]) == 6 - sent_old - sent_new > 0  # stopped by the pause, left pending
        assert (await engine.status(export_id))["deadLetters"] == len(answer["skipped"])
        refused = await engine.client.post(
            f"/api/v2/exports/{export_id}/deadletters/replay", headers=engine.headers
        )
        assert refused.status_code == 409
        assert "the export is paused: resume it to send its dead letters" in refused.text
    finally:
        moved_to.stop()


async def test_a_replay_closes_the_alert_with_its_first_delivery_not_its_last(
    engine: Engine, receiver: Receiver
) -> None:
    receiver.behaviour.script.extend([500, 500, 200, STALL])
    receiver.behaviour.stall_seconds = 6
    tuning = {"retries": 0, "flushMaxSessions": 2, "timeoutSeconds": 5}
    export_id = await engine.create_export(export_value(receiver.url, tuning))
    await engine.ingest(sessions(4, seed=45))
    await until(lambda: dead_letters(engine, export_id, 2), "two dead letters")
    answer = await engine.client.post(
        f"/api/v2/exports/{export_id}/deadletters/replay",
        params={"background": "true"},
        headers=engine.headers,
    )
    assert answer.status_code == 202
    await until(lambda: dead_letters(engine, export_id, 1), "the first letter replayed")
    status = await engine.status(export_id)  # the second letter's request is still awaited
    assert len(receiver.requests) == 4 and status["openAlerts"] == [] and status["state"] == "running"


async def test_an_export_is_deleted_only_once_its_dead_letters_are_replayed_or_discarded(
    engine: Engine, receiver: Receiver
) -> None:
    receiver.behaviour.script.extend([500, 500])
    export_id = await engine.create_export(export_value(receiver.url, {"retries": 0, "flushMaxSessions": 2}))
    await engine.ingest(sessions(4, seed=43))
    await until(lambda: dead_letters(engine, export_id, 2), "two dead letters")
    refused = await engine.client.delete(f"{OBJECTS}/{export_id}", headers=engine.headers)
    assert refused.status_code == 400
    assert refused.json()["code"] == 400  # a SettingsObjectResponse, as Dynatrace's DELETE answers
    assert "has 2 pending dead letter(s)" in refused.json()["error"]["message"]

    discard = f"/api/v2/exports/{export_id}/deadletters"
    reader = await make_token(engine.app.state.store, frozenset({"settings.read"}))
    denied = await engine.client.delete(discard, headers={"Authorization": f"Api-Token {reader}"})
    assert denied.status_code == 403  # exports.manage
    discarded = await engine.client.delete(discard, headers=engine.headers)
    assert discarded.json() == {"discardedDeadLetters": 2, "discardedSessions": 4}
    assert (await engine.client.delete(f"{OBJECTS}/{export_id}", headers=engine.headers)).status_code == 204


async def state_is(engine: Engine, export_id: str, state: str) -> bool:
    return bool((await engine.status(export_id))["state"] == state)


async def test_server_errors_and_resets_are_retried(engine: Engine, receiver: Receiver) -> None:
    receiver.behaviour.script.extend([500, RESET, 503])
    export_id = await engine.create_export(export_value(receiver.url, {"retries": 3, "backoffSeconds": 0.01}))
    lines = sessions(5)
    await engine.ingest(lines)
    await until(lambda: delivered(engine, export_id, 5), "delivered on the 4th attempt")
    assert len(receiver.requests) == 4
    assert sorted(receiver.sessions()) == sorted(lines)
    assert (await engine.status(export_id))["deadLetters"] == 0


async def test_http_endpoint_is_refused(engine: Engine, receiver: Receiver) -> None:
    body = [
        {
            "schemaId": EXPORT_SCHEMA,
            "scope": "environment",
            "value": export_value(receiver.url.replace("https://", "http://")),
        }
    ]
    response = await engine.client.post(OBJECTS, json=body, headers=engine.headers)
    assert response.status_code == 400
    assert "https" in response.json()[0]["error"]["constraintViolations"][0]["message"]


async def test_a_new_export_takes_the_sessions_that_came_once_it_was_created(
    tmp_path: Path, tls: Tls, receiver: Receiver
) -> None:
    """Also those that came before a worker first saw it: here none ran when it was created."""
    with backend_database() as url:
        shared = url or f"sqlite:///{tmp_path / 'shared.db'}"
        api_only = ServerConfig(data_dir=tmp_path / "api", database_url=shared, run_exporters=False)
        before, after = sessions(3, seed=31), sessions(4, seed=32)
        async with running_engine(api_only) as api:
            await api.ingest(before)
            body = [{"schemaId": EXPORT_SCHEMA, "scope": "environment", "value": export_value(receiver.url)}]
            created = await api.client.post("/api/v2/settings/objects", json=body, headers=api.headers)
            assert created.status_code == 200, created.text
            export_id = created.json()[0]["objectId"]
            await asyncio.sleep(0.01)  # the log's clock has moved past the creation
            await api.ingest(after)
        worker = ServerConfig(data_dir=tmp_path / "worker", database_url=shared, ca_bundle=tls.ca_file)
        async with running_engine(worker) as engine:
            await until(lambda: delivered(engine, export_id, len(after)), "the later sessions delivered")
            await asyncio.sleep(0.5)  # and nothing more
            assert sorted(line for r in receiver.requests for line in r.lines) == sorted(after)


async def test_an_export_deleted_while_no_worker_ran_is_forgotten_by_the_next(
    tmp_path: Path, tls: Tls, receiver: Receiver
) -> None:
    with backend_database() as url:
        shared = url or f"sqlite:///{tmp_path / 'shared.db'}"
        worker = ServerConfig(data_dir=tmp_path / "worker", database_url=shared, ca_bundle=tls.ca_file)
        async with running_engine(worker) as engine:
            export_id = await engine.create_export(export_value(receiver.url))
            await engine.app.state.store.raise_alert(export_id, "delivery", "Request failed: x", "m", now=1)
        async with running_engine(replace(worker, run_exporters=False)) as api:
            deleted = await api.client.delete(f"{OBJECTS}/{export_id}", headers=api.headers)
            assert deleted.status_code == 204
            assert await api.app.state.store.get_cursor(export_id) is not None  # no worker: still there
        async with running_engine(worker) as engine:
            store = engine.app.state.store

            async def forgotten() -> bool:
                return await store.get_cursor(export_id) is None

            await until(forgotten, "the deleted export's cursor forgotten")
            assert not [a for a in await store.list_alerts(open_only=True) if a.export_id == export_id]


async def test_a_stored_http_endpoint_is_not_started_and_said_once(tmp_path: Path, tls: Tls) -> None:
    """Stored while this server allowed http on loopback, refused once it no longer does: one
    alert, not one per heartbeat."""
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    allowing = ServerConfig(
        data_dir=tmp_path / "a", database_url=db, allow_http_loopback=True, lease_seconds=0.6
    )
    async with running_engine(allowing) as engine:
        export_id = await engine.create_export(export_value("http://127.0.0.1:9/events"))
    strict = replace(allowing, allow_http_loopback=False)
    async with running_engine(strict) as engine:
        await asyncio.sleep(1.5)  # several balancing passes (a heartbeat every 0.2 s)
        [alert] = (await engine.status(export_id))["openAlerts"]
        assert alert["title"].startswith("Request failed: http:// URL refused")
        assert alert["occurrences"] == 1
        assert not engine.app.state.exports.is_running(export_id)


async def test_a_stored_http_endpoint_gets_no_replay_either(tmp_path: Path, tls: Tls) -> None:
    """A dead letter of an http:// export stored while loopback http was allowed is not sent
    again, over plain HTTP, by a server that no longer allows it: 409, nothing sent, still pending."""
    listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    connections = 0

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.close()

    db = f"sqlite:///{tmp_path / 'shared.db'}"
    allowing = ServerConfig(data_dir=tmp_path / "a", database_url=db, allow_http_loopback=True)
    async with running_engine(allowing) as engine:
        export_id = await engine.create_export(
            export_value(f"http://127.0.0.1:{port}/events", {"retries": 0, "flushIntervalSeconds": 0.1})
        )
        await engine.ingest(sessions(2))
        await until(lambda: dead_letters(engine, export_id, 1), "a dead letter")
    listener.close()
    await listener.wait_closed()
    counting = await asyncio.start_server(count, "127.0.0.1", port)
    try:
        async with running_engine(replace(allowing, allow_http_loopback=False)) as engine:
            replay = await engine.client.post(
                f"/api/v2/exports/{export_id}/deadletters/replay", headers=engine.headers
            )
            assert replay.status_code == 409
            assert "http:// URL refused" in replay.json()["error"]["message"]
            assert await dead_letters(engine, export_id, 1)
            [letter] = (
                await engine.client.get(f"/api/v2/exports/{export_id}/deadletters", headers=engine.headers)
            ).json()["deadLetters"]
            assert letter["state"] == "pending"
    finally:
        counting.close()
        await counting.wait_closed()
    assert connections == 0


@pytest.mark.parametrize("url", ["https://xn--a.example/events", "https://collector.example/a\tb"])
async def test_a_url_the_client_cannot_use_fails_the_attempt_with_the_reason(url: str) -> None:
    """Defence in depth (settings refuse such URLs, and a server refuses to start an export with
    one stored earlier): an attempt fails with the reason instead of raising out of the exporter."""
    config = ExportConfig(
        "x", url, True, "application/json", False, None, None, None, False, ExportTuning(retries=0)
    )
    async with httpx.AsyncClient() as client:
        attempt, _ = await Sender(config, client, NoCredentials()).attempt(1, b"{}")
    assert attempt.error is not None and attempt.error.startswith("the request could not be made")
    assert not attempt.ok


async def test_an_exporter_that_keeps_failing_says_so_until_it_works_again(
    engine: Engine, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Its status is "failing" with an alert (not "running" while nothing moves). The alert closes
    once a run reads the log to its end, with nothing to deliver too; then sessions flow."""
    monkeypatch.setattr(supervisor_module, "RESTART_BACKOFF_SECONDS", (0.1,))
    run = Exporter.run
    broken = True

    async def failing_run(self: Exporter, start: int) -> None:
        if broken:
            raise RuntimeError("boom")
        await run(self, start)

    monkeypatch.setattr(Exporter, "run", failing_run)
    export_id = await engine.create_export(export_value(receiver.url, {"flushIntervalSeconds": 0.1}))

    async def alerted() -> bool:
        status = await engine.status(export_id)
        return any(a["title"] == "Exporter failed: boom" for a in status["openAlerts"])

    await until(alerted, "an alert")

    async def failed_often() -> bool:
        return bool((await engine.status(export_id))["openAlerts"][0]["occurrences"] >= 5)

    await until(failed_often, "five failures")
    status = await engine.status(export_id)
    assert status["state"] == "failing" and "boom" in status["lastError"]
    [alert] = status["openAlerts"]
    assert "restarted in" in alert["message"]
    logged = [r for r in caplog.records if "exporter failed" in r.getMessage()]
    assert len(logged) == 1  # a failure that recurs is logged once a minute at most, its alert counts it
    broken = False

    async def closed() -> bool:
        return not (await engine.status(export_id))["openAlerts"]

    await until(closed, "the alert closed, with no session to deliver")
    assert (await engine.status(export_id))["state"] == "running"
    await engine.ingest(sessions(3))
    await until(lambda: len(receiver.sessions()) == 3, "delivery")


async def test_certificate_errors_are_reported_never_ignored(engine: Engine, tmp_path: Path) -> None:
    other_ca = tmp_path / "other-ca"
    other_ca.mkdir()
    untrusted = Receiver(Tls.create(other_ca)).start()  # its CA is not the one the server trusts
    try:
        export_id = await engine.create_export(
            export_value(untrusted.url, {"retries": 1, "backoffSeconds": 0.01})
        )
        await engine.ingest(sessions(1))
        await until(lambda: dead_letters(engine, export_id, 1), "dead letter")
        assert untrusted.requests == []
        status = await engine.status(export_id)
        assert "TLS certificate verification failed" in status["lastError"]
        assert "TLS certificate verification failed" in status["openAlerts"][0]["title"]
    finally:
        untrusted.stop()


@contextlib.contextmanager
def tls_failing_after_the_handshake(tls: Tls) -> Iterator[str]:
    """An HTTPS endpoint whose TLS fails once the handshake is done: it reads the request, then
    writes plain bytes into the TLS stream (the client's TLS layer raises, as for an endpoint
    that wants a client certificate). Blocking sockets in a thread."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert, tls.key)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed: the test is over
            with context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False) as tls_conn:
                with contextlib.suppress(OSError):  # an ssl.SSLError too
                    tls_conn.do_handshake()
                    tls_conn.recv(65536)  # the request
                    os.write(tls_conn.fileno(), b"HTTP/1.1 200 OK\r\n\r\n")  # past TLS
                # What the client sent is read before closing: unread, it would make the close a
                # reset, which the client could see before what was sent to it.
                tls_conn.settimeout(1)
                with contextlib.suppress(OSError):
                    while os.read(tls_conn.fileno(), 65536):
                        pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{listener.getsockname()[1]}/export/events"
    finally:
        listener.close()
        thread.join(5)


async def test_tls_failing_after_the_handshake_is_a_failed_attempt_not_an_exporter_crash(
    engine: Engine, tls: Tls
) -> None:
    said = "TLS failed after the handshake ("
    with tls_failing_after_the_handshake(tls) as url:
        export_id = await engine.create_export(export_value(url, {"retries": 1, "backoffSeconds": 0.01}))
        await engine.ingest(sessions(2))
        await until(lambda: dead_letters(engine, export_id, 1), "dead letter")
        status = await engine.status(export_id)
        assert status["state"] == "failing" and status["failedSessions"] == 2
        assert said in status["lastError"]
        [alert] = status["openAlerts"]
        assert alert["title"].startswith(f"Request failed: {said}")
        test = await engine.client.post(
            "/api/v2/exports/test", json={"value": export_value(url)}, headers=engine.headers
        )
        assert test.status_code == 200, test.text
        assert not test.json()["success"] and said in test.json()["error"]


async def test_a_connection_never_made_is_a_timeout_of_nothing_sent(tmp_path: Path, tls: Tls) -> None:
    """A listener that never completes a TLS handshake: connecting gives up before the exchange's
    deadline, so the request is known not to have gone out."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers the TLS client hello

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    config = ExportConfig(
        "x",
        f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/x",
        True,
        "application/json",
        False,
        None,
        None,
        None,
        False,
        ExportTuning(retries=0, timeoutSeconds=1),
    )
    try:
        async with httpx.AsyncClient() as client:
            attempt, _ = await Sender(config, client, NoCredentials()).attempt(1, b"{}")
    finally:
        server.close()
    assert attempt.timed_out and not attempt.sent
    assert attempt.error == "no connection within 0.9 s (no TCP or TLS handshake)"


async def test_exports_go_through_the_proxy_they_are_given(
    tmp_path: Path, receiver: Receiver, tls: Tls, caplog: pytest.LogCaptureFixture
) -> None:
    """A company's egress proxy (CONNECT, with Basic credentials): the bulks and the token requests
    go through it, TLS end to end; a proxy that refuses is the attempt's reason, its password in
    no status, alert or log line."""
    receiver.behaviour.oauth_clients = {"exporter": "client-secret"}
    endpoint = f"127.0.0.1:{urlsplit(receiver.url).port}"
    async with ConnectProxy(("egress", "pr0xy-pass")) as proxy:
        config = ServerConfig(data_dir=tmp_path / "proxied", ca_bundle=tls.ca_file, proxy=proxy.url)
        async with running_engine(config) as engine:
            credentials = {"clientId": "exporter", "clientSecret": "client-secret"}
            token = {"accessTokenUrl": receiver.token_url, **credentials}
            oauth = {"active": True, "authType": "oauth2", "oAuth2": token}
            await engine.create_export(export_value(receiver.url, authentication=oauth))
            await engine.ingest(sessions(3))
            await until(lambda: len(receiver.sessions()) == 3, "delivery through the proxy")
        assert receiver.token_requests and set(proxy.targets) == {endpoint}  # the token's too
    async with ConnectProxy(("egress", "another-pass")) as refusing:
        wrong = f"http://egress:pr0xy-pass@127.0.0.1:{refusing.port}"
        config = ServerConfig(data_dir=tmp_path / "refused", ca_bundle=tls.ca_file, proxy=wrong)
        async with running_engine(config) as engine:
            export_id = await engine.create_export(export_value(receiver.url, {"retries": 0}))
            await engine.ingest(sessions(2, seed=5))
            await until(lambda: dead_letters(engine, export_id, 1), "dead letter")
            status = await engine.status(export_id)
    assert status["lastError"] == (
        "Request failed: the proxy refused the tunnel to the endpoint (407 Proxy Authentication Required)"
    )
    assert refusing.targets == [] and len(receiver.sessions()) == 3
    assert "pr0xy-pass" not in orjson.dumps(status).decode() and "pr0xy-pass" not in caplog.text


async def test_one_endpoint_down_does_not_hold_up_another(
    engine: Engine, receiver: Receiver, tls: Tls
) -> None:
    down = Receiver(tls).start()
    down.behaviour.script.extend([STALL] * 100)
    down.behaviour.stall_seconds = 3
    try:
        slow_id = await engine.create_export(export_value(down.url, {"timeoutSeconds": 1, "retries": 3}))
        fast_id = await engine.create_export(export_value(receiver.url))
        for seed in range(5):
            await engine.ingest(sessions(2, seed=seed))
            await asyncio.sleep(0.1)
        await until(
            lambda: delivered(engine, fast_id, 10), "the healthy export delivers everything", within=5
        )
        assert (await engine.status(slow_id))["deliveredSessions"] == 0
    finally:
        down.stop()


async def test_an_export_that_fills_its_cap_on_bulks_in_flight_leaves_others_theirs(
    tmp_path: Path, receiver: Receiver, tls: Tls
) -> None:
    """The cap on bulks in flight is per export: a slow one waiting out its timeouts with as many
    bulks as it may send does not take the slots of another."""
    down = Receiver(tls).start()
    down.behaviour.script.extend([STALL] * 100)
    down.behaviour.stall_seconds = 3
    config = ServerConfig(data_dir=tmp_path / "capped", ca_bundle=tls.ca_file, max_in_flight=2)
    try:
        async with running_engine(config) as engine:
            slow = export_value(
                down.url, {"timeoutSeconds": 2, "retries": 3, "concurrency": 2, "flushMaxSessions": 1}
            )
            slow_id = await engine.create_export(slow)
            fast_id = await engine.create_export(export_value(receiver.url, {"flushIntervalSeconds": 0.1}))
            await engine.ingest(sessions(4, seed=1))
            await until(lambda: len(down.requests) >= 2, "the slow export's two bulks in flight")
            await engine.ingest(sessions(3, seed=2))
            await until(lambda: delivered(engine, fast_id, 7), "the healthy export delivers", within=5)
            assert (await engine.status(slow_id))["deliveredSessions"] == 0
    finally:
        down.stop()


async def test_pause_keeps_the_cursor_and_resume_continues(engine: Engine, receiver: Receiver) -> None:
    value = export_value(receiver.url)
    export_id = await engine.create_export(value)
    await engine.ingest(sessions(2, seed=1))
    await until(lambda: delivered(engine, export_id, 2), "before pause")
    value["endpointDefinition"]["enableUserSessionExport"] = False
    assert (
        await engine.client.put(f"{OBJECTS}/{export_id}", json={"value": value}, headers=engine.headers)
    ).is_success
    await until(lambda: state_is(engine, export_id, "paused"), "paused")
    await engine.ingest(sessions(3, seed=2))
    await asyncio.sleep(0.5)
    assert len(receiver.sessions()) == 2 and (await engine.status(export_id))["backlog"] == 3
    value["endpointDefinition"]["enableUserSessionExport"] = True
    assert (
        await engine.client.put(f"{OBJECTS}/{export_id}", json={"value": value}, headers=engine.headers)
    ).is_success
    await until(lambda: delivered(engine, export_id, 5), "resumed from the cursor")
    assert len(receiver.sessions()) == 5


async def test_pausing_or_editing_an_export_sends_its_bulks_in_flight_once(
    engine: Engine, receiver: Receiver
) -> None:
    """The bulks under way when an export is edited or paused are decided before its exporter
    stops, as in a hand-over: none is sent again after (they were, by the exporter that followed)."""
    receiver.behaviour.delay_seconds = 0.5
    value = export_value(receiver.url, {"concurrency": 2, "flushMaxSessions": 1})
    export_id = await engine.create_export(value)

    async def put(value: dict[str, Any]) -> None:
        changed = await engine.client.put(
            f"{OBJECTS}/{export_id}", json={"value": value}, headers=engine.headers
        )
        assert changed.is_success, changed.text

    await engine.ingest(sessions(6, seed=1))
    await until(lambda: len(receiver.requests) >= 2, "two bulks in flight")
    behaviour = value["exportBehavior"]
    custom = orjson.loads(behaviour["customConfiguration"]) | {"retries": 2}
    behaviour["customConfiguration"] = orjson.dumps(custom).decode()  # an edit: its exporter starts again
    await put(value)
    await until(lambda: delivered(engine, export_id, 6), "delivered after the edit", within=15)
    await engine.ingest(sessions(4, seed=2))
    await until(lambda: len(receiver.requests) >= 8, "two bulks in flight again")
    value["endpointDefinition"]["enableUserSessionExport"] = False
    await put(value)
    await until(lambda: state_is(engine, export_id, "paused"), "paused")
    await asyncio.sleep(1)  # the bulks that were in flight are answered meanwhile
    value["endpointDefinition"]["enableUserSessionExport"] = True
    await put(value)
    await until(lambda: delivered(engine, export_id, 10), "resumed", within=15)
    await asyncio.sleep(0.5)
    sent = receiver.sessions()
    assert len(sent) == len(set(sent)) == 10, "a bulk in flight was sent again"


async def test_new_export_starts_now_and_can_backfill(engine: Engine, receiver: Receiver) -> None:
    old = sessions(4, seed=1)
    await engine.ingest(old)
    export_id = await engine.create_export(export_value(receiver.url))
    await engine.ingest(sessions(1, seed=2))
    await until(lambda: delivered(engine, export_id, 1), "only the new session")
    moved = await engine.client.put(
        f"/api/v2/exports/{export_id}/position", json={"start": "oldest"}, headers=engine.headers
    )
    assert moved.status_code == 200 and moved.json()["backlog"] == 5
    await until(lambda: len(receiver.sessions()) == 6, "backfilled")
    assert set(old) <= set(receiver.sessions())


async def test_management_zone_filters_sessions(engine: Engine, receiver: Receiver) -> None:
    zone = {
        "name": "shop",
        "rules": [{"attribute": "APPLICATION_NAME", "operator": "EQUALS", "value": "Shop App"}],
    }
    response = await engine.client.post(
        OBJECTS,
        json=[{"schemaId": "builtin:management-zones", "scope": "environment", "value": zone}],
        headers=engine.headers,
    )
    zone_id = response.json()[0]["objectId"]
    export_id = await engine.create_export(
        export_value(receiver.url, exportBehavior={"managementZone": zone_id})
    )
    lines = sessions(40, seed=5, kind="mobile")
    wanted = [line for line in lines if b'"application":"Shop App"' in line]
    assert 0 < len(wanted) < len(lines)
    await engine.ingest(lines)
    await until(lambda: len(receiver.sessions()) == len(wanted), "zone sessions")
    await asyncio.sleep(0.3)
    assert sorted(receiver.sessions()) == sorted(wanted)
    await until(lambda: backlog_is(engine, export_id, 0), "filtered sessions decided")


async def test_an_export_whose_zone_is_gone_exports_nothing_until_it_names_one(
    engine: Engine, receiver: Receiver
) -> None:
    """A zone deleted in the moment its export was changed to name it: the export must not fall
    back to sending every session. Its sessions wait, and go once it names a zone that exists."""
    shop = {
        "name": "shop",
        "rules": [{"attribute": "APPLICATION_NAME", "operator": "EQUALS", "value": "Shop App"}],
    }
    created = await engine.client.post(
        OBJECTS,
        json=[{"schemaId": ZONE_SCHEMA, "scope": "environment", "value": shop}],
        headers=engine.headers,
    )
    zone_id = created.json()[0]["objectId"]
    value = export_value(receiver.url, exportBehavior={"managementZone": zone_id})
    export_id = await engine.create_export(value)
    assert await engine.app.state.store.delete_setting(zone_id, None)  # as the race leaves it
    engine.app.state.exports.poke()
    lines = sessions(40, seed=5, kind="mobile")
    await engine.ingest(lines)

    async def alert_titles() -> list[str]:
        return [a["title"] for a in (await engine.status(export_id))["openAlerts"]]

    await until(lambda: _has(alert_titles, "does not exist"), "the missing zone said")
    await asyncio.sleep(1.0)
    assert receiver.sessions() == []
    sample = await engine.client.get(f"/api/v2/exports/{export_id}/sample", headers=engine.headers)
    assert sample.status_code == 404 and f"management zone {zone_id} does not exist" in sample.text
    again = await engine.client.post(
        OBJECTS,
        json=[{"schemaId": ZONE_SCHEMA, "scope": "environment", "value": shop}],
        headers=engine.headers,
    )
    value["exportBehavior"]["managementZone"] = again.json()[0]["objectId"]
    edited = await engine.client.put(f"{OBJECTS}/{export_id}", json={"value": value}, headers=engine.headers)
    assert edited.status_code == 200, edited.text
    wanted = [line for line in lines if b'"application":"Shop App"' in line]
    await until(lambda: len(receiver.sessions()) == len(wanted), "the waiting zone sessions")
    assert sorted(receiver.sessions()) == sorted(wanted)
    await until(lambda: _lacks(alert_titles, "does not exist"), "the alert closed by the delivery")


async def _has(titles: Callable[[], Awaitable[list[str]]], words: str) -> bool:
    return any(words in title for title in await titles())


async def _lacks(titles: Callable[[], Awaitable[list[str]]], words: str) -> bool:
    return not await _has(titles, words)


async def backlog_is(engine: Engine, export_id: str, count: int) -> bool:
    return bool((await engine.status(export_id))["backlog"] == count)


async def test_metrics_report_deliveries(engine: Engine, receiver: Receiver) -> None:
    export_id = await engine.create_export(export_value(receiver.url))
    await engine.ingest(sessions(3))
    await until(lambda: delivered(engine, export_id, 3), "delivered")
    text = (await engine.client.get("/metrics", headers=engine.headers)).text
    assert f'sessionexport_sessions_delivered_total{{export="{export_id}"}} 3.0' in text
    assert f'sessionexport_backlog_sessions{{export="{export_id}"}} 0.0' in text
    assert "sessionexport_attempt_duration_seconds_bucket" in text
    assert (await engine.client.get("/metrics")).status_code == 401


async def test_failed_attempts_show_in_the_metrics_before_their_bulk_is_decided(
    engine: Engine, receiver: Receiver
) -> None:
    """With retries and backoff a bulk takes minutes to be decided: its failing attempts are
    counted as they fail, so an alert on them fires while the endpoint is still down."""
    receiver.behaviour.script.extend([500] * 4)
    tuning = {"retries": 3, "backoffSeconds": 30, "backoffMaxSeconds": 30}
    export_id = await engine.create_export(export_value(receiver.url, tuning))
    await engine.ingest(sessions(2))
    failed = f'sessionexport_attempts_total{{export="{export_id}",result="error"}} 1.0'

    async def counted() -> bool:
        return failed in (await engine.client.get("/metrics", headers=engine.headers)).text

    await until(counted, "the first failed attempt counted")
    assert (await engine.status(export_id))["deadLetters"] == 0  # the bulk waits for its retry


async def test_an_export_s_counters_are_served_at_zero_before_anything_happens(engine: Engine) -> None:
    """rate() and alert rules need the series from the first scrape, not from the first event."""
    export_id = await engine.create_export(export_value("https://127.0.0.1:9/never"))
    text = (await engine.client.get("/metrics", headers=engine.headers)).text
    for name in (
        "sessions_delivered",
        "sessions_failed",
        "sessions_replayed",
        "items_retried",
        "bytes_delivered",
    ):
        assert f'sessionexport_{name}_total{{export="{export_id}"}} 0.0' in text, name
    assert f'sessionexport_bulks_total{{export="{export_id}",outcome="dead_lettered"}} 0.0' in text
    assert f'sessionexport_attempts_total{{export="{export_id}",result="timeout"}} 0.0' in text
    assert f'sessionexport_attempt_duration_seconds_count{{export="{export_id}"}} 0.0' in text


async def test_metrics_outlive_a_pause_and_go_with_the_export(engine: Engine, receiver: Receiver) -> None:
    value = export_value(receiver.url)
    export_id = await engine.create_export(value)
    await engine.ingest(sessions(3))
    await until(lambda: delivered(engine, export_id, 3), "delivered")

    async def metrics() -> str:
        return (await engine.client.get("/metrics", headers=engine.headers)).text

    def state(text: str, name: str) -> bool:
        return f'sessionexport_export_state{{export="{export_id}",state="{name}"}} 1.0' in text

    assert state(await metrics(), "running")
    value["endpointDefinition"]["enableUserSessionExport"] = False
    paused = await engine.client.put(f"{OBJECTS}/{export_id}", json={"value": value}, headers=engine.headers)
    assert paused.is_success
    await until(lambda: state_is(engine, export_id, "paused"), "paused")
    text = await metrics()
    assert f'sessionexport_sessions_delivered_total{{export="{export_id}"}} 3.0' in text  # no reset
    assert f'sessionexport_bulks_total{{export="{export_id}",outcome="delivered"}}' in text
    assert state(text, "paused") and not state(text, "running")
    deleted = await engine.client.delete(f"{OBJECTS}/{export_id}", headers=engine.headers)
    assert deleted.status_code == 204
    assert f'export="{export_id}"' not in await metrics()  # every series of it, gone


@pytest.mark.parametrize("number", [2**63, 10**23])
async def test_ids_beyond_what_the_store_holds_are_refused_as_bad_requests(
    engine: Engine, receiver: Receiver, number: int
) -> None:
    export_id = await engine.create_export(export_value(receiver.url))
    base = f"/api/v2/exports/{export_id}"
    for method, path, body in [
        ("GET", f"{base}/deadletters/{number}/body", None),
        ("GET", f"{base}/deadletters?beforeId={number}", None),
        ("POST", f"{base}/deadletters/replay", {"ids": [number]}),
        ("PUT", f"{base}/position", {"start": number}),
    ]:
        response = await engine.client.request(method, path, json=body, headers=engine.headers)
        assert response.status_code == 400, (path, response.status_code, response.text)
        assert response.json()["error"]["constraintViolations"], path


async def test_a_replay_of_true_is_no_replay_of_letter_1(engine: Engine, receiver: Receiver) -> None:
    export_id = await engine.create_export(export_value(receiver.url))
    response = await engine.client.post(
        f"/api/v2/exports/{export_id}/deadletters/replay", json={"ids": [True]}, headers=engine.headers
    )
    assert response.status_code == 400
    assert response.json()["error"]["constraintViolations"][0]["path"] == "ids.0"


@pytest.mark.parametrize("start", ["yesterday", -1, 1.5, None, True, "1700000000000", 1_700_000_000, 0])
async def test_a_bad_start_position_gets_one_reason_at_its_path(
    engine: Engine, receiver: Receiver, start: object
) -> None:
    export_id = await engine.create_export(export_value(receiver.url))
    response = await engine.client.put(
        f"/api/v2/exports/{export_id}/position", json={"start": start}, headers=engine.headers
    )
    assert response.status_code == 400
    [violation] = response.json()["error"]["constraintViolations"]
    assert violation["path"] == "start"
    assert "must be 'now', 'oldest' or an epoch-millisecond time from 1973-03-03" in violation["message"]


async def test_a_body_that_is_not_strict_json_is_refused_where_it_is_read(
    engine: Engine, receiver: Receiver
) -> None:
    export_id = await engine.create_export(export_value(receiver.url))
    headers = {**engine.headers, "Content-Type": "application/json"}
    for path, method, body in [
        ("position", "PUT", b'{"start": NaN}'),
        ("deadletters/replay", "POST", b'{"ids": [1e999]}'),
    ]:
        response = await engine.client.request(
            method, f"/api/v2/exports/{export_id}/{path}", content=body, headers=headers
        )
        assert response.status_code == 400
        [violation] = response.json()["error"]["constraintViolations"]
        assert violation["message"].startswith("invalid JSON at byte "), violation


async def test_replay_all_sends_every_pending_letter_once_oldest_first(
    engine: Engine, receiver: Receiver
) -> None:
    """More letters than one page of the store's listing: every one is sent, each read just
    before it goes."""
    receiver.behaviour.script.extend([500] * 60)
    export_id = await engine.create_export(export_value(receiver.url, {"retries": 0, "flushMaxSessions": 1}))
    lines = sessions(60)
    await engine.ingest(lines)
    await until(lambda: dead_letters(engine, export_id, 60), "60 dead letters")
    replay = await engine.client.post(
        f"/api/v2/exports/{export_id}/deadletters/replay", headers=engine.headers
    )
    assert replay.status_code == 200 and replay.json()["replayed"] == 60
    ids = [r["id"] for r in replay.json()["results"]]
    assert ids == sorted(ids) and len(set(ids)) == 60
    assert sorted(receiver.sessions()) == sorted(lines)
    assert (await engine.status(export_id))["deadLetters"] == 0
