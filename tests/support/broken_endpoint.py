"""A session-export endpoint on loopback with faults to plant, for testing ``check-endpoint``.

With no faults it behaves: ``PUT``/``POST /export/events`` takes JSON lines and stores each session
once, by ``(tenantId, userSessionId, startTime)``, a gzip body (``Content-Encoding: gzip``) too;
a line that is not a JSON object gets 400;
with Basic credentials or OAuth2 clients configured it demands them (bearer tokens come from its
own ``/oauth2/token``); ``GET /count`` answers ``{"sessions": <sessions stored>}``. Each field of
``Faults`` breaks one of those. It serves HTTPS with a test CA's certificate (``tls``), or plain
HTTP when ``tls`` is None, from uvicorn in a thread, as ``tests/support/receiver.py`` does.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.receiver import Tls
from tests.support.threaded_server import ThreadedServer

SessionKey = tuple[object, object, object]


@dataclass
class Faults:
    post_fails: bool = False  # POST answers 500
    max_body_bytes: int | None = None  # a larger body answers 413
    slow_seconds: float = 0.0  # sleep this long before answering ...
    slow_over_bytes: int = 0  # ... a body larger than this
    stores_duplicates: bool = False  # every line received is stored (and counted), re-sends too
    accepts_without_credentials: bool = False
    accepts_wrong_credentials: bool = False
    accepts_garbage: bool = False  # 200 for lines that are not JSON (they are dropped)
    refuses_gzip: bool = False  # 415 for a gzip body
    ignores_gzip: bool = False  # 200 for a gzip body, read as nothing
    token_fields: dict[str, Any] = field(default_factory=dict)  # over the token answer; None removes
    echoes_wrong_secret: bool = False  # a refused token request is told its client_secret, JSON-escaped
    post_only: bool = False  # PUT answers 405, before the body is read
    stores_nothing: bool = False  # 200 for every good body, nothing kept (nor counted)
    tokens_used_once: bool = False  # a token is taken once, then refused (401) though not expired
    counted_after: float = 0.0  # what is stored is counted this many seconds later (Elasticsearch's refresh)
    drops_lines_over: int | None = None  # lines longer than this are dropped, the request answered 200


@dataclass
class BrokenEndpoint:
    tls: Tls | None
    faults: Faults = field(default_factory=Faults)
    basic: tuple[str, str] | None = None
    oauth_clients: dict[str, str] = field(default_factory=dict)
    stored: list[SessionKey] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)  # every body that reached /export/events
    requests: list[tuple[str, str]] = field(default_factory=list)  # ... with its method and content type
    token_requests: list[dict[str, str]] = field(default_factory=list)
    port: int = 0
    _tokens: set[str] = field(default_factory=set)
    _stored_at: list[float] = field(default_factory=list)  # when each of ``stored`` was stored
    _server: ThreadedServer | None = None

    @property
    def origin(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.origin}/export/events"

    @property
    def token_url(self) -> str:
        return f"{self.origin}/oauth2/token"

    @property
    def count_url(self) -> str:
        return f"{self.origin}/count"

    def start(self) -> BrokenEndpoint:
        app = Starlette(
            routes=[
                Route("/export/events", self._export, methods=["PUT", "POST"]),
                Route("/oauth2/token", self._token, methods=["POST"]),
                Route("/count", self._count, methods=["GET"]),
            ]
        )
        cert, key = (self.tls.cert, self.tls.key) if self.tls else (None, None)
        self._server = ThreadedServer(app, cert, key, lifespan="off").start()
        self.port = self._server.port
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    async def _export(self, request: Request) -> Response:
        if self.faults.post_only and request.method == "PUT":
            return Response(status_code=405, headers={"Allow": "POST"})
        body = await request.body()
        if request.headers.get("content-encoding") == "gzip":
            if self.faults.refuses_gzip:
                return Response(status_code=415)
            body = b"" if self.faults.ignores_gzip else gzip.decompress(body)
        self.bodies.append(body)
        self.requests.append((request.method, request.headers.get("content-type", "")))
        faults = self.faults
        if faults.slow_seconds and len(body) > faults.slow_over_bytes:
            await asyncio.sleep(faults.slow_seconds)
        if faults.max_body_bytes is not None and len(body) > faults.max_body_bytes:
            return Response(status_code=413)
        if not self._authorized(request.headers.get("authorization", "")):
            return Response(
                status_code=401, headers={"WWW-Authenticate": "Basic" if self.basic else "Bearer"}
            )
        if faults.post_fails and request.method == "POST":
            return Response(status_code=500)
        sessions, garbage = parse_lines(body)
        if garbage and not faults.accepts_garbage:
            return JSONResponse({"error": f"{garbage} line(s) are not JSON objects"}, status_code=400)
        if not faults.stores_nothing:
            self._store(sessions)
        return Response(status_code=200)

    def _store(self, sessions: list[dict[str, Any]]) -> None:
        known = set(self.stored)
        for session in sessions:
            too_long = self.faults.drops_lines_over
            if too_long is not None and len(orjson.dumps(session)) > too_long:
                continue
            key = (session.get("tenantId"), session.get("userSessionId"), session.get("startTime"))
            if self.faults.stores_duplicates or key not in known:
                self.stored.append(key)
                self._stored_at.append(time.monotonic())
                known.add(key)

    def _authorized(self, header: str) -> bool:
        if self.basic is None and not self.oauth_clients:
            return True
        if not header:
            return self.faults.accepts_without_credentials
        return self._valid_credentials(header) or self.faults.accepts_wrong_credentials

    def _valid_credentials(self, header: str) -> bool:
        if self.basic is not None:
            user, password = self.basic
            return header == "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        token = header.removeprefix("Bearer ")
        if not header.startswith("Bearer ") or token not in self._tokens:
            return False
        if self.faults.tokens_used_once:
            self._tokens.discard(token)
        return True

    async def _token(self, request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        self.token_requests.append(form)
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        if form.get("grant_type") != "client_credentials" or self.oauth_clients.get(client_id) != secret:
            refusal = {"error": "invalid_client"}
            if self.faults.echoes_wrong_secret:
                refusal["error_description"] = f"{secret} is not the secret of {client_id}"
            # json.dumps escapes what is not ASCII (\u00e4) and quotes: the secret is not there byte for byte
            return Response(json.dumps(refusal), status_code=401, media_type="application/json")
        token = secrets.token_urlsafe(16)
        self._tokens.add(token)
        answer: dict[str, Any] = {"access_token": token, "token_type": "Bearer", "expires_in": 300}
        answer.update(self.faults.token_fields)
        return JSONResponse({k: v for k, v in answer.items() if v is not None})

    async def _count(self, _: Request) -> Response:
        visible = time.monotonic() - self.faults.counted_after
        return JSONResponse({"sessions": sum(1 for at in self._stored_at if at <= visible)})


def parse_lines(body: bytes) -> tuple[list[dict[str, Any]], int]:
    """The session objects of a body, and how many non-empty lines were not JSON objects."""
    sessions, garbage = [], 0
    for line in body.split(b"\n"):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            sessions.append(value)
        else:
            garbage += 1
    return sessions, garbage
