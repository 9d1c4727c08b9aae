"""What an endpoint said when it refused a request, in a few words. No I/O.

A failed attempt, its dead letter and its alert name the endpoint's own reason, not only the
status: Elasticsearch's ``error.reason``, an OAuth 2.0 ``error`` and ``error_description``
(RFC 6749, 5.2), a ``message``, an HTML page's title, or else the first line of a text answer.
A long answer is looked at only in its start, and the reason is cut to one short line without
control characters: it goes into logs, alerts and the UI.
"""

from __future__ import annotations

import email.utils
import html
import re
from typing import Any

import orjson

from sessionexport.export.masking import masked, masked_answer

WHOLE_BYTES = 65536  # a JSON answer up to this size is parsed whole
HEAD_BYTES = 4096  # of a longer one, the start: enough for a first line or a title
REASON_CHARS = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def http_error(status: int, answer: bytes, secrets: tuple[str, ...] = ()) -> str:
    """``HTTP 400: <reason>``, or ``HTTP 400`` when the answer gives none."""
    reason = answer_reason(answer, secrets)
    return f"HTTP {status}: {reason}" if reason else f"HTTP {status}"


def answer_reason(answer: bytes, secrets: tuple[str, ...] = ()) -> str | None:
    """The reason an error answer gives, on one line of at most ``REASON_CHARS`` characters,
    every one of ``secrets`` masked in it (however the answer escaped them)."""
    answer = masked_answer(answer, secrets)
    head = answer if len(answer) <= WHOLE_BYTES else answer[:HEAD_BYTES]
    try:
        reason = _json_reason(orjson.loads(head))
    except orjson.JSONDecodeError:
        reason = _text_reason(head.decode("utf-8", "replace").strip())
    return said(reason, secrets)


def _text_reason(text: str) -> str | None:
    if text.startswith("<"):  # an HTML error page: its title says it, its first line does not
        title = _TITLE.search(text)
        return html.unescape(title.group(1)) if title else None
    return text.split("\n", 1)[0]


def _json_reason(document: Any) -> str | None:
    if not isinstance(document, dict):
        return None
    error = document.get("error")
    if isinstance(error, dict):  # Elasticsearch: {"error": {"type": ..., "reason": ...}, "status": 400}
        reason, kind = error.get("reason"), error.get("type")
        if isinstance(reason, str):
            return f"{kind}: {reason}" if isinstance(kind, str) else reason
    if isinstance(error, str):  # OAuth 2.0: {"error": "invalid_client", "error_description": ...}
        description = document.get("error_description")
        return f"{error} ({description})" if isinstance(description, str) else error
    message = document.get("message")
    return message if isinstance(message, str) else None


def said(text: str | None, secrets: tuple[str, ...]) -> str | None:
    """What an endpoint wrote, fit for dead letters, alerts and logs: ``secrets`` masked, on one
    line (``one_line``); None when it said nothing."""
    return one_line(masked(text, secrets)) if text else None


def one_line(text: str) -> str | None:
    """``text`` on one line of at most ``REASON_CHARS`` characters, without control characters
    (a NUL among them, which a PostgreSQL text column cannot hold); None when nothing is left."""
    text = _CONTROL.sub(" ", text).strip()
    if len(text) > REASON_CHARS:
        text = text[: REASON_CHARS - 1].rstrip() + "…"
    return text or None


def retry_after_seconds(value: str | None, now_ms: int) -> float | None:
    """The seconds a ``Retry-After`` header asks to wait (delay-seconds or an HTTP date), or None
    when there is none or it means nothing."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit alone takes "²" and other scripts' digits
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT
        return None
    return max(0.0, when.timestamp() - now_ms / 1000)
