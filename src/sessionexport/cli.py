"""The ``sessionexport`` command. Every option can also be set as ``SESSIONEXPORT_<OPTION>``."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import socket
import sqlite3
import stat
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, BinaryIO, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from sessionexport import __version__, listening, tokens
from sessionexport.cli_options import (
    DEFAULT_DATA_DIR,
    AllowHttpLoopback,
    CaBundle,
    DatabaseUrl,
    DataDir,
    LeaseSeconds,
    MaxInFlight,
    MetricsTlsCert,
    MetricsTlsKey,
    OutputFailed,
    Proxy,
    RetentionDays,
    SecretKey,
    TlsCert,
    TlsKey,
    checked,
    emit,
    env,
    err,
    fail,
    require_server_data,
    require_stdin,
    require_store_opens,
    run_on_store,
    stop_as_ctrl_c,
    to_stdout,
    whole_output,
)
from sessionexport.clock import now_ms
from sessionexport.config import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_RETENTION_DAYS,
    INGEST_BATCH_SESSIONS,
    ServerConfig,
)
from sessionexport.export.leases import DEFAULT_LEASE_SECONDS, DEFAULT_MAX_IN_FLIGHT
from sessionexport.logs import announce, configure_logging, report
from sessionexport.request_bodies import DEFAULT_BUFFER_BYTES
from sessionexport.settings.secrets import KEY_FILE, SecretKeyError, load_secret_box, new_key
from sessionexport.settings.validation import is_loopback
from sessionexport.store import DATABASE_FILE, Store, StoreError, VersionConflict, create_store
from sessionexport.store.locations import is_postgresql, shown_location, sqlite_file
from sessionexport.store.records import TokenRecord
from sessionexport.store.sqlite_engine import said

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from sessionexport.generate.events import EventStream

T = TypeVar("T")

app = typer.Typer(
    name="sessionexport",
    help="Completed user sessions in, kept durably, streamed out in bulk (Dynatrace session export compatible).",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120},
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: nothing truncated at 80 columns, as rich tables were
)
tokens_app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)
app.add_typer(tokens_app, name="tokens")
secrets_app = typer.Typer(
    short_help="Keys that encrypt the stored secrets.",
    help="Keys that encrypt the stored secrets (passwords, client secrets).",
    no_args_is_help=True,
)
app.add_typer(secrets_app, name="secrets")


def _run(work: Callable[[Store], Awaitable[T]], data_dir: Path, database_url: str | None) -> T:
    return run_on_store(lambda: create_store(data_dir, database_url), work)


def _read(work: Callable[[Store], Awaitable[T]], data_dir: Path, database_url: str | None) -> T:
    """``_run`` for a command that only reads or changes what is there (never a new database)."""
    require_server_data(data_dir, database_url)
    return run_on_store(lambda: create_store(data_dir, database_url, existing=True), work)


def _version(value: bool) -> None:
    if value:
        emit(f"sessionexport {__version__}")
        raise typer.Exit()


def _log_format(value: str) -> None:
    if value not in ("text", "json"):
        raise ValueError(f"{value!r} is neither text nor json")


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    log_format: Annotated[
        str,
        typer.Option(
            envvar=env("LOG_FORMAT"),
            callback=checked(_log_format),
            help="text, or json (one object per line).",
        ),
    ] = "text",
) -> None:
    configure_logging("json" if log_format == "json" else "text")


@app.command(short_help="Serve the API, the web UI and the exporters.")
def serve(
    host: Annotated[str, typer.Option(envvar=env("HOST"), help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(envvar=env("PORT"), min=0, max=65535, help="Port to listen on.")
    ] = 8080,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database_url: DatabaseUrl = None,
    max_body_bytes: Annotated[
        int,
        typer.Option(
            envvar=env("MAX_BODY_BYTES"),
            min=1024,
            help="Largest accepted request body (decoded, for a compressed one); larger gets 413.",
        ),
    ] = DEFAULT_MAX_BODY_BYTES,
    ingest_buffer_mb: Annotated[
        int,
        typer.Option(
            envvar=env("INGEST_BUFFER_MB"),
            min=1,
            help="MiB of request bodies the ingest routes hold at once; a request beyond waits for room"
            " (its body unread), then gets 503 with Retry-After after 10 s.",
        ),
    ] = DEFAULT_BUFFER_BYTES >> 20,
    retention_days: RetentionDays = DEFAULT_RETENTION_DAYS,
    secret_key: SecretKey = None,
    allow_http_loopback: AllowHttpLoopback = False,
    ca_bundle: CaBundle = None,
    proxy: Proxy = None,
    exporters: Annotated[
        bool,
        typer.Option(
            envvar=env("EXPORTERS"),
            help="Run the exporters and the sessionizer in this process (see `worker`).",
        ),
    ] = True,
    lease_seconds: LeaseSeconds = DEFAULT_LEASE_SECONDS,
    max_in_flight: MaxInFlight = DEFAULT_MAX_IN_FLIGHT,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
) -> None:
    """Serve the API, the web UI at /ui (and the exporters and sessionizer) on the embedded default,
    or on --database-url.

    Plain HTTP unless --tls-cert and --tls-key are given: tokens and UI logins cross the network, so
    serve HTTPS (or put a TLS proxy in front) on any address other than loopback.
    """
    from sessionexport.api.app import create_app

    listener = Listener(host, port, tls_cert, tls_key)
    config = ServerConfig(
        data_dir=data_dir,
        database_url=database_url,
        max_body_bytes=max_body_bytes,
        ingest_buffer_bytes=ingest_buffer_mb << 20,
        retention_days=retention_days,
        secret_keys=secret_key,
        allow_http_loopback=allow_http_loopback,
        ca_bundle=ca_bundle,
        proxy=proxy,
        run_exporters=exporters,
        lease_seconds=lease_seconds,
        max_in_flight=max_in_flight,
    )
    _serve(
        create_app,
        config,
        listener,
        lambda where: (
            f"listening on {where}  (API docs: {where}/docs, data: {shown_location(data_dir, database_url)})"
        ),
    )


@dataclass(frozen=True)
class Listener:
    """Where an HTTP server listens, and the options that named it (for messages)."""

    host: str
    port: int
    tls_cert: Path | None
    tls_key: Path | None
    options: tuple[str, str] = ("--tls-cert", "--tls-key")
    exposed: str = "API tokens and UI logins"


def _serve(
    create: Callable[[ServerConfig], ASGIApp],
    config: ServerConfig,
    listener: Listener,
    says: Callable[[str], str],
) -> None:
    """Serve ``create(config)`` with uvicorn, once the store opened (a database that cannot be
    reached or opened, or a port that is taken, ends the command here in one line)."""
    scheme = _serving_scheme(listener)
    try:
        application = create(config)  # a database URL of no known kind, keys that do not load
    except (StoreError, SecretKeyError) as exc:
        fail(str(exc))
    require_store_opens(lambda: create_store(config.data_dir, config.database_url))
    sock = _listening(listener.host, listener.port)
    announce(err, f"sessionexport {__version__} {says(listening.url_of(scheme, listener.host, sock))}")
    if not listening.serve(application, sock, ssl_certfile=listener.tls_cert, ssl_keyfile=listener.tls_key):
        raise typer.Exit(3)


def _listening(host: str, port: int) -> socket.socket:
    try:
        return listening.bind(host, port)
    except OSError as exc:
        report(err, logging.ERROR, str(exc))
        raise typer.Exit(2) from None


def _serving_scheme(listener: Listener) -> str:
    """https with a certificate and key that load together (else exit 2 saying why); http, with a
    warning when the address is not loopback."""
    cert, key = listener.tls_cert, listener.tls_key
    cert_option, key_option = listener.options
    if (cert is None) != (key is None):
        report(err, logging.ERROR, f"{cert_option} and {key_option} go together")
        raise typer.Exit(2)
    if cert is not None and key is not None:
        from sessionexport.receiver.tls import operator_certificate

        try:
            fingerprint = operator_certificate(cert, key)
        except ValueError as exc:
            report(err, logging.ERROR, f"cannot use {cert_option} with {key_option}: {exc}")
            raise typer.Exit(2) from None
        announce(err, f"TLS certificate {cert} (SHA-256 {fingerprint})")
        return "https"
    if not is_loopback(listener.host):
        report(
            err,
            logging.WARNING,
            f"plain HTTP on {listener.host}: {listener.exposed} cross the network in clear; give"
            f" {cert_option} and {key_option}, or serve behind a TLS proxy",
        )
    return "http"


@app.command(short_help="Run the exporters, sessionizer and retention (no API).")
def worker(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database_url: DatabaseUrl = None,
    secret_key: SecretKey = None,
    allow_http_loopback: AllowHttpLoopback = False,
    ca_bundle: CaBundle = None,
    proxy: Proxy = None,
    retention_days: RetentionDays = DEFAULT_RETENTION_DAYS,
    lease_seconds: LeaseSeconds = DEFAULT_LEASE_SECONDS,
    max_in_flight: MaxInFlight = DEFAULT_MAX_IN_FLIGHT,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            envvar=env("METRICS_PORT"),
            min=1,
            max=65535,
            help="Serve /health and /metrics (token with metrics.read) on this port; default: no HTTP at all.",
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(envvar=env("METRICS_HOST"), help="Interface of --metrics-port.")
    ] = "127.0.0.1",
    metrics_tls_cert: MetricsTlsCert = None,
    metrics_tls_key: MetricsTlsKey = None,
) -> None:
    """Run the exporters, the sessionizer and retention without the HTTP API, until interrupted.

    Beside `serve --no-exporters`, or beside other workers: on PostgreSQL, any number of `serve`
    and `worker` processes share the exports, each shard of an export exported by one of them
    at a time (under a lease, taken over when its holder stops).

    A worker's delivery counters are its own: give it --metrics-port for Prometheus to scrape
    them (and /health for an orchestrator's probes), over HTTPS with --metrics-tls-cert and
    --metrics-tls-key.
    """
    from sessionexport.worker import run_worker

    config = ServerConfig(
        data_dir=data_dir,
        database_url=database_url,
        retention_days=retention_days,
        secret_keys=secret_key,
        allow_http_loopback=allow_http_loopback,
        ca_bundle=ca_bundle,
        proxy=proxy,
        lease_seconds=lease_seconds,
        max_in_flight=max_in_flight,
    )
    if metrics_port is not None:
        options = ("--metrics-tls-cert", "--metrics-tls-key")
        listener = Listener(
            metrics_host, metrics_port, metrics_tls_cert, metrics_tls_key, options, "API tokens"
        )
        _serve_worker(config, listener)
        return
    if metrics_tls_cert or metrics_tls_key:
        fail("--metrics-tls-cert and --metrics-tls-key need --metrics-port")
    try:
        asyncio.run(run_worker(config))
    except (StoreError, SecretKeyError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        err.print("worker stopped")


def _serve_worker(config: ServerConfig, listener: Listener) -> None:
    from sessionexport.worker import create_worker_app

    _serve(create_worker_app, config, listener, lambda where: f"worker: /health and /metrics on {where}")


@tokens_app.command("create", short_help="Create a token; it is printed alone, this once.")
def tokens_create(
    name: Annotated[str, typer.Option(envvar=env("NAME"), help="What the token is for.")],
    scopes: Annotated[
        str,
        typer.Option(
            envvar=env("SCOPES"), help="Comma-separated scopes: " + ", ".join(s.value for s in tokens.Scope)
        ),
    ],
    expires_in: Annotated[
        str | None,
        typer.Option(
            envvar=env("EXPIRES_IN"),
            show_default=False,
            callback=checked(tokens.parse_lifetime),
            help="Lifetime: whole minutes, hours or days (30m, 12h, 90d), at most 100 years; the token is"
            " refused (401) from then on. Default: no expiry.",
        ),
    ] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a token and print it, alone, on the last line (it is shown only this once)."""
    now = now_ms()
    try:
        expires_at = now + tokens.parse_lifetime(expires_in) if expires_in is not None else None
        new = tokens.new_token(name, tokens.parse_scopes(scopes), now, expires_at)
    except tokens.TokenError as exc:
        fail(str(exc))
    fresh = not database_url and not (data_dir / DATABASE_FILE).exists()
    _run(lambda store: store.add_token(new.record), data_dir, database_url)
    # A mistyped --data-dir makes a database of its own: said, so that the token is not taken
    # for one of the server's.
    new_here = " (a new database: the server must run with this --data-dir)" if fresh else ""
    where = "the database of --database-url" if database_url else f"{data_dir / DATABASE_FILE}{new_here}"
    scopes_text = ", ".join(sorted(new.record.scopes))
    expiry = f", expiring {_when(expires_at)}" if expires_at is not None else ""
    err.print(
        f"Created token {new.record.id} ({escape(new.record.name)}) with scopes {scopes_text}{expiry},"
        f" in {escape(where)}.",
        highlight=False,
    )
    try:
        emit(new.token)
    except OutputFailed:  # a token nobody saw must not stay valid
        _run(lambda store: store.revoke_token(new.record.id, now_ms()), data_dir, database_url)
        err.print(f"Revoked token {new.record.id} again: it could not be printed.")
        raise


@tokens_app.command("list")
def tokens_list(data_dir: DataDir = DEFAULT_DATA_DIR, database_url: DatabaseUrl = None) -> None:
    """List tokens (never their secrets)."""
    records = _read(lambda store: store.list_tokens(), data_dir, database_url)
    now = now_ms()
    rows = [
        (
            r.id,
            Text(r.name),
            "\n".join(sorted(r.scopes)),
            _when(r.created_at).split()[0],
            _token_state(r, now),
        )
        for r in records
    ]
    # Fits 80 columns with nothing cut: a scope a line, the day it was created, its state's time
    # below it. Only names fold: a narrower terminal wraps the table's lines rather than have Rich
    # drop or cut columns (the state among them).
    table = Table(box=None, padding=(0, 1, 0, 0), pad_edge=False, header_style="bold underline")
    for number, heading in enumerate(("id", "name", "scopes", "created", "state")):
        widest = max((len(line) for row in rows for line in str(row[number]).splitlines()), default=0)
        if heading == "name":
            table.add_column(heading, overflow="fold", min_width=8)
        else:  # whole: `tokens revoke` takes the id
            table.add_column(heading, no_wrap=True, min_width=max(widest, len(heading)))
    for row in rows:
        table.add_row(*row)
    with to_stdout():
        console = Console(emoji=False)
        console.width = max(console.width, sum(column.min_width or 0 for column in table.columns) + 4)
        console.print(table)


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[
        str, typer.Argument(help="The token's id (its middle part), as `tokens list` shows.")
    ],
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a token: requests carrying it get 401 from then on."""
    public = tokens.public_id(token_id) or token_id
    if not _read(lambda store: store.revoke_token(public, now_ms()), data_dir, database_url):
        fail(f"no active token {public}", 1)
    err.print(f"Revoked token {public}.")


@secrets_app.command("new-key")
def secrets_new_key() -> None:
    """Print a new random key (for SESSIONEXPORT_SECRET_KEY)."""
    emit(new_key())


@secrets_app.command("rotate")
def secrets_rotate(
    data_dir: DataDir = DEFAULT_DATA_DIR, database_url: DatabaseUrl = None, secret_key: SecretKey = None
) -> None:
    """Re-encrypt every stored secret with the first (newest) key.

    Put the new key first in SESSIONEXPORT_SECRET_KEY, followed by the old one(s); run this; then
    drop the old keys.
    """
    from sessionexport.settings.objects import SettingsService

    require_server_data(data_dir, database_url)  # before a key file could be made in a wrong folder
    try:
        box = load_secret_box(data_dir, secret_key, create=False)  # a new key decrypts nothing stored
    except SecretKeyError as exc:
        fail(str(exc))

    async def rotate(store: Store) -> int:
        return await SettingsService(store, box).rotate_secrets()

    try:
        changed = _read(rotate, data_dir, database_url)
    except SecretKeyError as exc:
        fail(str(exc), 1)
    except VersionConflict as exc:
        fail(f"{exc}; run secrets rotate again", 1)
    err.print(f"Re-encrypted the secrets of {changed} settings object(s).")


@app.command(short_help="Copy the database and its key, even while serving.")
def backup(
    target: Annotated[
        Path,
        typer.Argument(help="New (or empty) folder to write the backup into.", file_okay=False),
    ],
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database_url: DatabaseUrl = None,
    secret_key: SecretKey = None,
) -> None:
    """Copy the embedded database and its secret key into a new folder, while the server runs.

    The copy is a snapshot of one moment (ingest and exports go on meanwhile), checked before it
    is called done; the folder it makes is a data directory: serve --data-dir TARGET runs on it.
    On PostgreSQL, back up with pg_dump instead.
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from sessionexport.backup import BackupError, BackupRefused, check_backup
    from sessionexport.backup import backup as copy_data

    if is_postgresql(database_url):
        err.print(
            "[red]error:[/red] the database is on PostgreSQL: back it up with pg_dump (e.g. pg_dump"
            " --format=custom --file=sessionexport.dump DB), and keep the secret key with it"
        )
        raise typer.Exit(2)
    try:
        create_store(data_dir, database_url)  # a URL of no known kind is refused here
    except StoreError as exc:
        fail(str(exc))
    require_server_data(data_dir, database_url)  # named by the option that gave it
    database = sqlite_file(database_url) or data_dir / DATABASE_FILE
    try:
        check_backup(database, target)
    except BackupRefused as exc:
        fail(str(exc))
    columns = (TextColumn("backing up"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    stop_as_ctrl_c()  # what was written is removed
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("backup", total=None)
        try:
            result = copy_data(
                database,
                None if secret_key else data_dir / KEY_FILE,  # a key file beside an env key may be stale
                target,
                lambda done, total: progress.update(task, completed=done, total=total),
            )
        except (BackupError, StoreError, OSError, sqlite3.Error) as exc:
            progress.stop()
            fail(f"backup failed, nothing kept: {said(exc)}", 1)
        except KeyboardInterrupt:
            progress.stop()
            err.print(f"interrupted: backup stopped, nothing kept in {escape(str(target))}", highlight=False)
            raise typer.Exit(130) from None
    err.print(
        f"Backed up {result.sessions} session(s) and {result.exports} export configuration(s)"
        f" ({result.bytes / 1e6:,.1f} MB) to {escape(str(result.target))} in {result.seconds:.1f}s."
    )
    if result.key_problem:
        err.print(
            f"[yellow]warning:[/yellow] the {KEY_FILE} copied: {escape(result.key_problem)}:"
            " keep the key the server runs with beside the backup."
        )
    if result.exports and not result.key_copied:
        where = (
            "it comes from SESSIONEXPORT_SECRET_KEY"
            if secret_key
            else f"there is no {KEY_FILE} in {data_dir}"
        )
        err.print(
            f"The secret key is not in the backup ({where}): keep it with the backup, or the exports'"
            " stored passwords and client secrets cannot be read back."
        )


def _file_or_dash(path: Path) -> Path:
    """A file (or a pipe: <(zcat ...)), or '-' (click's exists=True refuses '-' once typer made it
    a Path; click's dir_okay=False still refuses a directory)."""
    if str(path) != "-" and not path.exists():
        raise typer.BadParameter(f"file {str(path)!r} does not exist.")
    return path


@app.command(short_help="Validate and store an NDJSON file of sessions.")
def ingest(
    file: Annotated[
        Path,
        typer.Argument(
            help="NDJSON file of completed sessions, plain or gzip ('-' for standard input).",
            allow_dash=True,
            dir_okay=False,
            callback=_file_or_dash,
        ),
    ],
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database_url: DatabaseUrl = None,
    batch_size: Annotated[
        int,
        typer.Option(envvar=env("BATCH_SIZE"), min=1, max=10_000, help="Sessions stored per transaction."),
    ] = INGEST_BATCH_SESSIONS,
    rejects: Annotated[
        Path | None,
        typer.Option(
            envvar=env("REJECTS"),
            readable=False,  # an output: a pipe or FIFO it may only write to will do
            help="Write refused lines here, unchanged, to fix and re-ingest (a new file: never overwritten).",
        ),
    ] = None,
    max_line_bytes: Annotated[
        int,
        typer.Option(
            envvar=env("MAX_LINE_BYTES"),
            min=1024,
            help="Longest line taken (as serve's --max-body-bytes): a longer one is refused, never held whole.",
        ),
    ] = DEFAULT_MAX_BODY_BYTES,
) -> None:
    """Validate and store an NDJSON file of sessions, streamed (gzip files too).

    Invalid lines are reported (line, field, reason), written to --rejects if given, and never
    stored; every valid line is. A gzip file or stream is recognised by its content, not its
    name. Exits 1 if any line was refused, or if the file could not be read to its end (a
    corrupt or cut gzip file: what came before is stored); 2 if the store failed (a full disk:
    it says up to which line everything is stored), or if a refused line could not be written to
    --rejects (ingest stops at that line); 130 on Ctrl-C or SIGTERM, saying up to which line
    everything is stored. A --rejects file no line went to is not left behind.
    """
    from sessionexport.ingest.files import ingest_file

    require_stdin(file, "sessions")
    stop_as_ctrl_c()
    fresh = not database_url and not (data_dir / DATABASE_FILE).exists()
    with _new_rejects_file(rejects) as rejected:
        summary = _run(
            lambda store: ingest_file(
                store,
                file,
                batch_size=batch_size,
                rejects=rejected,
                console=err,
                max_line_bytes=max_line_bytes,
            ),
            data_dir,
            database_url,
        )
    err.print(
        f"{summary.accepted} stored, {summary.duplicates} duplicate(s), {summary.refused} refused"
        f" of {summary.lines} line(s) in {summary.seconds:.1f}s"
    )
    if fresh:  # a mistyped --data-dir makes a database of its own: said, as tokens create says it
        err.print(
            f"(in a new database, {escape(str(data_dir / DATABASE_FILE))}: the server must run with this --data-dir)",
            highlight=False,
        )
    if summary.unreadable:
        err.print(f"[red]error:[/red] {escape(summary.unreadable)}", highlight=False)
    for failure in (summary.store_failed, summary.rejects_failed):
        if failure:
            err.print(f"[red]error:[/red] {escape(failure)}", highlight=False)
    if summary.store_failed or summary.rejects_failed:
        raise typer.Exit(2)
    if summary.interrupted:
        err.print(escape(summary.interrupted), highlight=False)
        raise typer.Exit(130)
    if summary.refused or summary.unreadable:
        raise typer.Exit(1)


@contextlib.contextmanager
def _new_rejects_file(path: Path | None) -> Iterator[BinaryIO | None]:
    """``--rejects``, created new: an existing file (the input itself, earlier rejects) is never
    written over; what is not a regular file (/dev/stderr, a pipe) is written to. One line and
    exit 2 otherwise. A new file that no refused line went to is removed at the end: the same
    command can run again."""
    if path is None:
        yield None
        return
    try:
        special = path.exists() and not stat.S_ISREG(path.stat().st_mode)
        rejected = path.open("ab" if special else "xb", buffering=0)  # see ingest.files._keep_refused
    except FileExistsError:
        fail(f"--rejects {path} exists: give a new file")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        fail(f"cannot create --rejects {path}: {reason}")
    try:
        yield rejected
    finally:
        unused = not special and rejected.tell() == 0  # however the command ends
        with contextlib.suppress(OSError):  # a line that could not be written was told at its line
            rejected.close()
        if unused:
            path.unlink(missing_ok=True)


@app.command(short_help="Write realistic sessions or RUM events as NDJSON.")
def generate(
    count: Annotated[int, typer.Option(envvar=env("COUNT"), min=1, help="How many sessions.")] = 100,
    seed: Annotated[int, typer.Option(envvar=env("SEED"), help="Same seed, same sessions.")] = 1,
    kind: Annotated[str, typer.Option(envvar=env("KIND"), help="web, mobile, synthetic or mixed.")] = "mixed",
    actions: Annotated[
        str, typer.Option(envvar=env("ACTIONS"), help="User actions per session, MIN-MAX.")
    ] = "1-12",
    end: Annotated[
        str | None,
        typer.Option(
            envvar=env("END"), help="Sessions end before this UTC time (ISO 8601); default: today 00:00."
        ),
    ] = None,
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            envvar=env("OUTPUT"),
            help="NDJSON file to write ('-' for standard output); gzip when its name ends in .gz.",
            allow_dash=True,
        ),
    ] = Path("-"),
    events: Annotated[
        bool,
        typer.Option(
            "--events",
            envvar=env("EVENTS"),
            help="Write the sessions' RUM events (for POST /api/v2/rum/events) instead of the sessions.",
        ),
    ] = False,
    interleave: Annotated[
        bool,
        typer.Option(
            envvar=env("INTERLEAVE"),
            help="With --events: the events of concurrent sessions in time order, as beacons arrive;"
            " --no-interleave: one session after the other.",
        ),
    ] = True,
    rate: Annotated[
        float,
        typer.Option(
            envvar=env("RATE"), min=0, help="With --events: events per second; 0: as fast as possible."
        ),
    ] = 0,
    duplicates: Annotated[
        float,
        typer.Option(
            envvar=env("DUPLICATES"),
            min=0,
            max=1,
            metavar="RATIO",
            help="With --events: share of events sent twice, a few lines apart (retried beacons).",
        ),
    ] = 0,
    disorder: Annotated[
        int,
        typer.Option(
            envvar=env("DISORDER"),
            min=0,
            metavar="N",
            help="With --events: shuffle locally, no event more than N lines from its place.",
        ),
    ] = 0,
    server: Annotated[
        str | None,
        typer.Option(
            envvar=env("SERVER"),
            metavar="URL",
            help="With --events: POST them to this server's /api/v2/rum/events instead of writing them.",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar=env("TOKEN"), show_default=False, help="API token for --server (sessions.ingest scope)."
        ),
    ] = None,
) -> None:
    """Write realistic completed sessions (or, with --events, RUM event streams) as NDJSON.

    With --events, write the RUM events the same sessions are made of instead (attributes,
    actions, events, errors and, for most, an end), or POST them to a server with --server and
    --token, in batches of 500, printing the server's totals as JSON. --rate, --duplicates and
    --disorder make the stream look like real beacon traffic.
    """
    from sessionexport.generate.events import EventOptions, EventStream, paced
    from sessionexport.generate.sessions import KINDS, GeneratorOptions, generate_lines

    if kind not in KINDS:
        fail(f"--kind must be one of {', '.join(KINDS)}")
    action_range, end_ms = _action_range(actions), _end_ms(end)
    # Event options are refused without --events rather than ignored: a silent no-op misleads.
    event_only = {
        "--no-interleave": not interleave,
        "--rate": rate > 0,
        "--duplicates": duplicates > 0,
        "--disorder": disorder > 0,
        "--server": server is not None,
        "--token": token is not None,
    }
    misused = [name for name, given in event_only.items() if given]
    if misused and not events:
        fail(f"{', '.join(misused)}: only with --events")
    if server is not None and (not token or str(output) != "-"):
        fail("--server needs --token, and takes no --output")
    stop_as_ctrl_c()
    stream = None
    if events:
        options = EventOptions(
            kind=kind,
            actions=action_range,
            end_ms=end_ms,
            interleave=interleave,
            duplicate_ratio=duplicates,
            disorder=disorder,
        )
        stream = EventStream(count, seed, options)
        lines = paced(stream, rate)
    else:
        lines = generate_lines(count, seed, GeneratorOptions(kind=kind, actions=action_range, end_ms=end_ms))
    if server is not None and token and stream is not None:
        _post_events(lines, stream, server, token, count, rate)
    elif str(output) == "-":
        _print_lines(lines, flush_each=rate > 0)
    else:
        _write_lines(lines, output, stream, count)


def _action_range(actions: str) -> tuple[int, int]:
    """``--actions MIN-MAX`` (or ``N``), within 1-200; exit 2 otherwise."""
    try:
        low, _, high = actions.partition("-")
        action_range = (int(low), int(high or low))
        if not 1 <= action_range[0] <= action_range[1] <= 200:
            raise ValueError
    except ValueError:
        fail(f"--actions takes MIN-MAX within 1-200 (got {actions!r})")
    return action_range


def _end_ms(end: str | None) -> int:
    """``--end`` in epoch ms, late enough that every session starts at a time in ms; exit 2 otherwise."""
    from sessionexport.generate.sessions import GeneratorOptions
    from sessionexport.model.session import EPOCH_MS_MAX, EPOCH_MS_MIN

    try:
        end_ms = _parse_end(end)
    except ValueError:
        fail(f"--end takes an ISO 8601 time, e.g. 2026-11-26T12:00:00Z (got {end!r})")
    earliest = EPOCH_MS_MIN + GeneratorOptions().span_ms  # sessions start up to span_ms before --end
    if not earliest <= end_ms <= EPOCH_MS_MAX:
        first, last = (
            dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            for ms in (earliest, EPOCH_MS_MAX)
        )
        fail(f"--end must be from {first} to {last}: sessions' times are epoch milliseconds there")
    return end_ms


def _post_events(
    lines: Iterable[bytes], stream: EventStream, server: str, token: str, count: int, rate: float
) -> None:
    """POST the event lines to ``server`` in batches of 500, with progress; its totals as JSON."""
    import json

    from rich.progress import Progress

    from sessionexport.generate.events import EventPoster, EventPostError, batches

    with Progress(console=err, transient=True) as progress, EventPoster(server, token) as poster:
        task = progress.add_task("sessions", total=count)
        try:
            # A slow (paced) stream still reaches the server every second.
            for batch in batches(lines, 500, max_wait_s=1.0 if rate > 0 else None):
                poster.post(batch)
                progress.update(task, completed=stream.sessions_done)
        except EventPostError as exc:
            progress.stop()
            fail(f"{exc} ({poster.events} event(s) were accepted before)", 1)
        except KeyboardInterrupt:
            progress.stop()
            err.print(f"interrupted: {poster.events} event(s) were accepted in {poster.requests} request(s)")
            emit(json.dumps(poster.totals))
            raise typer.Exit(130) from None
    err.print(f"Sent {poster.events} event(s) of {count} session(s) in {poster.requests} request(s).")
    emit(json.dumps(poster.totals))


def _print_lines(lines: Iterable[bytes], *, flush_each: bool) -> None:
    """To standard output; a paced stream (``flush_each``), watched or piped on, each line as it comes."""
    with to_stdout():
        out = sys.stdout.buffer
        for line in lines:
            out.write(line + b"\n")
            if flush_each:
                out.flush()
        out.flush()


def _write_lines(lines: Iterable[bytes], output: Path, stream: EventStream | None, count: int) -> None:
    """To ``output``, whole or not at all (``whole_output``), with progress."""
    from rich.progress import Progress

    written = 0
    with whole_output(output) as fh, Progress(console=err, transient=True) as progress:
        task = progress.add_task("generating", total=count)
        for line in lines:
            fh.write(line + b"\n")
            written += 1
            progress.update(task, completed=stream.sessions_done if stream else written)
    what = f"{written} event(s) of {count} session(s)" if stream else f"{count} session(s)"
    err.print(f"Wrote {what} to {escape(str(output))}.", highlight=False)


def _parse_end(text: str | None) -> int:
    if text is None:
        today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return int(today.timestamp() * 1000)
    moment = dt.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def _token_state(record: TokenRecord, now: int) -> str:
    if record.revoked_at is not None:
        return f"revoked\n{_when(record.revoked_at)}"
    if record.expires_at is None:
        return "active"
    if tokens.expired(record, now):
        return f"expired\n{_when(record.expires_at)}"
    return f"active, expires\n{_when(record.expires_at)}"


def _when(ms: int) -> str:
    """A date and time to the minute, in UTC: what a table of tokens needs, in little room."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%MZ")


def _register_receiver_toolkit() -> None:
    from sessionexport.receiver.check.command import check_endpoint
    from sessionexport.receiver.cli import receive, received_app

    app.command(short_help="Receive session exports: webhook, OAuth2 tokens, _bulk.")(receive)
    app.add_typer(received_app, name="received")
    app.command("check-endpoint")(check_endpoint)


@app.command(short_help="The one-command tour: server, receiver, export, feed.")
def demo(
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir", envvar=env("DEMO_DATA_DIR"), file_okay=False, help="Where the demo keeps its data."
        ),
    ] = Path("demo"),
    host: Annotated[
        str, typer.Option(envvar=env("DEMO_HOST"), help="Interface of the server.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(envvar=env("DEMO_PORT"), min=1, max=65535, help="Port of the server (API).")
    ] = 8080,
    receiver_port: Annotated[
        int, typer.Option(envvar=env("DEMO_RECEIVER_PORT"), min=1, max=65535, help="Port of the receiver.")
    ] = 8443,
    rate: Annotated[
        float,
        typer.Option(
            envvar=env("DEMO_RATE"),
            min=0.1,
            help="Sessions per second, sent whole and as many again as RUM events.",
        ),
    ] = 5.0,
    duration: Annotated[
        float,
        typer.Option(envvar=env("DEMO_DURATION"), min=0, help="Stop after this many seconds (0: at Ctrl-C)."),
    ] = 0.0,
) -> None:
    """The one-command tour: server, HTTPS receiver, export, and a generator feeding them.

    Starts `sessionexport receive` (self-signed certificate, OAuth 2.0 token endpoint), the server
    on the embedded default (SQLite in --data-dir), an API token and an export configured to the
    receiver, then feeds completed sessions and RUM events and prints how many arrived. Ctrl-C
    stops everything.
    """
    from sessionexport.demo import DemoOptions, run_demo

    options = DemoOptions(data_dir, host, port, receiver_port, rate, duration)
    try:
        received = asyncio.run(run_demo(options))
    except KeyboardInterrupt:
        err.print("demo stopped")
        return
    except (RuntimeError, OSError, StoreError) as exc:
        fail(str(exc))
    err.print(f"demo over: the receiver stored {received} session(s)")


def _register_export_commands() -> None:
    from sessionexport.export.cli import export_app

    app.add_typer(export_app, name="export")


_register_receiver_toolkit()
_register_export_commands()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # before a command's own handling (it exits 130 with a summary)
        sys.exit(130)
    except OutputFailed as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        sys.exit(2)
