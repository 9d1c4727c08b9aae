"""Prometheus metrics of what comes in: sessions joining the log (by source), RUM events, the
answers the data routes give, and when the newest session joined. Counters count what this process
did, as the export metrics do (Prometheus sums the processes); the newest session is read from the
store at a scrape."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from sessionexport.store.records import EventsResult

API, RUM = "api", "rum"  # where a session came from: POST /api/v2/usersessions, or RUM events
EVENT_RESULTS = ("accepted", "duplicate", "late", "overflow")


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.sessions = Counter(
            "sessionexport_sessions_ingested",
            "Sessions that joined the log, by source (api: ingested whole; rum: completed from RUM events)",
            ["source"],
            registry=self.registry,
        )
        self.duplicates = Counter(
            "sessionexport_sessions_duplicate",
            "Sessions sent again (same tenantId, userSessionId, startTime): counted, not stored twice",
            ["source"],
            registry=self.registry,
        )
        self.events = Counter(
            "sessionexport_rum_events",
            "RUM events received, by result (accepted, duplicate, late: its part was already completed,"
            " overflow: its open session held as many events as it may)",
            ["result"],
            registry=self.registry,
        )
        self.requests = Counter(
            "sessionexport_ingest_requests",
            "Requests to the data routes, by route and HTTP status (400: invalid, 413: too large, ...)",
            ["route", "code"],
            registry=self.registry,
        )
        self.newest_session = Gauge(
            "sessionexport_log_newest_session_timestamp_seconds",
            "When the newest session in the log joined it (Unix time; 0: the log is empty)",
            registry=self.registry,
        )
        for source in (API, RUM):  # present from the start, so that rate() sees the first ones
            for counter in (self.sessions, self.duplicates):
                counter.labels(source)
        for result in EVENT_RESULTS:
            self.events.labels(result)

    def joined(self, source: str, accepted: int, duplicates: int) -> None:
        """``accepted`` sessions joined the log; ``duplicates`` were in it already."""
        self.sessions.labels(source).inc(accepted)
        self.duplicates.labels(source).inc(duplicates)

    def received_events(self, result: EventsResult) -> None:
        self.events.labels("accepted").inc(result.accepted)
        self.events.labels("duplicate").inc(result.duplicates)
        self.events.labels("late").inc(result.late)
        self.events.labels("overflow").inc(result.overflow)
