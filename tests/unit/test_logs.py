"""JSON log lines: one object per line with the record's fields."""

from __future__ import annotations

import json
import logging

from sessionexport.logs import JsonFormatter


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
