"""The sessions page: recent sessions newest first, search by userSessionId or userId, and one
session's user actions and raw JSON. (Display only: sessions are parsed here to be shown, never on
the export path.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sessionexport.model.validation import NOT_JSON, decode_any
from sessionexport.store.base import sessions_page
from sessionexport.store.records import INT_MAX, StoredSession
from sessionexport.tokens import Scope
from sessionexport.web.app import Ui, Visit, stored_id

PAGE_SIZE = 50
PAGE_BYTES = 4 << 20  # of sessions read for one page (at least one)
SEARCH_FIELDS = {"userSessionId": "User session id", "userId": "User id"}


def routes(ui: Ui) -> list[Route]:
    read = (Scope.SESSIONS_READ,)
    return [
        Route("/sessions", ui.page(list_sessions, scopes=read), methods=["GET"]),
        Route("/sessions/{seq:int}", ui.page(show_session, scopes=read), methods=["GET"]),
    ]


@dataclass(frozen=True)
class SessionRow:
    seq: int
    received_at: int
    document: dict[str, Any]

    def get(self, name: str) -> Any:
        return self.document.get(name)


async def list_sessions(ui: Ui, request: Request, visit: Visit) -> Response:
    query = request.query_params.get("q", "").strip()
    field = request.query_params.get("by", "userSessionId")
    field = field if field in SEARCH_FIELDS else "userSessionId"
    before = request.query_params.get("before", "")
    found, more = await sessions_page(
        ui.store,
        limit=PAGE_SIZE,
        max_bytes=PAGE_BYTES,  # each is read to be shown: a page of huge sessions stops early
        user_session_id=query if query and field == "userSessionId" else None,
        user_id=query if query and field == "userId" else None,
        before_seq=stored_id(before),
    )
    page = [_row(s) for s in found]
    return ui.render(
        request,
        visit,
        "sessions.html",
        rows=page,
        query=query,
        by=field,
        fields=SEARCH_FIELDS,
        next_before=page[-1].seq if more else None,
    )


async def show_session(ui: Ui, request: Request, visit: Visit) -> Response:
    seq = request.path_params["seq"]
    found = await ui.store.recent_sessions(before_seq=seq + 1, limit=1) if seq < INT_MAX else []
    if not found or found[0].seq != seq:
        return ui.render(
            request,
            visit,
            "error.html",
            status=404,
            title="No such session",
            message=f"No session {seq} in the log: it may have passed the retention period.",
        )
    row = _row(found[0])
    raw = _pretty(found[0].body)
    return ui.render(request, visit, "session.html", row=row, actions=row.get("userActions") or [], raw=raw)


def _pretty(body: bytes) -> str:
    """The stored bytes indented, not re-serialised (escapes stay as sent); as stored when they
    nest too deeply to be indented."""
    try:
        return msgspec.json.format(body, indent=2).decode()
    except (msgspec.DecodeError, RecursionError):
        return body.decode(errors="replace")


def _row(session: StoredSession) -> SessionRow:
    # decode_any, not orjson: a field of the sender's own may hold 1e999 (valid JSON, kept unread
    # at ingest), which orjson refuses to read.
    try:
        document = decode_any(session.body)
    except NOT_JSON:  # a field of the sender's own nested deeper than a page's call stack reads
        document = _identity(session)
    return SessionRow(session.seq, session.received_at, document)


def _identity(session: StoredSession) -> dict[str, Any]:
    """What the log knows of a session without reading its body."""
    return {
        "tenantId": session.tenant_id,
        "userSessionId": session.user_session_id,
        "startTime": session.start_time,
        "endTime": session.end_time,
    }
