"""Elasticsearch's names, in one place. Index names: export settings (``sendDirect``), the
receiver's ``_bulk`` and ``check-endpoint --index`` all judge them by these rules. Document ids:
an export's ``_id`` of a session, which the receiver knows a session by too. No I/O."""

from __future__ import annotations

import re

from sessionexport.model.session import EPOCH_MS_MAX

_FORBIDDEN = set('\\/*?"<>| ,#:')
MAX_BYTES = 255
ID_MAX_BYTES = 512  # Elasticsearch refuses a whole _bulk request holding a longer _id
# What the tenant and session ids may take of an _id: the rest is two "-" and a startTime.
IDS_MAX_BYTES = ID_MAX_BYTES - 2 - len(str(EPOCH_MS_MAX))


def index_name_problem(name: str) -> str | None:
    """Why Elasticsearch refuses ``name`` for an index, or None. Of a date-math name
    (``<logs-{now/d}>``), which Elasticsearch resolves, the text around the dates is judged."""
    if name.startswith("<") and name.endswith(">"):
        return _date_math_problem(name[1:-1])
    if name in (".", ".."):
        return "must not be . or .."
    if name[:1] in ("-", "_", "+"):
        return "must not start with -, _ or +"
    if name != name.lower():
        return "must be lower case"
    if bad := sorted(_FORBIDDEN.intersection(name)):
        return f"must not contain {' '.join(repr(c) for c in bad)}"
    if len(name.encode()) > MAX_BYTES:
        return f"must be at most {MAX_BYTES} bytes"
    return None


# A date in a date-math name: ``{now/d}``, ``{now/M{yyyy.MM}}``, ``{now/d{yyyy.MM.dd|+01:00}}``:
# date math (from now, or from a date: ``{2024.01.01||+1M}``), then maybe a format and a time
# zone. What the format prints joins the name, so it may hold only fields that print numbers
# (not MMM, a month's name) and . - _ between them.
_IN_DATE = r'[^{}<>\s,#"*?\\]'
_MATH = rf"(?:now|\d){_IN_DATE}*"
_FORMAT = r"(?:(?!MMM)[yuMdDHhmsSwe._-])+"
_DATE = re.compile(rf"\{{{_MATH}(?:\{{{_FORMAT}(?:\|{_IN_DATE}+)?\}})?\}}")
DATE_SHAPE = "{now/d} or {now/d{yyyy.MM.dd|+01:00}} (a format of y M d H m s and . - _)"


def _date_math_problem(inner: str) -> str | None:
    """The rules that can be judged before the dates are resolved: on the text around them (dates
    resolve to digits and dots, which every rule takes)."""
    if not inner:
        return "must not be empty"
    if inner[:1] in ("-", "_", "+"):
        return "must not start with -, _ or +"
    text = _DATE.sub("", inner)
    if "{" in text or "}" in text:  # Elasticsearch could not resolve it, or refuse what it makes
        return f"must write each date as {DATE_SHAPE}"
    if text != text.lower():
        return "must be lower case"
    if bad := sorted(_FORBIDDEN.intersection(text)):
        return f"must not contain {' '.join(repr(c) for c in bad)}"
    return None


def document_id(tenant_id: str, user_session_id: str, start_time: int) -> str:
    """A session's ``_id``: ``<tenantId>-<userSessionId>-<startTime>``, Dynatrace's rule, with
    ``-`` and ``%`` escaped in the tenant id (as %2D, %25) so that ``a-b`` + ``c`` and ``a`` +
    ``b-c`` stay two documents instead of one overwriting the other. Real tenant ids have
    neither, and keep Dynatrace's ``_id``."""
    return f"{escaped(tenant_id)}-{user_session_id}-{start_time}"


def ids_problem(tenant_id: str, user_session_id: str) -> str | None:
    """Why no ``_id`` made of these ids fits Elasticsearch's limit, or None: checked when a
    session comes in, because Elasticsearch refuses the whole bulk it would be sent in."""
    if (len(tenant_id) + len(user_session_id)) * 4 <= IDS_MAX_BYTES:  # any text: at most 4 bytes a character
        return None
    size = len(escaped(tenant_id).encode()) + len(user_session_id.encode())
    if size <= IDS_MAX_BYTES:
        return None
    return (
        f"with tenantId it makes an Elasticsearch _id too long: the two may take {IDS_MAX_BYTES} bytes"
        f" together in UTF-8 (a - or % in tenantId counts 3), these take {size}"
    )


def escaped(part: str) -> str:
    """A part of an id joined with ``-``, that ``-`` (and ``%``) in it cannot be read as a joint."""
    return part.replace("%", "%25").replace("-", "%2D")
