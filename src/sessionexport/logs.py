"""Logging setup: readable text for terminals, one JSON object per line for log pipelines.

Nothing logged carries a secret: log calls name exports by objectId and report statuses and
reasons, never configuration values.
"""

from __future__ import annotations

import logging
import time
from typing import Literal

import orjson
from rich.console import Console
from rich.markup import escape

LogFormat = Literal["text", "json"]
# uvicorn adds color_message: the message again, with terminal colour codes
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",
}
_format: LogFormat = "text"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def announce(console: Console, message: str) -> None:
    """A start-up line for the operator (where it listens, which certificate): printed as is for a
    terminal, logged when logs are JSON, so that every line a log pipeline gets is one object."""
    if _format == "json":
        logging.getLogger("sessionexport").info(message)
    else:
        console.print(message, highlight=False, markup=False)  # paths, fingerprints: as they are


def report(console: Console, level: int, message: str) -> None:
    """An error or a warning for the operator, as ``announce`` says a start-up line: printed for
    a terminal, logged when logs are JSON (a pipeline reads a service's failure to start too)."""
    if _format == "json":
        logging.getLogger("sessionexport").log(level, message)
    else:
        label = "[red]error:[/red]" if level >= logging.ERROR else "[yellow]warning:[/yellow]"
        console.print(f"{label} {escape(message)}", highlight=False)


def configure_logging(fmt: LogFormat = "text", level: int = logging.INFO) -> None:
    global _format
    _format = fmt
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
        handler.formatter.converter = time.gmtime  # type: ignore[union-attr]
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request with its whole URL, which may hold a credential in its query
    # (a webhook's ?token=...): the exporters say what they sent, masked, themselves.
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))
