"""JSON log lines: one object per line with the record's fields."""

from __future__ import annotations

import io
import json
import logging

import httpx
import pytest
from rich.console import Console

from sessionexport.logs import JsonFormatter, announce, configure_logging


def test_json_lines_carry_message_level_logger_and_extra_fields() -> None:
    record = logging.LogRecord(
        "sessionexport.export", logging.WARNING, __file__, 1, "bulk %s failed", ("x",), None
    )
    record.export = "abc"
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["message"] == "bulk x failed" and entry["level"] == "warning"
    assert entry["logger"] == "sessionexport.export" and entry["export"] == "abc"
    assert entry["ts"].endswith("Z")


def test_exceptions_are_included() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    entry = json.loads(JsonFormatter().format(record))
    assert "ValueError: boom" in entry["exception"]


def test_no_request_url_is_logged_by_the_http_library(capsys: pytest.CaptureFixture[str]) -> None:
    """An endpoint URL may hold a credential in its query (a webhook's ?token=...)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging("text")
        transport = httpx.MockTransport(lambda request: httpx.Response(200))
        with httpx.Client(transport=transport) as client:
            client.put("https://collector.example/in?token=s3cr3t-in-url", content=b"{}")
        logging.getLogger("sessionexport.export").info("an export line is still logged")
    finally:
        root.handlers[:], root.level = handlers, level
        logging.getLogger("httpx").setLevel(logging.NOTSET)
    logged = capsys.readouterr().err
    assert "an export line is still logged" in logged and "s3cr3t-in-url" not in logged


def test_a_start_up_line_is_printed_as_it_is() -> None:
    """Paths and fingerprints are no markup: ``[x]`` stays, and ``:CD:`` is no emoji."""
    console = Console(file=io.StringIO(), width=200, emoji=False)
    announce(console, "TLS certificate data[x]/cert.pem (SHA-256 72:97:29:CD:3E:DE)")
    assert console.file.getvalue() == "TLS certificate data[x]/cert.pem (SHA-256 72:97:29:CD:3E:DE)\n"  # type: ignore[attr-defined]


def test_the_commands_consoles_make_no_emoji_of_what_they_print() -> None:
    from sessionexport import cli_options, demo  # the commands print to cli_options.err

    for console in (cli_options.err, demo.out, demo.console):
        with console.capture() as captured:
            console.print("29:CD:3E")
        assert captured.get() == "29:CD:3E\n"
