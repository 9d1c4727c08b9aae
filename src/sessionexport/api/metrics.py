"""``GET /metrics`` (Prometheus), and the counting of what the data routes answer.

Counters come from this process (exporters, ingest). The gauges are read from the store at each
scrape, so every process that shares it tells the same: when the newest session joined the log,
and per export its state, backlog, lag and dead letters.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sessionexport.api.security import require
from sessionexport.clock import now_ms
from sessionexport.export.config import export_config
from sessionexport.export.metrics import EXPORT_STATES, ExportMetrics
from sessionexport.export.status import export_health, export_running
from sessionexport.export.supervisor import ExportSupervisor
from sessionexport.ingest.metrics import IngestMetrics
from sessionexport.settings.objects import SettingsService, masked_value
from sessionexport.settings.schemas import EXPORT_SCHEMA
from sessionexport.store import Store
from sessionexport.tokens import Scope as TokenScope

router = APIRouter(tags=["Metrics"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    description=(
        "Text exposition format. Per export: sessions and bytes delivered, sessions failed and replayed,"
        " bulks by outcome, attempt latency, state, backlog, lag and dead letters. Ingest: sessions that joined"
        " the log by source, duplicates, RUM events, the answers to ingest requests by status, and when"
        " the newest session joined the log."
    ),
    dependencies=[Depends(require(TokenScope.METRICS_READ))],
    response_class=Response,
    responses={
        200: {"description": "The metrics", "content": {"text/plain": {}}},  # 401, 403: api.errors
    },
)
async def metrics(request: Request) -> Response:
    state = request.app.state
    await _read_newest_session(state.store, state.ingest_metrics)
    here = state.exports if state.config.run_exporters else None  # else the leases in the store tell
    await _read_export_gauges(state.store, state.settings, state.metrics, here)
    return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)


async def _read_newest_session(store: Store, gauges: IngestMetrics) -> None:
    newest = await store.recent_sessions(limit=1)
    gauges.newest_session.set(newest[0].received_at / 1000 if newest else 0)


async def _read_export_gauges(
    store: Store, settings: SettingsService, gauges: ExportMetrics, here: ExportSupervisor | None
) -> None:
    """Each export's state, backlog, lag and dead letters, as its status route tells them."""
    now = now_ms()
    records = await settings.all(EXPORT_SCHEMA)
    for gone in gauges.exports() - {r.object_id for r in records}:
        gauges.forget(gone)  # deleted
    for record in records:
        export_id = record.object_id
        config = export_config(export_id, masked_value(record))  # no secret is needed here
        health = await export_health(store, config, await export_running(store, here, export_id), now)
        gauges.know(export_id)
        gauges.backlog.labels(export_id).set(health.backlog)
        gauges.lag.labels(export_id).set(health.lag_seconds or 0)
        gauges.dead_letters.labels(export_id).set(health.dead_letters)
        for state in EXPORT_STATES:
            gauges.state.labels(export_id, state).set(1 if health.state == state else 0)


class CountAnswers:
    """Counts what the data routes answer to POSTs (the ingest requests), by status: what senders
    were told, refusals included (a bad token, an invalid or too large body, a bad URL), which the
    routes themselves never see. Outermost, so that every other middleware's answer is seen."""

    def __init__(self, app: ASGIApp, metrics: IngestMetrics, routes: frozenset[str]) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] != "POST" or path not in self.routes:
            await self.app(scope, receive, send)
            return
        status: int | None = None

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            status = status or 500  # answered by the server's last resort
            raise
        finally:
            if status is not None:  # none: the client left before an answer
                self.metrics.requests.labels(path, str(status)).inc()
