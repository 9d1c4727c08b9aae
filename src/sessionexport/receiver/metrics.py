"""``GET /metrics`` of the receiver: what it stored, in Prometheus' text format.

Read from its store at each scrape, so every receiving process (``--workers``) and every restart
tells the same totals: they are counts of what is stored, not of what one process saw.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric

from sessionexport.receiver.store.records import Counts


class _Snapshot:
    """A collector of families computed beforehand (the store is read asynchronously, the
    exposition is written synchronously)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def exposition(counts: Counts) -> bytes:
    documents = CounterMetricFamily(
        "sessionexport_received_documents",
        "Documents stored, by kind (session: a session sent to the export path; legacy: the old export"
        " format kept as sent; document: a document of a _bulk request, sessions included)",
        labels=["kind"],
    )
    documents.add_metric(["session"], counts.sessions)
    documents.add_metric(["legacy"], counts.legacy)
    documents.add_metric(["document"], counts.documents)
    requests = CounterMetricFamily(
        "sessionexport_received_requests",
        "Requests to the data routes, by outcome (stored; refused: answered 400 or more, nothing stored)",
        labels=["outcome"],
    )
    requests.add_metric(["stored"], counts.requests - counts.refused_requests)
    requests.add_metric(["refused"], counts.refused_requests)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot([documents, requests]))
    return generate_latest(registry)
