"""The exporter's tuning knobs, set per export through ``exportBehavior.customConfiguration``.

The configuration is JSON text, e.g. ``{"flushIntervalSeconds": 1, "retries": 5}``; absent knobs
keep Dynatrace's behaviour (1000 sessions / 896,000 bytes / 30 s quiet, 30 s timeout, 3 retries,
bodies sent uncompressed).
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args, get_origin, get_type_hints

import msgspec

DYNATRACE_MAX_SESSIONS = 1000
DYNATRACE_MAX_BYTES = 896_000


class ExportTuning(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    flushMaxSessions: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = DYNATRACE_MAX_SESSIONS
    flushMaxBytes: Annotated[int, msgspec.Meta(ge=1024, le=64 * 1024 * 1024)] = DYNATRACE_MAX_BYTES
    flushQuietSeconds: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    flushIntervalSeconds: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 5.0
    retries: Annotated[int, msgspec.Meta(ge=0, le=20)] = 3
    backoffSeconds: Annotated[float, msgspec.Meta(ge=0, le=600)] = 1.0
    backoffMaxSeconds: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 30.0
    timeoutSeconds: Annotated[float, msgspec.Meta(gt=0, le=300)] = 30.0
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=16)] = 1
    # Parts the export's log is split in (seq % shards), each exported on its own, by whichever
    # worker holds its lease: bulks of different shards go out in parallel, in no order among them.
    shards: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    # "gzip": bodies go out with Content-Encoding: gzip, for endpoints that take it (Elasticsearch
    # does; a plain webhook may not). The flush rules still count the bytes before compression.
    compression: Literal["none", "gzip"] = "none"


KNOBS = tuple(ExportTuning.__struct_fields__)
_CHOICES = {
    name: get_args(hint) for name, hint in get_type_hints(ExportTuning).items() if get_origin(hint) is Literal
}


class TuningError(ValueError):
    pass


def parse_tuning(text: str | None) -> ExportTuning:
    """The knobs of a custom configuration (null or blank: all defaults); TuningError says what is wrong."""
    if text is None or not text.strip():
        return ExportTuning()
    try:
        return msgspec.json.decode(text, type=ExportTuning)
    except msgspec.ValidationError as exc:
        message, _, where = str(exc).partition(" - at `$")
        where = where.rstrip("`").lstrip(".")
        if message.startswith("Object contains unknown field"):
            return _raise(f"{message.removeprefix('Object contains ')}; known knobs: {', '.join(KNOBS)}")
        if message.startswith("Expected `object`"):
            return _raise(
                f"must be a JSON object of knobs ({', '.join(KNOBS)}), {message[0].lower()}{message[1:]}"
            )
        if message.startswith("Invalid enum value") and where in _CHOICES:
            message += f"; expected one of {', '.join(_CHOICES[where])}"
        return _raise(f"{where}: {message}" if where else message)
    except msgspec.DecodeError as exc:
        return _raise(f"not valid JSON: {exc}")


def _raise(message: str) -> ExportTuning:
    raise TuningError(message)
