"""Template filters: times, durations and sizes as people read them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from sessionexport.clock import now_ms, utc_text


def export_names(exports: list[tuple[str, dict[str, Any]]]) -> dict[str, str]:
    """How the UI names each export (object id, stored value): its URL, with the Elasticsearch
    index it writes to, and the end of its id where that still names two exports alike (one
    cluster, several indexes, or one endpoint twice)."""
    names = {object_id: _export_name(value) for object_id, value in exports}
    counts = Counter(names.values())
    return {oid: f"{name} · …{oid[-6:]}" if counts[name] > 1 else name for oid, name in names.items()}


def _export_name(value: dict[str, Any]) -> str:
    url = str(value.get("endpointDefinition", {}).get("endpointUrl", ""))
    direct = value.get("sendDirect") or {}
    return f"{url} → index {direct.get('indexName')}" if direct.get("active") else url


when = utc_text  # ``2026-11-26 15:08:22 UTC``; an em dash for never


def ago(epoch_ms: int | None) -> str:
    if epoch_ms is None:
        return "never"
    return f"{seconds(max(0.0, (now_ms() - epoch_ms) / 1000))} ago"


def seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"


def millis(value: int | float | None) -> str:
    return "—" if value is None else seconds(value / 1000)


def size(count: int) -> str:
    if count < 1000:
        return f"{count} bytes"
    return f"{count / 1000:.1f} KB" if count < 1_000_000 else f"{count / 1_000_000:.1f} MB"


def number(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


ALL: dict[str, Callable[..., Any]] = {
    "when": when,
    "ago": ago,
    "seconds": seconds,
    "millis": millis,
    "size": size,
    "number": number,
}
