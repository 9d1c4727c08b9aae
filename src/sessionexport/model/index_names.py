"""Elasticsearch's rules for index names, in one place: export settings (``sendDirect``), the
receiver's ``_bulk`` and ``check-endpoint --index`` all judge names by them. No I/O."""

from __future__ import annotations

_FORBIDDEN = set('\\/*?"<>| ,#:')
MAX_BYTES = 255


def index_name_problem(name: str) -> str | None:
    """Why Elasticsearch refuses ``name`` for an index, or None. A date-math name
    (``<logs-{now/d}>``) is left to Elasticsearch, which resolves it."""
    if name.startswith("<") and name.endswith(">"):
        return None
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
