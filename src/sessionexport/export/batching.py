"""When a bulk is sent: Dynatrace's flush rules, plus a bound on how long a session waits. No I/O.

A bulk is flushed at the first of:
- it holds ``flushMaxSessions`` sessions (1000);
- the next session would take its body over ``flushMaxBytes`` (896,000 bytes); a single session
  larger than that is sent alone;
- no session finished (joined the log) for ``flushQuietSeconds`` (30 s);
- its oldest session has waited ``flushIntervalSeconds`` (5 s) since it finished.

``Batcher`` applies the size rules, ``FlushTimer`` the time rules.
"""

from __future__ import annotations

import math
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


@dataclass
class FlushTimer:
    """The time rules as deadlines on a monotonic clock (seconds).

    When a session joined the log is a wall-clock time (epoch ms, of whichever host stored it).
    Each is read against the wall clock once, when the exporter sees it: a clock stepped later
    (NTP, a resumed VM) then neither holds the pending sessions back for the length of the step
    nor sends them early. A time ahead of the clock (another host's, or this one stepped back)
    counts as now: a session waits a rule's full time at most.
    """

    tuning: ExportTuning
    _age_due: float = math.inf
    _quiet_due: float = math.inf

    def arrived(self, received_at: int, now: int, mono: float) -> None:
        """The newest session seen joined the log at ``received_at``: the quiet rule counts from it."""
        self._quiet_due = mono + wait_left(received_at, self.tuning.flushQuietSeconds, now)

    def started(self, first: LogEntry, now: int, mono: float) -> None:
        """``first`` is the oldest session of a new bulk: the age rule counts from it."""
        self._age_due = mono + wait_left(first.received_at, self.tuning.flushIntervalSeconds, now)

    def seconds_left(self, mono: float) -> float:
        """Until the pending sessions must go (0: now)."""
        return max(0.0, min(self._age_due, self._quiet_due) - mono)


def wait_left(since: int, wait_seconds: float, now: int) -> float:
    """Seconds left at ``now`` of a wait that began at ``since`` (both epoch ms), from 0 (over) to
    the whole wait (``since`` at or after ``now``)."""
    return min(max(since / 1000 + wait_seconds - now / 1000, 0.0), wait_seconds)
