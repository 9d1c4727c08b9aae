"""When a bulk is sent: Dynatrace's flush rules, plus a bound on how long a session waits. No I/O.

A bulk is flushed at the first of:
- it holds ``flushMaxSessions`` sessions (1000);
- the next session would take its body over ``flushMaxBytes`` (896,000 bytes); a single session
  larger than that is sent alone;
- no session finished (joined the log) for ``flushQuietSeconds`` (30 s);
- its oldest session has waited ``flushIntervalSeconds`` (5 s) since it finished.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sessionexport.export.tuning import ExportTuning
from sessionexport.store.records import LogEntry


@dataclass
class Bulk:
    entries: list[LogEntry]
    size: int

    @property
    def first_seq(self) -> int:
        return self.entries[0].seq

    @property
    def last_seq(self) -> int:
        return self.entries[-1].seq


@dataclass
class Batcher:
    tuning: ExportTuning
    pending: list[LogEntry] = field(default_factory=list)
    size: int = 0

    def offer(self, entry: LogEntry, size: int) -> list[Bulk]:
        """Add a session; return the bulks (zero, one or two) that are now complete, in order."""
        return self.offer_all([entry], [size])

    def offer_all(self, entries: Sequence[LogEntry], sizes: Sequence[int]) -> list[Bulk]:
        """Add sessions in order (``sizes``: the bytes each adds to a body); return the bulks that
        are now complete, in order. One call per read of the log, not per session: the loop
        below is the exporter's per-session work."""
        max_bytes, max_sessions = self.tuning.flushMaxBytes, self.tuning.flushMaxSessions
        ready, pending, size = [], self.pending, self.size
        for entry, entry_size in zip(entries, sizes, strict=True):
            if pending and size + entry_size > max_bytes:
                ready.append(Bulk(pending, size))
                pending, size = [], 0
            pending.append(entry)
            size += entry_size
            if len(pending) >= max_sessions or size >= max_bytes:
                ready.append(Bulk(pending, size))
                pending, size = [], 0
        self.pending, self.size = pending, size
        return ready

    def take(self) -> Bulk:
        bulk = Bulk(self.pending, self.size)
        self.pending, self.size = [], 0
        return bulk

    def ms_until_due(self, now: int, last_arrival: int) -> int | None:
        """Milliseconds until the pending sessions must go (0: now); None when nothing is pending."""
        if not self.pending:
            return None
        by_age = self.pending[0].received_at + int(self.tuning.flushIntervalSeconds * 1000)
        by_quiet = last_arrival + int(self.tuning.flushQuietSeconds * 1000)
        return max(0, min(by_age, by_quiet) - now)
