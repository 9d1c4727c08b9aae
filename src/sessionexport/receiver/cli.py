"""``sessionexport receive`` (the receiving endpoint) and ``sessionexport received`` (what it got)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import shlex
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.markup import escape

from sessionexport.cli_options import (
    checked,
    checked_lines,
    emit,
    env,
    err,
    fail,
    require_existing,
    require_store_opens,
    run_on_store,
    to_stdout,
)
from sessionexport.logs import announce, report
from sessionexport.receiver.auth import parse_pair
from sessionexport.receiver.bulk import FaultPlan
from sessionexport.receiver.store import ReceivedStore, create_received_store, stored_at
from sessionexport.receiver.store.records import DOCUMENT, LEGACY, SESSION, RequestRecord
from sessionexport.request_bodies import DEFAULT_BUFFER_BYTES
from sessionexport.settings.validation import is_loopback
from sessionexport.store.base import StoreError
from sessionexport.store.locations import sqlite_file

T = TypeVar("T")
DEFAULT_RECEIVER_DIR = Path("data/receiver")
PAGE_DOCUMENTS = 1000  # read and printed at a time: all of them in turn


ReceiverDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar=env("RECEIVER_DATA_DIR"),
        file_okay=False,
        help="Where the receiver keeps its data.",
    ),
]
Storage = Annotated[
    str | None,
    typer.Option(
        envvar=env("RECEIVER_STORAGE"),
        help="files (rotating NDJSON), sqlite:///PATH or postgresql://...; default: SQLite in the data directory.",
    ),
]


def receive(
    host: Annotated[
        str, typer.Option(envvar=env("RECEIVER_HOST"), help="Interface to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(envvar=env("RECEIVER_PORT"), min=0, max=65535, help="Port to listen on.")
    ] = 3000,
    data_dir: ReceiverDir = DEFAULT_RECEIVER_DIR,
    storage: Storage = None,
    http: Annotated[
        bool, typer.Option("--http", envvar=env("RECEIVER_HTTP"), help="Plain HTTP, for local testing only.")
    ] = False,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            envvar=env("RECEIVER_TLS_CERT"), exists=True, dir_okay=False, help="Certificate chain (PEM)."
        ),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(envvar=env("RECEIVER_TLS_KEY"), exists=True, dir_okay=False, help="Private key (PEM)."),
    ] = None,
    basic: Annotated[
        str | None,
        typer.Option(
            envvar=env("RECEIVER_BASIC"),
            show_default=False,
            callback=checked(lambda value: parse_pair(value, "the value")),
            help="Require Basic auth USER:PASS.",
        ),
    ] = None,
    oauth_client: Annotated[
        list[str] | None,
        typer.Option(
            envvar=env("RECEIVER_OAUTH_CLIENT"),
            show_default=False,
            callback=checked_lines(lambda value: parse_pair(value, "the value")),
            help="ID:SECRET of a client of the token endpoint POST /oauth2/token (repeatable; in the environment"
            " variable, one per line); requires Bearer tokens.",
        ),
    ] = None,
    token_ttl: Annotated[
        int,
        typer.Option(
            envvar=env("RECEIVER_TOKEN_TTL"),
            min=10,
            max=86400,
            help="Lifetime (expires_in) of issued tokens, seconds (at most a day).",
        ),
    ] = 300,
    jwks: Annotated[
        str | None,
        typer.Option(
            envvar=env("RECEIVER_JWKS"),
            show_default=False,
            help="Accept Bearer JWTs signed by keys of this JWKS (a file, or an https:// URL).",
        ),
    ] = None,
    jwt_issuer: Annotated[
        str | None,
        typer.Option(envvar=env("RECEIVER_JWT_ISSUER"), show_default=False, help="Required iss of JWTs."),
    ] = None,
    jwt_audience: Annotated[
        str | None,
        typer.Option(envvar=env("RECEIVER_JWT_AUDIENCE"), show_default=False, help="Required aud of JWTs."),
    ] = None,
    events_path: Annotated[
        str, typer.Option(envvar=env("RECEIVER_EVENTS_PATH"), help="Path of the export endpoint.")
    ] = ("/export/events"),
    es_version: Annotated[
        int,
        typer.Option(
            envvar=env("RECEIVER_ES_VERSION"), min=7, max=8, help="_bulk behaves as Elasticsearch 7 or 8."
        ),
    ] = 8,
    bulk_fail: Annotated[
        list[str] | None,
        typer.Option(
            envvar=env("RECEIVER_BULK_FAIL"),
            show_default=False,
            callback=checked_lines(lambda value: FaultPlan.parse([value])),
            help="Make _bulk items fail on purpose: STATUS:ID_REGEX[:TIMES] (repeatable; in the environment"
            " variable, one per line), e.g. 429:7$:1 (ids ending in 7, once).",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            envvar=env("RECEIVER_WORKERS"),
            min=1,
            max=64,
            help="Processes serving requests (SQLite or PostgreSQL storage); --bulk-fail counts per process.",
        ),
    ] = 1,
    max_body_mb: Annotated[
        float,
        typer.Option(
            envvar=env("RECEIVER_MAX_BODY_MB"),
            min=0.01,
            help="Largest accepted body, in MiB (decoded, for a compressed one); larger gets 413.",
        ),
    ] = 50,
    buffer_mb: Annotated[
        int,
        typer.Option(
            envvar=env("RECEIVER_BUFFER_MB"),
            min=1,
            help="MiB of request bodies the export path and _bulk hold at once, per process; a request"
            " beyond waits for room (its body unread), then gets 503 (_bulk: 429) after 10 s.",
        ),
    ] = DEFAULT_BUFFER_BYTES >> 20,
) -> None:
    """Receive session exports: PUT/POST /export/events, /oauth2/token, Elasticsearch-compatible /_bulk.

    Each line of a request is validated as a session; a request is stored all or nothing, and
    answered 200 only once durable. HTTPS with a self-signed certificate made in the data
    directory unless --tls-cert/--tls-key are given; --http for plain local testing.
    """
    import uvicorn

    from sessionexport import listening
    from sessionexport.http_limits import BoundedHttpToolsProtocol
    from sessionexport.receiver.app import OPTIONS_VARIABLE, ReceiverOptions, create_receiver_app

    if (tls_cert is None) != (tls_key is None):
        fail("--tls-cert and --tls-key go together")
    if workers > 1 and storage == "files":
        fail("--storage files is written by one process: use --workers 1, SQLite or PostgreSQL")
    options = ReceiverOptions(
        data_dir=str(data_dir),
        storage=storage,
        basic=basic,
        oauth_clients=tuple(oauth_client or ()),
        token_ttl=token_ttl,
        jwks=jwks,
        jwt_issuer=jwt_issuer,
        jwt_audience=jwt_audience,
        events_path=events_path,
        es_version=es_version,
        bulk_fail=tuple(bulk_fail or ()),
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        buffer_bytes=buffer_mb << 20,
    )
    try:
        config = options.build()  # also checks the options before any worker starts
    except (ValueError, StoreError, OSError) as exc:
        fail(str(exc))
    if http and (tls_cert or tls_key):
        fail("--http serves plain HTTP, without --tls-cert and --tls-key: give those, or --http")
    require_store_opens(lambda: create_received_store(data_dir, storage))
    if http and not is_loopback(host):
        report(
            err,
            logging.WARNING,
            f"plain HTTP on {host}: sessions and credentials cross the network in clear; leave out --http",
        )
    cert_file, key_file = (None, None) if http else _tls_files(data_dir, host, tls_cert, tls_key)
    try:
        sock = listening.bind(host, port)
    except OSError as exc:
        fail(str(exc))
    where = listening.url_of("http" if http else "https", host, sock)
    announce(err, f"receiving on {where}{events_path}  (_bulk: {where}/_bulk, data: {data_dir})")
    if workers == 1:
        if not listening.serve(
            create_receiver_app(config), sock, ssl_certfile=cert_file, ssl_keyfile=key_file
        ):
            raise typer.Exit(3)
        return
    port = sock.getsockname()[1]  # the one chosen for --port 0
    sock.close()  # uvicorn binds the port again, for its worker processes to share
    os.environ[OPTIONS_VARIABLE] = options.to_environment()
    listening.raise_open_files_limit()  # the worker processes inherit it
    uvicorn.run(
        "sessionexport.receiver.app:app_from_environment",
        factory=True,
        workers=workers,
        http=BoundedHttpToolsProtocol,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        limit_concurrency=listening.MAX_CONNECTIONS,
        ssl_certfile=cert_file,
        ssl_keyfile=key_file,
    )


def _tls_files(data_dir: Path, host: str, tls_cert: Path | None, tls_key: Path | None) -> tuple[str, str]:
    """The operator's certificate, else the self-signed one of the data directory; says which, and its fingerprint."""
    from sessionexport.receiver.tls import operator_certificate, self_signed

    if tls_cert and tls_key:
        try:
            fingerprint = operator_certificate(tls_cert, tls_key)
        except ValueError as exc:
            fail(f"cannot use --tls-cert with --tls-key: {exc}")
        announce(err, f"TLS certificate {tls_cert} (SHA-256 {fingerprint})")
        return str(tls_cert), str(tls_key)
    cert = self_signed(data_dir, (host,))
    state = ("generated" + (f" ({cert.why})" if cert.why else "")) if cert.generated else "reused"
    announce(err, f"self-signed TLS certificate {state}: {cert.cert_path}")
    announce(err, f"  SHA-256 fingerprint {cert.fingerprint}")
    announce(err, f"  senders trust it with --ca-bundle {shlex.quote(str(cert.cert_path))}")  # as pasted
    return str(cert.cert_path), str(cert.key_path)


# -- received --------------------------------------------------------------------------------------

received_app = typer.Typer(help="What `receive` got: counts, sessions, requests.", no_args_is_help=True)


def _with_store(data_dir: Path, storage: str | None, work: Callable[[ReceivedStore], Awaitable[T]]) -> T:
    # What a receiver keeps in files must be there: reading would create an empty store instead.
    if sqlite_file(storage):
        require_existing(stored_at(data_dir, storage), "receiver", env("RECEIVER_STORAGE"), "--storage")
    elif not storage or storage == "files":
        if not storage and not stored_at(data_dir, None).exists() and stored_at(data_dir, "files").is_dir():
            fail(f"the receiver of {data_dir} keeps files, not a database: add --storage files")
        require_existing(stored_at(data_dir, storage), "receiver", env("RECEIVER_DATA_DIR"))
    return run_on_store(lambda: create_received_store(data_dir, storage, reading=True), work)


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%fZ")[:-4] + "Z"


@received_app.command("counts", short_help="Sessions, documents and requests received.")
def received_counts(data_dir: ReceiverDir = DEFAULT_RECEIVER_DIR, storage: Storage = None) -> None:
    """Sessions, legacy documents, Elasticsearch documents and requests received."""
    counts = _with_store(data_dir, storage, lambda s: s.counts())
    emit(orjson.dumps(counts.as_json(), option=orjson.OPT_INDENT_2).decode())


@received_app.command("last", short_help="The last documents received (NDJSON).")
def received_last(
    data_dir: ReceiverDir = DEFAULT_RECEIVER_DIR,
    storage: Storage = None,
    count: Annotated[
        int, typer.Option("-n", "--count", envvar=env("RECEIVER_COUNT"), min=1, max=1000, help="How many.")
    ] = 10,
    kind: Annotated[
        str | None,
        typer.Option(envvar=env("RECEIVER_KIND"), help="session, legacy or document (Elasticsearch)."),
    ] = None,
) -> None:
    """The last documents received, newest first, one per line (NDJSON, as stored)."""
    if kind is not None and kind not in (SESSION, LEGACY, DOCUMENT):
        fail(f"--kind takes {SESSION}, {LEGACY} or {DOCUMENT}, not {kind!r}")
    for doc in _with_store(data_dir, storage, lambda s: s.documents(kind=kind, limit=count)):
        _print_stored(doc.body)


@received_app.command("show", short_help="The documents of one userSessionId (NDJSON).")
def received_show(
    user_session_id: Annotated[str, typer.Argument(help="The userSessionId to look for.")],
    data_dir: ReceiverDir = DEFAULT_RECEIVER_DIR,
    storage: Storage = None,
) -> None:
    """The documents of one userSessionId, newest first (NDJSON); exit code 1 when there are none."""
    found = _with_store(data_dir, storage, lambda s: _print_documents(s, user_session_id=user_session_id))
    if not found:
        err.print(f"no document with userSessionId {escape(repr(user_session_id))}", highlight=False)
        raise typer.Exit(1)


@received_app.command("requests", short_help="Requests received: outcome, counts, reasons.")
def received_requests(
    data_dir: ReceiverDir = DEFAULT_RECEIVER_DIR,
    storage: Storage = None,
    count: Annotated[
        int, typer.Option("-n", "--count", envvar=env("RECEIVER_COUNT"), min=1, max=1000, help="How many.")
    ] = 20,
    request_id: Annotated[
        int | None,
        typer.Option(
            "--id", envvar=env("RECEIVER_ID"), help="Print the documents of this request instead (NDJSON)."
        ),
    ] = None,
) -> None:
    """Requests received, newest first: status, documents stored and duplicates, or why refused."""
    if request_id is not None:
        documents = _with_store(data_dir, storage, lambda s: _print_documents(s, request_id=request_id))
        if not documents:
            err.print(
                f"no document was stored from request #{request_id} (no such request, or it stored none)"
            )
            raise typer.Exit(1)
        return
    for r in _with_store(data_dir, storage, lambda s: s.requests(count)):
        emit(_request_line(r))


async def _print_documents(store: ReceivedStore, **filters: Any) -> int:
    """Print every document that matches, newest first, a page at a time; return how many."""
    printed, before = 0, None
    while page := await store.documents(**filters, limit=PAGE_DOCUMENTS, before_seq=before):
        for doc in page:
            _print_stored(doc.body)
        printed += len(page)
        if len(page) < PAGE_DOCUMENTS:
            break
        before = page[-1].seq
    return printed


def _request_line(r: RequestRecord) -> str:
    """One line a request, readable at any width and through grep: what came, and what became of it."""
    fate = f"stored {r.stored}, duplicates {r.duplicates}" if r.status < 400 else f"refused: {r.error or ''}"
    who = f"  by {r.principal}" if r.principal else ""
    return f"#{r.id}  {_when(r.received_at)}  {r.method} {r.path}  {r.status}  {r.size:,} bytes  {fate}{who}"


def _print_stored(body: bytes) -> None:
    """A document on its own line, its bytes exactly as stored (not decoded: whatever they hold)."""
    with to_stdout():
        sys.stdout.buffer.write(body + b"\n")
