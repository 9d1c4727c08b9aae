"""A real HTTPS receiver on loopback for tests: records what it gets, misbehaves on request.

It runs uvicorn in a thread with a certificate from a test CA (trustme), so the exporter's TLS
verification is exercised for real. Behaviour is set per test: status codes to answer, stalls,
connection resets, Basic credentials to demand, an OAuth2 client-credentials token endpoint.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import trustme
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.threaded_server import ThreadedServer

STALL = "stall"  # answer after the client has given up
RESET = "reset"  # close the connection without answering
TRICKLE = "trickle"  # 200 and its headers at once, then the answer a byte every 0.2 s


@dataclass(frozen=True)
class Answer:
    """A scripted answer: a status with headers, and a body, or ``endless`` megabytes of one."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    endless: bool = False


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def lines(self) -> list[bytes]:
        return [line for line in self.body.split(b"\n") if line]


@dataclass
class Behaviour:
    script: deque[int | str | Answer] = field(default_factory=deque)  # consumed one per request; then 200
    basic: tuple[str, str] | None = None
    oauth_clients: dict[str, str] = field(default_factory=dict)
    token_ttl: int = 300
    stall_seconds: float = 5.0
    token_status: int = 200
    delay_seconds: float = 0.0  # before every answer
    token_extra: dict[str, object] = field(default_factory=dict)  # merged into every token answer
    max_lines: int | None = None  # a request of more lines gets 413 (before the script is read)


class Receiver:
    def __init__(self, tls: Tls) -> None:
        self.tls = tls
        self.behaviour = Behaviour()
        self.requests: list[Received] = []
        self.token_requests: list[dict[str, str]] = []
        self.tokens: dict[str, float] = {}  # access token -> expiry (monotonic)
        self.streamed = 0  # bytes of endless and trickling answers produced so far
        self._server: ThreadedServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/export/events"

    @property
    def token_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/oauth2/token"

    def sessions(self) -> list[bytes]:
        """Every session line of every answered-200 request (Elasticsearch action lines excluded)."""
        return [
            line
            for r in self.requests
            if r.path == "/export/events" and getattr(r, "answered", 200) == 200
            for line in r.lines
            if not line.startswith(b'{"index"')
        ]

    def start(self) -> Receiver:
        app = Starlette(
            routes=[
                Route("/export/events", self._export, methods=["PUT", "POST"]),
                Route("/_bulk", self._export, methods=["POST"]),  # answered as /export/events is
                Route("/oauth2/token", self._token, methods=["POST"]),
            ]
        )
        self._server = ThreadedServer(app, self.tls.cert, self.tls.key).start()
        self.port = self._server.port
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    async def _export(self, request: Request) -> Response:
        body = await request.body()
        received = Received(request.method, request.url.path, dict(request.headers), body, time.monotonic())
        too_large = self.behaviour.max_lines is not None and len(received.lines) > self.behaviour.max_lines
        action = 413 if too_large else self.behaviour.script.popleft() if self.behaviour.script else 200
        if not self._authorized(request):
            received.answered = 401  # type: ignore[attr-defined]
            self.requests.append(received)
            return Response(status_code=401)
        status = action.status if isinstance(action, Answer) else action
        received.answered = status if isinstance(status, int) else 0  # type: ignore[attr-defined]
        if self.behaviour.delay_seconds:
            await asyncio.sleep(self.behaviour.delay_seconds)
        self.requests.append(received)
        if action == STALL:
            await asyncio.sleep(self.behaviour.stall_seconds)
            return Response(status_code=200)
        if action == RESET:
            # uvicorn's request cycle owns the connection; dropping it is what a crashing peer does.
            request.receive.__self__.transport.abort()  # type: ignore[attr-defined]
            return Response(status_code=500)
        if action == TRICKLE:
            return StreamingResponse(self._trickle(), status_code=200)
        if isinstance(action, Answer):
            if action.endless:
                return StreamingResponse(
                    self._endless(request), status_code=action.status, headers=action.headers
                )
            return Response(action.body, status_code=action.status, headers=action.headers)
        return Response(status_code=int(action), headers={"Server": "test receiver"})

    async def _trickle(self) -> AsyncIterator[bytes]:
        for _ in range(100):
            self.streamed += 1
            yield b" "
            await asyncio.sleep(0.2)

    async def _endless(self, request: Request) -> AsyncIterator[bytes]:
        chunk = b"x" * (1 << 20)
        for _ in range(1024):  # a gigabyte, unless the client goes away
            if await request.is_disconnected():
                return
            self.streamed += len(chunk)
            yield chunk

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if self.behaviour.basic:
            user, password = self.behaviour.basic
            return header == "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        if self.behaviour.oauth_clients:
            token = header.removeprefix("Bearer ")
            return header.startswith("Bearer ") and self.tokens.get(token, 0) > time.monotonic()
        return True

    async def _token(self, request: Request) -> Response:
        form = dict(await request.form())
        self.token_requests.append({k: str(v) for k, v in form.items()})
        if self.behaviour.token_status != 200:
            return JSONResponse({"error": "server_error"}, status_code=self.behaviour.token_status)
        client_id, secret = str(form.get("client_id", "")), str(form.get("client_secret", ""))
        if (
            form.get("grant_type") != "client_credentials"
            or self.behaviour.oauth_clients.get(client_id) != secret
        ):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        token = secrets.token_urlsafe(16)
        self.tokens[token] = time.monotonic() + self.behaviour.token_ttl
        body: dict[str, object] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.behaviour.token_ttl,
        }
        body |= self.behaviour.token_extra
        if form.get("scope"):
            body["scope"] = str(form["scope"])
        return JSONResponse(body)

    def expire_tokens(self) -> None:
        """Invalidate every issued token (the exporter must fetch a new one on the 401)."""
        self.tokens.clear()


@dataclass
class Tls:
    """A test CA and a certificate for 127.0.0.1/localhost signed by it."""

    ca_file: Path
    cert: Path
    key: Path

    @classmethod
    def create(cls, folder: Path) -> Tls:
        ca = trustme.CA()
        issued = ca.issue_cert("127.0.0.1", "localhost")
        tls = cls(folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
        ca.cert_pem.write_to_path(str(tls.ca_file))
        issued.cert_chain_pems[0].write_to_path(str(tls.cert))
        issued.private_key_pem.write_to_path(str(tls.key))
        return tls
