"""Liveness and readiness, without authentication (for load balancers and orchestrators)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from sessionexport import __version__

router = APIRouter(tags=["Health"])


@router.get(
    "/health",
    summary="Health: the server is up and its store answers",
    description="No token needed (for load balancers). 503 when the store does not answer.",
    responses={503: {"description": "The store does not answer"}},
)
async def health(request: Request) -> dict[str, object]:
    await request.app.state.store.recent_sessions(limit=1)  # the store answers (an index lookup)
    return {"status": "ok", "version": __version__}
