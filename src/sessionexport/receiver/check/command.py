"""The ``check-endpoint`` command: its options, and the results as a table."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sessionexport.cli_options import env, loadable_ca_bundle, to_stdout
from sessionexport.export.config import BasicAuth, OAuth2
from sessionexport.media_types import JSON, NDJSON, media_type
from sessionexport.model.elasticsearch_names import index_name_problem
from sessionexport.receiver.check.checks import run_checks
from sessionexport.receiver.check.probe import DEFAULT_TIMEOUT, CheckOptions
from sessionexport.receiver.check.verdicts import CheckResult, Outcome, exit_code, judge_scheme
from sessionexport.settings.validation import MEDIA_TYPE_WANTED, is_media_type

STYLES = {Outcome.PASS: "green", Outcome.WARN: "yellow", Outcome.FAIL: "bold red"}


def results_table(url: str, results: Sequence[CheckResult]) -> Table:
    table = Table("check", "outcome", "detail", title=f"check-endpoint {url}", title_justify="left")
    for result in results:
        # Details quote what endpoints said, brackets included: text, not markup.
        table.add_row(result.check, f"[{STYLES[result.outcome]}]{result.outcome}[/]", escape(result.detail))
    return table


def summary(results: Sequence[CheckResult]) -> str:
    counted = {outcome: sum(1 for r in results if r.outcome is outcome) for outcome in Outcome}
    return f"{counted[Outcome.PASS]} passed, {counted[Outcome.WARN]} warned, {counted[Outcome.FAIL]} failed"


def parse_basic(text: str | None) -> BasicAuth | None:
    if text is None:
        return None
    user, colon, password = text.partition(":")  # RFC 7617: the user name has no colon, the password may
    if not colon or not user:
        raise typer.BadParameter("takes USER:PASS", param_hint="--basic")
    return BasicAuth(user, password)


def parse_oauth(
    token_url: str | None, client_id: str | None, client_secret: str | None, scope: str | None
) -> OAuth2 | None:
    given = {"--token-url": token_url, "--client-id": client_id, "--client-secret": client_secret}
    if not any(given.values()) and scope is None:
        return None
    missing = [name for name, value in given.items() if not value]
    if missing:
        raise typer.BadParameter(f"OAuth2 needs {', '.join(given)}; missing {', '.join(missing)}")
    assert token_url is not None and client_id is not None and client_secret is not None
    check_absolute_url(token_url, "--token-url")
    return OAuth2(token_url, client_id, client_secret, scope or None)


def check_absolute_url(url: str, hint: str) -> None:
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # also what .port raises for a port out of range or not a number
        valid = False
    if not valid:
        raise typer.BadParameter(f"{url!r} is not an absolute http(s) URL with a valid port", param_hint=hint)
    if "@" in parts.netloc:  # as the export settings refuse it: it would be sent, and shown, as given
        raise typer.BadParameter(
            "must not contain credentials (user:password@): give them with --basic or the OAuth2 options",
            param_hint=hint,
        )


def cli_options(
    url: str,
    *,
    timeout: float,
    ca_bundle: Path | None,
    allow_http: bool,
    basic: str | None,
    oauth: OAuth2 | None,
    count_url: str | None,
    count_key: str,
    index: str | None = None,
    use_post: bool = False,
    content_type: str | None = None,
) -> CheckOptions:
    """The options, or a usage error (exit code 2) saying which one is wrong."""
    check_absolute_url(url, "URL")
    if index is not None and (reason := index_name_problem(index)):
        raise typer.BadParameter(f"{index!r}: {reason}", param_hint="--index")
    if content_type is not None and not is_media_type(content_type):  # as the export settings take it
        raise typer.BadParameter(MEDIA_TYPE_WANTED, param_hint="--content-type")
    if index is not None and content_type is not None and media_type(content_type) != NDJSON:
        raise typer.BadParameter(f"an export with sendDirect sends {NDJSON}", param_hint="--content-type")
    basic_auth = parse_basic(basic)
    if basic_auth is not None and oauth is not None:
        raise typer.BadParameter("give either --basic or OAuth2 (--token-url ...), not both")
    if count_url is not None:
        check_absolute_url(count_url, "--count-url")
        if judge_scheme(count_url) is not None and not allow_http:
            raise typer.BadParameter("must be https (or give --allow-http)", param_hint="--count-url")
    return CheckOptions(
        url=url,
        timeout=timeout,
        ca_bundle=ca_bundle,
        allow_http=allow_http,
        auth=basic_auth or oauth,
        count_url=count_url,
        count_key=count_key,
        index=index,
        use_post=use_post,
        content_type=content_type or JSON,
    )


def check_endpoint(
    url: Annotated[
        str, typer.Argument(help="Where exports go, e.g. https://host/export/events.", show_default=False)
    ],
    timeout: Annotated[
        float,
        typer.Option(
            envvar=env("CHECK_TIMEOUT"),
            min=0.1,
            max=300,
            help="The exporter's request timeout in seconds: slower than half of it warns, no answer fails.",
        ),
    ] = DEFAULT_TIMEOUT,
    ca_bundle: Annotated[
        Path | None,
        typer.Option(
            envvar=env("CHECK_CA_BUNDLE"),
            exists=True,
            dir_okay=False,
            callback=loadable_ca_bundle,
            show_default=False,
            help="Extra CA certificates (PEM) trusted for the endpoint, token and count URLs.",
        ),
    ] = None,
    allow_http: Annotated[
        bool,
        typer.Option(
            "--allow-http",
            envvar=env("CHECK_ALLOW_HTTP"),
            help="Run the checks over http:// too (still reported as FAIL: exports need https).",
        ),
    ] = False,
    basic: Annotated[
        str | None,
        typer.Option(
            envvar=env("CHECK_BASIC"), metavar="USER:PASS", show_default=False, help="Basic authentication."
        ),
    ] = None,
    token_url: Annotated[
        str | None,
        typer.Option(envvar=env("CHECK_TOKEN_URL"), show_default=False, help="OAuth2 access token URL."),
    ] = None,
    client_id: Annotated[
        str | None, typer.Option(envvar=env("CHECK_CLIENT_ID"), show_default=False, help="OAuth2 client id.")
    ] = None,
    client_secret: Annotated[
        str | None,
        typer.Option(
            envvar=env("CHECK_CLIENT_SECRET"),
            show_default=False,
            help="OAuth2 client secret (prefer the environment variable to the command line).",
        ),
    ] = None,
    scope: Annotated[
        str | None, typer.Option(envvar=env("CHECK_SCOPE"), show_default=False, help="OAuth2 scope, if any.")
    ] = None,
    count_url: Annotated[
        str | None,
        typer.Option(
            envvar=env("CHECK_COUNT_URL"),
            show_default=False,
            help="A GET returning JSON with the number of sessions stored: checks re-sends are not stored twice.",
        ),
    ] = None,
    count_key: Annotated[
        str,
        typer.Option(
            envvar=env("CHECK_COUNT_KEY"),
            help="Where the number is in the count JSON (dots for nested keys).",
        ),
    ] = "sessions",
    index: Annotated[
        str | None,
        typer.Option(
            envvar=env("CHECK_INDEX"),
            show_default=False,
            help="Check an Elasticsearch _bulk endpoint: bulks name this index, as an export with sendDirect"
            " sends them (POST, NDJSON), and every item of an answer must succeed.",
        ),
    ] = None,
    use_post: Annotated[
        bool,
        typer.Option(
            "--use-post",
            envvar=env("CHECK_USE_POST"),
            help="The export sends with POST (its usePost): the bulks go so, and a refused PUT only warns.",
        ),
    ] = False,
    content_type: Annotated[
        str | None,
        typer.Option(
            envvar=env("CHECK_CONTENT_TYPE"),
            show_default=False,
            help=f"The export's contentType ({JSON}; {NDJSON} with --index): the bulks go with it,"
            " and a refused other one only warns.",
        ),
    ] = None,
) -> None:
    """Check that an endpoint receives session exports properly.

    Sends what an exporter sends (samples with PUT and POST, JSON and NDJSON; a bulk filled to just
    under 896,000 bytes; the same bulk twice; a gzip bulk; requests without and with wrong credentials; a line
    that is not JSON) and reports every check as PASS, WARN or FAIL. Exits 1 when any check fails.
    The bulks go as the export sends them (--use-post, --content-type). With --index, the endpoint
    is Elasticsearch's _bulk, and an answer's failed items fail its check. The endpoint keeps what
    it is sent: about 130 generated sessions.
    """
    options = cli_options(
        url,
        timeout=timeout,
        ca_bundle=ca_bundle,
        allow_http=allow_http,
        basic=basic,
        oauth=parse_oauth(token_url, client_id, client_secret, scope),
        count_url=count_url,
        count_key=count_key,
        index=index,
        use_post=use_post,
        content_type=content_type,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the table says it all; not a line per request
    with Console(stderr=True, emoji=False).status("checking") as status:  # shown on a terminal only
        results = asyncio.run(run_checks(options, lambda check: status.update(f"checking: {check}")))
    with to_stdout():
        console = Console(emoji=False)
        console.print(results_table(url, results))
        console.print(summary(results))
    raise typer.Exit(exit_code(results))
