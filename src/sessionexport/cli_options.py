"""Options and helpers shared by the commands (every option can also be set as ``SESSIONEXPORT_<OPTION>``)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import logging
import os
import shutil
import signal
import ssl
import stat
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn, Protocol, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from sessionexport.logs import report
from sessionexport.settings.secrets import check_keys
from sessionexport.store import DATABASE_FILE
from sessionexport.store.base import StoreError
from sessionexport.store.locations import sqlite_file

# The commands' stderr: no emoji codes (":cd:" in a fingerprint is none), long lines kept whole.
err = Console(stderr=True, soft_wrap=True, emoji=False)


def checked(parse: Callable[[str], object]) -> Callable[[Any], Any]:
    """An option's callback: ``parse`` (raising ValueError) must take its value, each one of a
    repeatable option's. Its error is the option's, said with the flag or the environment
    variable the value came from, as click says its own."""

    def callback(value: Any) -> Any:
        given = [] if value is None else value if isinstance(value, list | tuple) else [value]
        try:
            for one in given:
                parse(one)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        return value

    return callback


def checked_lines(parse: Callable[[str], object]) -> Callable[[typer.Context, typer.CallbackParam, Any], Any]:
    """A repeatable option's callback, as ``checked``; from its environment variable, its values
    one per line. (Click splits such a variable at any whitespace: an OAuth client's secret
    holding a space became two clients, neither the one meant.)"""
    check = checked(parse)

    def callback(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> Any:
        source = ctx.get_parameter_source(param.name) if param.name else None
        if source is not None and source.name == "ENVIRONMENT" and isinstance(param.envvar, str):
            value = [line.strip() for line in os.environ.get(param.envvar, "").splitlines() if line.strip()]
            if len(value) == 1 and len(value[0].split()) > 1:  # as several were once given: never shown
                said = f"{param.envvar} holds one value with a space in it; several values go on lines of their own"
                report(err, logging.WARNING, said)
        return check(value)

    return callback


@contextlib.contextmanager
def whole_output(path: Path) -> Iterator[io.BufferedIOBase]:
    """``path`` written whole or not at all (gzip, at gzip's usual level, when its name ends in
    .gz): a file beside it is renamed to it once complete, so that an interrupted or failed run
    leaves nothing that looks complete. A device or pipe is written to as it is. One line and
    exit 2 when it cannot be written, 130 on Ctrl-C or SIGTERM."""
    special, partial = True, path  # until known: nothing of ours to remove
    try:
        # A link is written through, as before (/dev/stdout is one): only a plain file is replaced.
        special = path.is_symlink() or (path.exists() and not stat.S_ISREG(path.stat().st_mode))
        partial = path if special else _partial(path)
        with partial.open("wb") as raw:
            if path.suffix.lower() == ".gz":
                # Named: the header would otherwise hold the partial file's name (gunzip -N uses it).
                with gzip.GzipFile(path.name[:-3], mode="wb", compresslevel=6, fileobj=raw) as fh:
                    yield fh
            else:
                yield raw
        if not special:
            if path.exists():  # replaced, not loosened: a file kept private stays so
                shutil.copymode(path, partial)
            partial.replace(path)
    except OSError as exc:
        _forget_partial(partial, special)
        err.print(
            f"[red]error:[/red] cannot write {escape(str(path))}: {exc.strerror or exc}", highlight=False
        )
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        _forget_partial(partial, special)
        err.print(f"interrupted: {escape(str(path))} was not written", highlight=False)
        raise typer.Exit(130) from None


def _partial(path: Path) -> Path:
    """Where ``path`` is written until complete: hidden beside it, named after it while that name
    fits the 255 bytes a file name may take (a killed run's leftover is then replaced by the next)."""
    name = f".{path.name}.partial"
    if len(os.fsencode(name)) > 255:
        name = f".{hashlib.sha256(os.fsencode(path.name)).hexdigest()[:32]}.partial"
    return path.with_name(name)


def _forget_partial(partial: Path, special: bool) -> None:
    if not special:
        with contextlib.suppress(OSError):
            partial.unlink()


def fail(message: str, code: int = 2) -> NoReturn:
    """End the command: ``error: message`` on stderr (escaped: paths and OpenSSL's reasons hold
    brackets Rich would read as markup), and exit ``code`` (2: bad options or environment)."""
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    raise typer.Exit(code)


T = TypeVar("T")


class OutputFailed(Exception):
    """Standard output could not be written (a full disk, a device error); a reader that went
    away (a closed pipe) is no failure of this kind."""


@contextlib.contextmanager
def to_stdout() -> Iterator[None]:
    """Write to standard output within: what cannot be written (flushed at the end) raises
    ``OutputFailed``, which ``main`` says in one line."""
    if sys.stdout is None:  # started with it closed (``>&-``)
        raise OutputFailed("cannot write to standard output: it is closed")
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OutputFailed(f"cannot write to standard output: {exc.strerror or exc}") from exc


def require_stdin(path: Path, what: str) -> None:
    """One line and exit 2 when ``path`` is ``-`` and the command was started without standard
    input (``<&-``)."""
    if str(path) == "-" and sys.stdin is None:
        fail(f"cannot read {what} from standard input: it is closed")


def stop_as_ctrl_c() -> None:
    """From now on a SIGTERM (systemd, ``timeout``, ``kill``) ends the command as Ctrl-C does:
    saying how far it got, and leaving no half-written file behind. A shell starts background
    jobs of a script (``cmd &``) with SIGINT ignored; Python's Ctrl-C handling is put back for
    them, or the SIGTERM made into a SIGINT would be ignored with it."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))


def emit(text: str) -> None:
    """A line to standard output (``to_stdout``)."""
    with to_stdout():
        print(text)


class _Openable(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...


S = TypeVar("S", bound=_Openable)


def run_on_store(make_store: Callable[[], S], work: Callable[[S], Awaitable[T]]) -> T:
    """Make the store, open it, run ``work`` on it, close it; storage errors (a URL of no known
    kind among them) end the command with a message."""

    async def main() -> T:
        store = make_store()
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except StoreError as exc:
        report(err, logging.ERROR, str(exc))
        raise typer.Exit(2) from None


def require_store_opens(make_store: Callable[[], _Openable]) -> None:
    """Open and close the store once before serving: a database that cannot be reached or opened
    ends the command in one line, not in a traceback from the server's start."""

    async def nothing(store: _Openable) -> None:
        return None

    run_on_store(make_store, nothing)


def require_existing(
    path: Path, whose: str = "server", variable: str = "SESSIONEXPORT_DATA_DIR", option: str = "--data-dir"
) -> None:
    """For commands that read what a server keeps: a missing database means a wrong --data-dir
    (or ``option``), not an empty store; creating one there would hide the mistake (a token nobody
    checks, zero counts)."""
    if not path.exists():
        fail(f"no data at {path}: give the {whose}'s {option} (or {variable})")


def require_server_data(data_dir: Path, database_url: str | None) -> None:
    """``require_existing`` for the server's database: the SQLite file, in the data directory or
    named by a ``sqlite:///`` URL (a PostgreSQL database is not created by opening it)."""
    if not database_url:
        require_existing(data_dir / DATABASE_FILE)
    elif path := sqlite_file(database_url):
        require_existing(path, option="--database-url", variable=env("DATABASE_URL"))


def env(name: str) -> str:
    return f"SESSIONEXPORT_{name}"


DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar=env("DATA_DIR"),
        help="Directory of the embedded database and keys.",
        file_okay=False,
    ),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar=env("DATABASE_URL"),
        help="Database URL; default: SQLite in the data directory.",
    ),
]
SecretKey = Annotated[
    str | None,
    typer.Option(
        "--secret-key",
        envvar=env("SECRET_KEY"),
        callback=checked(check_keys),
        show_default=False,
        help="Fernet key(s), comma-separated, newest first; default: secret.key in the data directory.",
    ),
]


def loadable_ca_bundle(path: Path | None) -> Path | None:
    """``--ca-bundle`` checked when the command starts: certificates TLS can load (PEM)."""
    if path is not None:
        try:
            ssl.create_default_context().load_verify_locations(cafile=str(path))
        except (ssl.SSLError, OSError) as exc:
            raise typer.BadParameter(f"{path}: no PEM certificate TLS can load ({exc})") from None
    return path


CaBundle = Annotated[
    Path | None,
    typer.Option(
        "--ca-bundle",
        envvar=env("CA_BUNDLE"),
        exists=True,
        dir_okay=False,
        callback=loadable_ca_bundle,
        show_default=False,
        help="Extra CA certificates (PEM) trusted for export and token endpoints.",
    ),
]


def _proxy_url(value: str) -> None:
    from sessionexport.export.exchange import proxy_problem  # httpx only for the commands that send

    if problem := proxy_problem(value):
        raise ValueError(problem)


Proxy = Annotated[
    str | None,
    typer.Option(
        "--proxy",
        envvar=env("PROXY"),
        callback=checked(_proxy_url),
        show_default=False,
        help="An HTTP proxy export and token requests go through: http://[USER:PASS@]HOST:PORT (HTTPS"
        " goes by CONNECT, its certificate verified end to end). HTTPS_PROXY and the like are not used.",
    ),
]
AllowHttpLoopback = Annotated[
    bool,
    typer.Option(
        envvar=env("ALLOW_HTTP_LOOPBACK"),
        help="Accept http:// export and token URLs on loopback (local development only).",
    ),
]
RetentionDays = Annotated[
    float,
    typer.Option(
        envvar=env("RETENTION_DAYS"),
        min=0.001,
        max=36_500,  # a century: any longer is no retention, and beyond what a time in ms can reach
        help="Days a session stays in the log (at most 36,500). Every serve and worker purges: give"
        " all those sharing a database the same.",
    ),
]
LeaseSeconds = Annotated[
    float,
    typer.Option(
        envvar=env("LEASE_SECONDS"),
        min=1,
        max=3600,
        help="Seconds a worker holds an export shard without renewing it (renewed every third of"
        " that); a stopped worker's shards are taken over within about that time.",
    ),
]
MaxInFlight = Annotated[
    int,
    typer.Option(
        envvar=env("MAX_IN_FLIGHT"),
        min=1,
        max=1024,
        help="Bulks this process sends at once to one export, over all its shards.",
    ),
]


def _pem_file(variable: str, help: str) -> Any:
    return typer.Option(envvar=env(variable), exists=True, dir_okay=False, help=help)


TlsCert = Annotated[
    Path | None, _pem_file("TLS_CERT", "Serve HTTPS with this certificate chain (PEM), with --tls-key.")
]
TlsKey = Annotated[Path | None, _pem_file("TLS_KEY", "The private key (PEM) of --tls-cert.")]
# The worker's own names: serve's SESSIONEXPORT_TLS_* in an environment shared with it are not its.
MetricsTlsCert = Annotated[
    Path | None,
    _pem_file(
        "METRICS_TLS_CERT",
        "Serve --metrics-port over HTTPS with this certificate chain (PEM), with --metrics-tls-key.",
    ),
]
MetricsTlsKey = Annotated[
    Path | None, _pem_file("METRICS_TLS_KEY", "The private key (PEM) of --metrics-tls-cert.")
]
DEFAULT_DATA_DIR = Path("data")
