"""No route reads a body larger than it takes, before any token or login is checked: the ingest
routes within their configurable limit, every other route within a small one (real apps)."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from sessionexport import request_bodies
from sessionexport.api.app import create_app
from sessionexport.config import ServerConfig
from sessionexport.generate.sessions import GeneratorOptions, generate_lines
from sessionexport.receiver.app import ReceiverConfig, create_receiver_app
from sessionexport.receiver.auth import Authenticator, TokenIssuer
from sessionexport.receiver.store import create_received_store
from sessionexport.request_bodies import SMALL_BODY_BYTES
from sessionexport.throttle import Throttle
from tests.conftest import ALL_SCOPES, Api, make_token

TOO_BIG = b"x" * (SMALL_BODY_BYTES + 1)


async def test_a_settings_body_over_the_limit_is_refused_before_the_token_is_checked(api: Api) -> None:
    response = await api.client.post(
        "/api/v2/settings/objects", content=TOO_BIG, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert (
        response.json()["error"]["message"]
        == f"The request body exceeds the limit of {SMALL_BODY_BYTES} bytes"
    )


async def test_a_login_form_over_the_limit_is_refused(api: Api) -> None:
    response = await api.client.post(
        "/ui/login",
        content=b"token=" + TOO_BIG,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413


async def test_ingest_takes_bodies_up_to_its_own_limit(server_config: ServerConfig) -> None:
    app = create_app(replace(server_config, max_body_bytes=4 * 1024 * 1024))
    lines = list(generate_lines(200, seed=3, options=GeneratorOptions(kind="web", actions=(5, 6))))
    body = b"\n".join(lines)
    assert len(body) > SMALL_BODY_BYTES  # more than any other route takes
    async with app.router.lifespan_context(app):
        token = await make_token(app.state.store, ALL_SCOPES)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api.test"
        ) as client:
            response = await client.post(
                "/api/v2/usersessions",
                content=body,
                headers={"Content-Type": "application/x-ndjson", "Authorization": f"Api-Token {token}"},
            )
    assert response.status_code == 200 and response.json()["accepted"] == 200


async def test_the_receivers_token_endpoint_takes_a_small_body_only(tmp_path: Path) -> None:
    issuer = TokenIssuer({"exporter": "s3cret"}, b"k" * 32)
    config = ReceiverConfig(store=create_received_store(tmp_path), auth=Authenticator(tokens=issuer))
    app = create_receiver_app(config)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://receiver.test") as client:
            form = {"Content-Type": "application/x-www-form-urlencoded"}
            token = await client.post("/oauth2/token", content=b"grant_type=" + TOO_BIG, headers=form)
            just_over = await client.post("/oauth2/token", content=b"x" * (16 * 1024 + 1), headers=form)
            good = b"grant_type=client_credentials&client_id=exporter&client_secret=s3cret"
            issued = (await client.post("/oauth2/token", content=good, headers=form)).json()
            events = await client.put(
                "/export/events",
                content=b"\n".join(generate_lines(200, seed=4)),
                headers={
                    "Content-Type": "application/x-ndjson",
                    "Authorization": f"Bearer {issued['access_token']}",
                },
            )
    for refused in (token, just_over):  # told by its Content-Length, in OAuth's shape
        assert refused.status_code == 413
        assert refused.json() == {"error": "invalid_request", "error_description": "request body too large"}
    assert events.status_code == 200  # the export path reads within its own, larger limit


async def test_a_client_that_goes_away_mid_body_stores_nothing_and_is_no_server_error(
    server_config: ServerConfig, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real app, driven at the ASGI level: the body stops after 53 of 1,000 declared bytes.
    Said in the log, but not once per client: a thousand gone at once would flood it."""
    monkeypatch.setattr(request_bodies, "_GONE", Throttle())
    app = create_app(server_config)
    partial: MutableMapping[str, Any] = {
        "type": "http.request",
        "body": b'{"tenantId":"t","userSessionId":"1","startTime":16221',
        "more_body": True,
    }
    messages: list[MutableMapping[str, Any]] = [partial, {"type": "http.disconnect"}]
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v2/usersessions",
        "raw_path": b"/api/v2/usersessions",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"content-type", b"application/x-ndjson"),
            (b"content-length", b"1000"),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8080),
    }
    async with app.router.lifespan_context(app):
        token = await make_token(app.state.store, ALL_SCOPES)
        scope["headers"].append((b"authorization", f"Api-Token {token}".encode()))
        with caplog.at_level(logging.INFO):
            await app(scope, receive, send)  # raises nothing
            messages += [partial, {"type": "http.disconnect"}]
            await app(scope, receive, send)  # another, at once: counted, not said again now
        assert await app.state.store.count_sessions() == 0
    assert sent == []  # no one to answer
    assert caplog.text.count("the client went away before its body was read") == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
