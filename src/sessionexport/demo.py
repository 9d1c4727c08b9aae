"""``sessionexport demo``: the whole system on one machine, in one command.

    generator ──sessions──▶ POST /api/v2/usersessions ─┐
              ──events────▶ POST /api/v2/rum/events ───┴▶ serve (SQLite) ──export, OAuth 2.0──▶ receive (HTTPS)

It starts a receiver (``sessionexport receive`` with its self-signed certificate and token
endpoint) in a child process, the server in this process (trusting that certificate), creates an
API token and an export configuration pointing at the receiver, feeds sessions and RUM events at
a steady rate, and prints what arrived where. Ctrl-C (or ``--duration``) stops everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn
from rich.console import Console
from rich.markup import escape

from sessionexport import tokens
from sessionexport.api.app import create_app
from sessionexport.clock import now_ms
from sessionexport.config import ServerConfig
from sessionexport.folders import make_private_dir
from sessionexport.generate.events import EventOptions, generate_event_streams
from sessionexport.generate.sessions import GeneratorOptions, generate_lines
from sessionexport.http_limits import BoundedHttpToolsProtocol
from sessionexport.ingest.sessionizer import SessionizerSettings
from sessionexport.listening import bind
from sessionexport.settings.schemas import EXPORT_SCHEMA
from sessionexport.settings.secrets import create_private_file
from sessionexport.store import create_store

out = Console(soft_wrap=True, emoji=False)  # what the demo shows: where to look, the token, the counts
console = Console(stderr=True, soft_wrap=True, emoji=False)  # what went wrong
EXTERNAL_ID = "sessionexport-demo"
CLIENT_ID = "demo-exporter"
CLIENT_SECRET_FILE = "oauth-client-secret"  # noqa: S105 (a file name)
API_TOKEN_NAME = "demo"  # noqa: S105 (a name, not a secret): the demo revokes its earlier ones


@dataclass(frozen=True)
class DemoOptions:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080
    receiver_port: int = 8443
    rate: float = 5.0  # completed sessions per second, plus as many sessions again as RUM events
    duration: float = 0.0  # seconds; 0: until interrupted


async def run_demo(options: DemoOptions) -> int:
    """Run until Ctrl-C or the duration; return how many sessions the receiver got."""
    make_private_dir(options.data_dir)
    for noisy in ("httpx", "uvicorn.error"):  # a line per request or per start-up step would bury the counts
        logging.getLogger(noisy).setLevel(logging.WARNING)
    secret = _client_secret(options.data_dir)
    listening = bind(options.host, options.port)  # a taken port is said now, before anything starts
    async with _receiver(options, secret) as receiver:
        config = ServerConfig(
            data_dir=options.data_dir / "server",
            ca_bundle=receiver.ca_file,
            sessionizer=SessionizerSettings(settle_ms=2_000),
        )
        token = await _token(config)
        server = _Server(
            uvicorn.Config(
                create_app(config),
                host=options.host,
                port=options.port,
                http=BoundedHttpToolsProtocol,
                log_config=None,
                access_log=False,
            )
        )
        serving = asyncio.create_task(server.serve(sockets=[listening]), name="server")
        api = f"http://{options.host}:{options.port}"
        try:
            await _until_up(api, serving)
            await _configure_export(api, token, receiver, secret)
            _welcome(api, token, receiver)
            feeding = asyncio.create_task(_feed(api, token, options.rate), name="generator")
            received = await _report(api, token, receiver, secret, options.duration, feeding)
        finally:
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await serving
    return received


def _client_secret(data_dir: Path) -> str:
    """The receiver's OAuth client secret, the same in every run: the export an earlier run saved
    holds it, and runs until this run's update reaches its exporter. A new secret each run made
    the first sessions of every later run dead letters (HTTP 401 from the token endpoint)."""
    path = data_dir / CLIENT_SECRET_FILE
    create_private_file(path, secrets.token_urlsafe(16).encode())  # False: an earlier run made it
    return path.read_text().strip()


class _Server(uvicorn.Server):
    """The server inside the demo: Ctrl-C belongs to the demo, which stops the server last."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass(frozen=True)
class _Receiver:
    base: str
    ca_file: Path

    @property
    def url(self) -> str:
        return f"{self.base}/export/events"


@contextlib.asynccontextmanager
async def _receiver(options: DemoOptions, secret: str) -> AsyncIterator[_Receiver]:
    folder = options.data_dir / "receiver"
    command = [sys.executable, "-m", "sessionexport", "receive", "--port", str(options.receiver_port)]
    command += ["--data-dir", str(folder)]
    # The OAuth client in the environment, not in the arguments, which `ps` shows to everyone.
    client = {"SESSIONEXPORT_RECEIVER_OAUTH_CLIENT": f"{CLIENT_ID}:{secret}"}
    with (options.data_dir / "receiver.log").open("w") as log:
        process = await asyncio.create_subprocess_exec(
            *command, stdout=log, stderr=log, env={**os.environ, **client}
        )
        receiver = _Receiver(f"https://127.0.0.1:{options.receiver_port}", folder / "receiver-cert.pem")
        try:
            await _until_receiving(receiver, process)
            yield receiver
        finally:
            await _stop(process)


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):  # a Ctrl-C in the terminal reached it already
        process.send_signal(signal.SIGINT)
    try:
        await asyncio.wait_for(process.wait(), 10)
    except TimeoutError:
        process.kill()
        await process.wait()


async def _until_receiving(
    receiver: _Receiver, process: asyncio.subprocess.Process, within: float = 30
) -> None:
    deadline = time.monotonic() + within
    while True:
        if process.returncode is not None:
            raise RuntimeError(
                f"the receiver did not start (see {receiver.ca_file.parent.parent / 'receiver.log'})"
            )
        with contextlib.suppress(httpx.HTTPError, OSError, ssl.SSLError):
            if receiver.ca_file.exists():
                async with _local_client(
                    verify=ssl.create_default_context(cafile=str(receiver.ca_file))
                ) as client:
                    if (await client.get(f"{receiver.base}/health")).status_code == 200:
                        return
        if time.monotonic() > deadline:
            raise RuntimeError("the receiver did not answer within 30 s")
        await asyncio.sleep(0.2)


async def _token(config: ServerConfig) -> str:
    """An API token with every scope: for the API (and the UI) while the demo runs. Those of
    earlier runs are revoked: the demo's data directory is its own, and its tokens see all."""
    store = create_store(config.data_dir, config.database_url)
    await store.open()
    try:
        now = now_ms()
        for earlier in await store.list_tokens():
            if earlier.name == API_TOKEN_NAME and earlier.revoked_at is None:
                await store.revoke_token(earlier.id, now)
        new = tokens.new_token(API_TOKEN_NAME, frozenset(s.value for s in tokens.Scope), now)
        await store.add_token(new.record)
        return new.token
    finally:
        await store.close()


async def _until_up(api: str, serving: asyncio.Task[None]) -> None:
    async with _local_client() as client:
        for _ in range(150):
            if serving.done():
                serving.result()  # raises why it stopped (e.g. the port is taken)
                raise RuntimeError("the server stopped")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{api}/health")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError("the server did not start")


async def _configure_export(api: str, token: str, receiver: _Receiver, secret: str) -> None:
    value = {
        "endpointDefinition": {
            "endpointUrl": receiver.url,
            "contentType": "application/json",
            "usePost": True,
        },
        "authentication": {
            "active": True,
            "authType": "oauth2",
            "oAuth2": {
                "accessTokenUrl": f"{receiver.base}/oauth2/token",
                "clientId": CLIENT_ID,
                "clientSecret": secret,
            },
        },
        "sendDirect": {"active": False},
        "exportBehavior": {"customConfiguration": orjson.dumps({"flushIntervalSeconds": 1}).decode()},
    }
    body = [{"schemaId": EXPORT_SCHEMA, "scope": "environment", "externalId": EXTERNAL_ID, "value": value}]
    async with _local_client(headers={"Authorization": f"Api-Token {token}"}) as client:
        response = await client.post(f"{api}/api/v2/settings/objects", json=body)
    if response.status_code != 200:
        raise RuntimeError(f"creating the export failed: {response.text}")


def _welcome(api: str, token: str, receiver: _Receiver) -> None:
    out.print("\n[bold]sessionexport demo[/bold] is running (Ctrl-C stops it)")
    out.print(f"  web UI:                    {api}/ui  (log in with the token below)")
    out.print(f"  API and its documentation: {api}/docs")
    out.print(f"  token (all scopes):        {token}")
    out.print(f"  receiver:                  {receiver.url}  (OAuth 2.0 client credentials)")
    out.print(f"  try: curl -H 'Authorization: Api-Token {token}' '{api}/api/v2/usersessions?pageSize=1'\n")


async def _feed(api: str, token: str, rate: float) -> None:
    """Completed sessions and RUM event streams of new sessions, about ``rate`` of each per second."""
    headers = {"Authorization": f"Api-Token {token}", "Content-Type": "application/x-ndjson"}
    async with _local_client(headers=headers, timeout=30) as client:
        seed = int(time.time())
        while True:
            count = max(1, round(rate))
            sessions = list(generate_lines(count, seed, GeneratorOptions(end_ms=now_ms(), span_ms=60_000)))
            events = list(generate_event_streams(count, seed, EventOptions(end_ms=now_ms(), span_ms=600_000)))
            await client.post(f"{api}/api/v2/usersessions", content=b"\n".join(sessions))
            await client.post(f"{api}/api/v2/rum/events", content=b"\n".join(events))
            seed += 1
            await asyncio.sleep(1)


async def _report(
    api: str, token: str, receiver: _Receiver, secret: str, duration: float, feeding: asyncio.Task[None]
) -> int:
    """Print the counts every few seconds until Ctrl-C (or SIGTERM) or ``duration`` is over."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):  # the demo stops in order: feed, server, receiver
        loop.add_signal_handler(signum, stop.set)
    started, received = time.monotonic(), 0
    verify = ssl.create_default_context(cafile=str(receiver.ca_file))
    async with (
        _local_client(headers={"Authorization": f"Api-Token {token}"}) as client,
        _local_client(verify=verify) as at_receiver,
    ):
        try:
            while not duration or time.monotonic() - started < duration:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 3)
                if stop.is_set():
                    break
                if feeding.done():
                    feeding.result()
                try:
                    delivered = await _delivered(client, api)
                    received = await _received(at_receiver, receiver, secret)
                except httpx.HTTPError as exc:  # e.g. a Ctrl-C in the terminal stopped the receiver first
                    console.print(f"  (counts unavailable: {escape(str(exc))})", highlight=False)
                    continue
                out.print(
                    f"  delivered by the export: {delivered:>6}   stored by the receiver: {received:>6}"
                )
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            feeding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeding
    if stop.is_set():
        out.print("demo stopped")
    return received


def _local_client(**options: Any) -> httpx.AsyncClient:
    """A client for the demo's own processes, on loopback: no proxy taken from the environment
    (``HTTPS_PROXY``), which could not reach them."""
    return httpx.AsyncClient(trust_env=False, **options)


async def _delivered(client: httpx.AsyncClient, api: str) -> int:
    objects = (await client.get(f"{api}/api/v2/settings/objects", params={"schemaIds": EXPORT_SCHEMA})).json()
    delivered = 0
    for item in objects.get("items", []):
        status: dict[str, Any] = (await client.get(f"{api}/api/v2/exports/{item['objectId']}/status")).json()
        delivered += int(status.get("deliveredSessions", 0))
    return delivered


async def _received(client: httpx.AsyncClient, receiver: _Receiver, secret: str) -> int:
    """The receiver's own count (its read API takes the same credentials as its endpoint)."""
    form = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": secret}
    access = (await client.post(f"{receiver.base}/oauth2/token", data=form)).json()["access_token"]
    counts = await client.get(
        f"{receiver.base}/received/counts", headers={"Authorization": f"Bearer {access}"}
    )
    return int(counts.json().get("sessions", 0))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
