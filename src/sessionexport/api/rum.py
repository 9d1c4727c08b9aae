"""``POST /api/v2/rum/events``: RUM events in; the sessionizer turns them into completed sessions."""

from __future__ import annotations

import functools
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from sessionexport.api.errors import ApiError, Violation
from sessionexport.api.rendering import OrjsonResponse
from sessionexport.api.security import require
from sessionexport.api.usersessions import BODY_ERRORS, COMPRESSED_BODIES, read_limited_body, room_for_body
from sessionexport.clock import now_ms
from sessionexport.ingest.documents import RejectedBody
from sessionexport.ingest.events import MAX_EVENT_BYTES, parse_events
from sessionexport.ingest.sessionizer import SessionizerSettings
from sessionexport.media_types import NDJSON, media_type
from sessionexport.model.events import EVENT_TYPES
from sessionexport.request_bodies import parse_off_loop
from sessionexport.tokens import Scope

EVENT_LIMIT = SessionizerSettings().event_limit

router = APIRouter(prefix="/api/v2/rum", tags=["RUM events"])


class EventsResult(BaseModel):
    accepted: int
    duplicates: int = Field(description="Events already received (same tenantId, sessionId, eventId)")
    late: int = Field(description="Events for a part of the session that was already completed: not kept")
    overflow: int = Field(
        description=f"Events beyond the {EVENT_LIMIT:,} an open session holds at once: not kept"
    )


@router.post(
    "/events",
    summary="Ingest RUM events",
    description=(
        f"Body: `{NDJSON}`, one event per line (at most {MAX_EVENT_BYTES // 1024} KiB), of type"
        f" {', '.join(f'`{t}`' for t in EVENT_TYPES)}; each names"
        " its session (`tenantId`, `sessionId`), has an `eventId` unique within it and a `timestamp` (epoch"
        " ms). Events may come in any order, late or twice. The request is kept whole or not at all; sessions"
        " are completed by the documented rules (end event, inactivity, 6 h, 200 actions) and join the"
        " session log like ingested ones." + COMPRESSED_BODIES
    ),
    response_model=EventsResult,
    responses={
        400: {"description": "Invalid events: each problem with its line and field path; nothing kept"},
        **BODY_ERRORS,
    },
    openapi_extra={"requestBody": {"required": True, "content": {NDJSON: {"schema": {"type": "string"}}}}},
    dependencies=[Depends(require(Scope.SESSIONS_INGEST))],
)
async def ingest_events(request: Request) -> OrjsonResponse:
    media = media_type(request.headers.get("content-type", ""))
    if media != NDJSON:  # refused at once, not after waiting for room
        message = f"unsupported content type {media or '(none)'!r}: use {NDJSON}"
        raise ApiError(400, message, [Violation("Content-Type", message, "HEADER")])
    async with room_for_body(request):
        return await _ingest_events(request)


async def _ingest_events(request: Request) -> OrjsonResponse:
    body = await read_limited_body(request, request.app.state.config.max_body_bytes)
    try:
        received = await parse_off_loop(functools.partial(parse_events, now=now_ms()), body)
    except RejectedBody as exc:
        violations = [Violation(p.path, p.message, location=p.location) for p in exc.problems]
        raise ApiError(400, exc.summary("nothing was kept"), violations) from None
    result = await request.app.state.sessionizer.accept(received)
    request.app.state.ingest_metrics.received_events(result)
    answer: dict[str, Any] = {
        "accepted": result.accepted,
        "duplicates": result.duplicates,
        "late": result.late,
        "overflow": result.overflow,
    }
    return OrjsonResponse(answer)
