"""``sessionexport export status|test|sample|mapping``: how exports do, and what an export would
send, from the command line.

They work on the data directory (or --database-url) directly, like ``tokens``: no server needed.
A configuration is given as its value (a JSON file, ``-`` for stdin; the ``value`` of a settings
object) or, for sample and mapping, as the objectId of a saved one.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console
from rich.markup import escape

from sessionexport.cli_options import (
    DEFAULT_DATA_DIR,
    AllowHttpLoopback,
    CaBundle,
    DatabaseUrl,
    DataDir,
    Proxy,
    SecretKey,
    emit,
    env,
    err,
    fail,
    require_server_data,
    require_stdin,
    run_on_store,
    to_stdout,
    whole_output,
)
from sessionexport.clock import now_ms, utc_text
from sessionexport.export.config import ExportConfig, export_config
from sessionexport.export.metrics import ExportMetrics
from sessionexport.export.notifier import LogNotifier
from sessionexport.export.preview import (
    NoSessions,
    preview_sessions,
    run_test_export,
    sample_body,
    saved_config,
    unsaved_config,
)
from sessionexport.export.status import ExportHealth, export_health, export_running
from sessionexport.export.supervisor import ExportSupervisor
from sessionexport.model.mapping import index_creation, mapping
from sessionexport.settings.objects import SettingsService, masked_value
from sessionexport.settings.schemas import EXPORT_SCHEMA
from sessionexport.settings.secrets import KEY_FILE, SecretBox, SecretKeyError, load_secret_box, new_key
from sessionexport.store import DATABASE_FILE, Store, StoreError, create_store

export_app = typer.Typer(
    short_help="Export status, test, sample data and mapping.",
    help="How exports do; test an export configuration, download its sample data or its Elasticsearch mapping.",
    no_args_is_help=True,
)
T = TypeVar("T")

ValueFile = Annotated[
    Path | None,
    typer.Option(
        "--value",
        envvar=env("EXPORT_VALUE"),
        show_default=False,
        help="JSON file with the configuration's value (- for stdin), saved or not.",
        allow_dash=True,
    ),
]
ObjectId = Annotated[
    str | None,
    typer.Option(
        "--object-id",
        envvar=env("EXPORT_OBJECT_ID"),
        show_default=False,
        help="objectId of a saved export configuration.",
    ),
]


class _Refused(Exception):
    pass


def _read_value(path: Path) -> Any:
    require_stdin(path, "--value")
    try:
        raw = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    except OSError as exc:
        raise _Refused(f"cannot read --value {path}: {exc.strerror or exc}") from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _Refused(f"{path}: not JSON: {exc}") from None


async def _config(
    settings: SettingsService, value_file: Path | None, object_id: str | None, *, secrets_needed: bool
) -> ExportConfig:
    if (value_file is None) == (object_id is None):
        raise _Refused("give either --value FILE or --object-id ID")
    if object_id is not None:
        saved = await saved_config(settings, object_id, secrets_needed=secrets_needed)
        if saved is None:
            raise _Refused(f"no user session export with objectId {object_id!r}")
        return saved
    assert value_file is not None
    value = _read_value(value_file)
    config, violations = await unsaved_config(settings, value, secrets_needed=secrets_needed)
    if config is None:
        raise _Refused("invalid configuration:\n" + "\n".join(f"  {v.path}: {v.message}" for v in violations))
    return config


def _write_out(body: bytes, output: Path | None = None) -> None:
    """``body`` to ``output`` (whole or not at all: ``whole_output``), or to stdout; one line and
    exit 2 when it cannot be written."""
    if output is not None:
        with whole_output(output) as fh:
            fh.write(body)
        return
    try:
        with to_stdout():
            sys.stdout.buffer.write(body)
    except OSError as exc:
        fail(f"cannot write the output: {exc.strerror or exc}")


def _with_services(
    data_dir: Path,
    database_url: str | None,
    secret_key: str | None,
    allow_http_loopback: bool,
    work: Callable[[Store, SettingsService], Awaitable[T]],
    *,
    existing: bool = True,  # the server's data: a missing database means a wrong --data-dir
) -> T:
    if existing:
        require_server_data(data_dir, database_url)

    async def main() -> T:
        store: Store = create_store(data_dir, database_url, existing=existing)
        await store.open()
        try:
            box = _secret_box(data_dir, secret_key)
            return await work(store, SettingsService(store, box, allow_http_loopback=allow_http_loopback))
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except (_Refused, NoSessions, StoreError, SecretKeyError) as exc:
        fail(str(exc))


def _secret_box(data_dir: Path, secret_key: str | None) -> SecretBox:
    """The server's keys; when it has none here (they are in its environment), a key of this run
    only: these commands read no stored secret, and must leave no key file that a server started
    here later would take for its own."""
    if not secret_key and not (data_dir / KEY_FILE).exists():
        return SecretBox([new_key().encode()])
    return load_secret_box(data_dir, secret_key, create=False)


@export_app.command("status", short_help="Each export's state, backlog, lag and open alerts.")
def export_status(
    object_id: ObjectId = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            envvar=env("EXPORT_JSON"),
            help="Print a JSON array of what GET /api/v2/exports/{objectId}/status answers.",
        ),
    ] = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database_url: DatabaseUrl = None,
) -> None:
    """Each export's state, backlog, lag, deliveries, dead letters and open alerts, read from the
    store (the server need not run, and no secret key is needed).

    States: running, failing (an alert is open), paused, stopped (no worker exports it). Exits 1
    when an export is failing or stopped, or has an open alert while paused (sessions it lost to
    retention), for scripts and monitoring checks.
    """

    async def work(store: Store) -> list[ExportHealth]:
        if object_id is not None:
            record = await store.get_setting(object_id)
            if record is None or record.schema_id != EXPORT_SCHEMA:
                raise _Refused(f"no user session export with objectId {object_id!r}")
            records = [record]
        else:
            records = await store.list_settings(EXPORT_SCHEMA)
        now, healths = now_ms(), []
        for record in records:
            config = export_config(record.object_id, masked_value(record))  # no secret, so no key needed
            running = await export_running(store, None, record.object_id)
            healths.append(await export_health(store, config, running, now))
        return healths

    require_server_data(data_dir, database_url)
    try:
        healths = run_on_store(lambda: create_store(data_dir, database_url, existing=True), work)
    except _Refused as exc:
        fail(str(exc))
    if as_json:
        emit(orjson.dumps([h.as_json() for h in healths], option=orjson.OPT_INDENT_2).decode())
    elif not healths:
        err.print("No user session export is configured.")
    else:
        with to_stdout():
            out = Console(soft_wrap=True, emoji=False)  # a fact stays on its line, whatever the width
            for health in healths:
                _print_status(out, health)
    if any(h.state in ("failing", "stopped") or h.open_alerts for h in healths):
        raise typer.Exit(1)


_STATE_STYLES = {"running": "green", "failing": "red", "paused": "dim", "stopped": "yellow"}


def _print_status(console: Console, h: ExportHealth) -> None:
    """One export, a line per fact: readable at any terminal width, and easy to grep."""
    lag = "caught up" if h.lag_seconds is None else f"lag {h.lag_seconds:,.1f} s"
    console.print(f"[bold]{h.object_id}[/]  [{_STATE_STYLES[h.state]}]{h.state}[/]", highlight=False)
    facts = [
        ("endpoint", escape(h.endpoint_url)),
        ("backlog", f"{h.backlog:,} session(s), {lag}"),
        ("delivered", f"{h.delivered:,} session(s); failed {h.failed:,}, replayed {h.replayed:,}"),
        ("dead letters", f"{h.dead_letters:,} waiting for replay"),
        ("last success", utc_text(h.last_success) if h.last_success is not None else "never"),
    ]
    if h.last_error:  # with its time: an error from before the last success is over
        facts.append(("last error", f"{utc_text(h.last_error_at)}: {escape(h.last_error)}"))
    facts += [
        ("open alert", f"{escape(a.title)} ({a.kind}, since {utc_text(a.opened_at)})") for a in h.open_alerts
    ]
    for name, fact in facts:
        console.print(f"  {name:<13}{fact}", highlight=False)


@export_app.command("test", short_help="Send up to 50 recent sessions as the export would.")
def export_test(
    value: ValueFile = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database_url: DatabaseUrl = None,
    secret_key: SecretKey = None,
    ca_bundle: CaBundle = None,
    proxy: Proxy = None,
    allow_http_loopback: AllowHttpLoopback = False,
) -> None:
    """Send up to 50 sessions of the last 7 days as the export would (one attempt) and print the outcome.

    The value's secrets must be entered (stored ones are never read back for a test). Prints the
    result as JSON: success, statusCode, responseTimeMs, error, sessionsSent, itemErrors. Exits 1
    when the test failed, 2 when it could not run (invalid value, no sessions).
    """

    async def work(store: Store, settings: SettingsService) -> dict[str, Any]:
        config = await _config(settings, value, None, secrets_needed=True)
        entries = await preview_sessions(store, settings, config, now_ms())
        supervisor = ExportSupervisor(
            store, settings, LogNotifier(), ExportMetrics(), ca_bundle=ca_bundle, proxy=proxy
        )
        async with supervisor.client() as client:
            return (await run_test_export(supervisor.sender(config, client), entries)).as_json()

    result = _with_services(data_dir, database_url, secret_key, allow_http_loopback, work)
    emit(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    if not result["success"]:
        raise typer.Exit(1)


@export_app.command("sample", short_help="Up to 50 recent sessions as the export sends them.")
def export_sample(
    value: ValueFile = None,
    object_id: ObjectId = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            envvar=env("EXPORT_OUTPUT"),
            show_default=False,
            help="Write here instead of stdout.",
        ),
    ] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database_url: DatabaseUrl = None,
    secret_key: SecretKey = None,
    allow_http_loopback: AllowHttpLoopback = False,
) -> None:
    """Up to 50 sessions of the last 7 days exactly as the export would send them (JSON lines)."""

    async def work(store: Store, settings: SettingsService) -> bytes:
        config = await _config(settings, value, object_id, secrets_needed=False)
        return sample_body(config, await preview_sessions(store, settings, config, now_ms()))

    body: bytes = _with_services(data_dir, database_url, secret_key, allow_http_loopback, work)
    _write_out(body, output)
    if output is not None:
        lines = body.count(b"\n")
        err.print(f"{lines} line(s) written to {escape(str(output))}", highlight=False)


@export_app.command("mapping", short_help="The Elasticsearch mapping of exported sessions.")
def export_mapping(
    value: ValueFile = None,
    object_id: ObjectId = None,
    doc_type: Annotated[
        str | None,
        typer.Option(
            envvar=env("EXPORT_DOC_TYPE"),
            show_default=False,
            help="Document type to wrap the mapping in (without a configuration).",
        ),
    ] = None,
    index_body: Annotated[
        bool,
        typer.Option(
            "--index-body",
            envvar=env("EXPORT_INDEX_BODY"),
            help="Print the body of the request that creates the index (PUT /INDEX); typeless for"
            " the document type _doc, which Elasticsearch 7 and 8 take no other way.",
        ),
    ] = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database_url: DatabaseUrl = None,
    secret_key: SecretKey = None,
    allow_http_loopback: AllowHttpLoopback = False,
) -> None:
    """The Elasticsearch mapping of exported sessions, generated from the session model.

    With --value or --object-id it reflects that configuration (its document type); without, the
    plain mapping (or wrapped in --doc-type).
    """
    if value is not None or object_id is not None:

        async def work(store: Store, settings: SettingsService) -> str | None:
            config = await _config(settings, value, object_id, secrets_needed=False)
            return config.send_direct.doc_type if config.send_direct else None

        if object_id is None and not database_url and not (data_dir / DATABASE_FILE).exists():
            with tempfile.TemporaryDirectory() as scratch:  # a value alone needs nothing stored
                doc_type = _with_services(
                    Path(scratch), None, secret_key, allow_http_loopback, work, existing=False
                )
        else:
            doc_type = _with_services(data_dir, database_url, secret_key, allow_http_loopback, work)
    document = index_creation(doc_type) if index_body else mapping(doc_type)
    _write_out(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
