"""What is sent: the exporter's own bytes (the documentation's samples, generated bulks)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

from sessionexport.clock import now_ms
from sessionexport.export.batching import Batcher
from sessionexport.export.config import SendDirect
from sessionexport.export.formats import bulk_body, encoded_size
from sessionexport.export.tuning import DYNATRACE_MAX_SESSIONS, ExportTuning
from sessionexport.generate.sessions import GeneratorOptions, Kind, generate_sessions
from sessionexport.model.samples import MOBILE, WEB_SYNTHETIC, doc_sample
from sessionexport.store.records import LogEntry

RESEND_SESSIONS = 20
GZIP_SESSIONS = 10
GARBAGE = b"this line is not JSON {\n"


def log_entry(seq: int, session: dict[str, Any]) -> LogEntry:
    """A generated session as the exporter reads it from the log: compact JSON bytes, stored once."""
    return LogEntry(
        seq=seq,
        received_at=now_ms(),
        tenant_id=session["tenantId"],
        user_session_id=session["userSessionId"],
        start_time=session["startTime"],
        user_type=session.get("userType"),
        application_type=session.get("applicationType"),
        country=session.get("country"),
        applications=(),
        body=orjson.dumps(session),
    )


def generated_entries(count: int, seed: int, kind: Kind, end_ms: int) -> list[LogEntry]:
    options = GeneratorOptions(kind=kind, end_ms=end_ms)
    return [log_entry(seq, session) for seq, session in enumerate(generate_sessions(count, seed, options))]


def samples_body(direct: SendDirect | None) -> bytes:
    """The two sample sessions of the original documentation (mobile, and synthetic web), as one
    body, byte for byte as published."""
    samples = [doc_sample(name) for name in (MOBILE, WEB_SYNTHETIC)]
    entries = [
        msgspec.structs.replace(log_entry(seq, orjson.loads(raw)), body=raw)
        for seq, raw in enumerate(samples)
    ]
    return bulk_body(entries, direct)


def large_bulk_body(seed: int, end_ms: int, direct: SendDirect | None) -> bytes:
    """The first bulk the exporter's flush rules make: full up to 896,000 bytes (or 1000 sessions)."""
    batcher = Batcher(ExportTuning())
    options = GeneratorOptions(kind="mixed", end_ms=end_ms)
    for seq, session in enumerate(generate_sessions(DYNATRACE_MAX_SESSIONS, seed, options)):
        entry = log_entry(seq, session)
        for bulk in batcher.offer(entry, encoded_size(entry, direct)):
            return bulk_body(bulk.entries, direct)
    return bulk_body(batcher.take().entries, direct)


@dataclass(frozen=True, slots=True)
class Bodies:
    samples: bytes
    large: bytes
    resend: bytes
    gzip: bytes  # sent compressed

    @classmethod
    def generate(cls, seed: int, direct: SendDirect | None) -> Bodies:
        # Different seeds: the bodies hold different sessions, so each can add to a count.
        end = now_ms()
        return cls(
            samples=samples_body(direct),
            large=large_bulk_body(seed + 2, end, direct),
            resend=bulk_body(generated_entries(RESEND_SESSIONS, seed + 3, "mixed", end), direct),
            gzip=bulk_body(generated_entries(GZIP_SESSIONS, seed + 4, "mixed", end), direct),
        )
