"""Prometheus metrics of the exporters, in a registry per app (tests build many apps).

Counters count what this process did (Prometheus sums processes, and rate() takes restarts), kept
while the export exists, whoever runs it: a pause or an edit is no reset. The gauges (backlog, lag,
dead letters) are read from the store at each scrape. A deleted export's series go at the next.
"""

from __future__ import annotations

import contextlib
from typing import Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

BULK_OUTCOMES = ("delivered", "partly_delivered", "dead_lettered")
ATTEMPT_RESULTS = ("ok", "error", "timeout")
ExportState = Literal["running", "failing", "paused", "stopped"]  # as the status route says
EXPORT_STATES: tuple[ExportState, ...] = get_args(ExportState)


class ExportMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        labels = ["export"]
        self.sessions = Counter(
            "sessionexport_sessions_delivered", "Sessions delivered", labels, registry=self.registry
        )
        self.bytes = Counter(
            "sessionexport_bytes_delivered", "Request body bytes delivered", labels, registry=self.registry
        )
        self.failed = Counter(
            "sessionexport_sessions_failed",
            "Sessions kept as dead letters (whole bulks, or documents Elasticsearch rejected)",
            labels,
            registry=self.registry,
        )
        self.replayed = Counter(
            "sessionexport_sessions_replayed",
            "Dead-lettered sessions delivered by a replay",
            labels,
            registry=self.registry,
        )
        self.retried = Counter(
            "sessionexport_items_retried",
            "Elasticsearch items sent again after a 429 or 5xx item answer",
            labels,
            registry=self.registry,
        )
        self.bulks = Counter(
            "sessionexport_bulks",
            "Bulks by outcome (delivered, partly_delivered, dead_lettered)",
            [*labels, "outcome"],
            registry=self.registry,
        )
        self.attempt_seconds = Histogram(
            "sessionexport_attempt_duration_seconds",
            "Duration of each delivery attempt",
            labels,
            # up to timeoutSeconds' largest (300): an attempt cut at the default 30 s lands in 45
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 20, 30, 45, 60, 120, 300),
            registry=self.registry,
        )
        self.attempts = Counter(
            "sessionexport_attempts",
            "Delivery attempts by result (ok, error, timeout)",
            [*labels, "result"],
            registry=self.registry,
        )
        self.backlog = Gauge(
            "sessionexport_backlog_sessions",
            "Sessions in the log behind the export's cursor",
            labels,
            registry=self.registry,
        )
        self.lag = Gauge(
            "sessionexport_lag_seconds",
            "Age of the oldest session not yet decided",
            labels,
            registry=self.registry,
        )
        self.dead_letters = Gauge(
            "sessionexport_dead_letters", "Dead letters waiting for replay", labels, registry=self.registry
        )
        self.state = Gauge(
            "sessionexport_export_state",
            "1 for the state the export is in, 0 for the others: running; failing (an alert is open);"
            " paused (enableUserSessionExport is off); stopped (no worker exports it)",
            [*labels, "state"],
            registry=self.registry,
        )

    def know(self, export_id: str) -> None:
        """Every counted series of an export, at 0 until something happens: an alert rule or a
        rate() sees 0 from the first scrape, not a series that is missing until then."""
        for metric, values in self._counted():
            for value in values:
                metric.labels(export_id, *value)

    def forget(self, export_id: str) -> None:
        """The export was deleted: every series of it goes."""
        gauges: list[tuple[MetricWrapperBase, list[tuple[str, ...]]]] = [
            (self.backlog, [()]),
            (self.lag, [()]),
            (self.dead_letters, [()]),
            (self.state, [(state,) for state in EXPORT_STATES]),
        ]
        for metric, values in [*self._counted(), *gauges]:
            for value in values:
                with contextlib.suppress(KeyError):
                    metric.remove(export_id, *value)

    def _counted(self) -> list[tuple[MetricWrapperBase, list[tuple[str, ...]]]]:
        """What is counted per export, and the values of its labels beside ``export``."""
        alone: list[tuple[str, ...]] = [()]
        return [
            (self.sessions, alone),
            (self.bytes, alone),
            (self.failed, alone),
            (self.replayed, alone),
            (self.retried, alone),
            (self.attempt_seconds, alone),
            (self.bulks, [(outcome,) for outcome in BULK_OUTCOMES]),
            (self.attempts, [(result,) for result in ATTEMPT_RESULTS]),
        ]

    def exports(self) -> set[str]:
        """The exports this registry has series of."""
        return {
            sample.labels["export"]
            for family in self.registry.collect()
            for sample in family.samples
            if "export" in sample.labels
        }
