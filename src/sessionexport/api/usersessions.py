"""``/api/v2/usersessions``: completed sessions in (all or nothing per request) and back out."""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

from sessionexport.api.errors import ApiError, Violation, page_key_alone
from sessionexport.api.rendering import OrjsonResponse, large_answer
from sessionexport.api.security import get_store, require
from sessionexport.clock import now_ms
from sessionexport.content_encoding import UnreadableBody
from sessionexport.ingest.documents import RejectedBody, UnsupportedMediaType, body_parser
from sessionexport.ingest.metrics import API
from sessionexport.media_types import JSON, NDJSON
from sessionexport.request_bodies import BodyTooLarge, Busy, parse_off_loop, read_body
from sessionexport.store import Store
from sessionexport.store.base import sessions_page
from sessionexport.store.records import INT_MAX, NewSession
from sessionexport.tokens import Scope

router = APIRouter(prefix="/api/v2/usersessions", tags=["User sessions"])

# 401, 403, 413, 415 and 503 are documented on every route by api.errors.document_errors.
_INGEST_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "description": "Invalid sessions; `constraintViolations` lists each problem with its line or index"
    },
}
_QUERY_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "description": "Invalid query parameters (a pageSize out of range, a nextPageKey not issued here or"
        " not alone); `constraintViolations` names each"
    },
}

# Both ingest routes (sessions, RUM events) read their bodies with read_limited_body.
PAGE_BYTES = 16 << 20  # a page of sessions stops once they reach this (at least one session)
COMPRESSED_BODIES = (
    " The body may be compressed (`Content-Encoding: gzip` or `deflate`); the size limit applies to it"
    " as sent and decoded."
)
BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"description": "Body larger than the server's limit, as sent or decoded"},
    415: {"description": "A `Content-Encoding` other than gzip or deflate"},
    503: {
        "description": "The store failed, its disk is full, or the server holds too many request bodies"
        " (the message says which); nothing was stored. `Retry-After` says when to try again"
    },
}


class IngestResult(BaseModel):
    accepted: int
    duplicates: int


class SessionPage(BaseModel):
    userSessions: list[dict[str, object]]
    nextPageKey: str | None
    pageSize: int


@router.post(
    "",
    summary="Ingest completed user sessions",
    description=(
        f"Body: `{NDJSON}` (one session per line) or `{JSON}` (an array of sessions). The request is stored"
        " whole or not at all. A session whose identity (`tenantId`, `userSessionId`, `startTime`) is already"
        " in the log is counted as a duplicate and not stored again. A body without a session (empty,"
        " blank lines only, `[]`) is a 400." + COMPRESSED_BODIES
    ),
    response_model=IngestResult,
    responses={**_INGEST_ERRORS, **BODY_ERRORS},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                NDJSON: {"schema": {"type": "string"}},
                JSON: {"schema": {"type": "array", "items": {"type": "object"}, "minItems": 1}},
            },
        }
    },
    dependencies=[Depends(require(Scope.SESSIONS_INGEST))],
)
async def ingest_sessions(request: Request, store: Annotated[Store, Depends(get_store)]) -> OrjsonResponse:
    try:  # refused at once, not after waiting for room
        parse = body_parser(request.headers.get("content-type", ""))
    except UnsupportedMediaType as exc:
        raise ApiError(400, str(exc), [Violation("Content-Type", str(exc), "HEADER")]) from None
    async with room_for_body(request):
        return await _ingest(request, store, parse)


async def _ingest(
    request: Request, store: Store, parse: Callable[[bytes], list[NewSession]]
) -> OrjsonResponse:
    body = await read_limited_body(request, request.app.state.config.max_body_bytes)
    if not body or body.isspace():  # (no copy of a large body to find out)
        raise ApiError(
            400,
            "The request body is empty",
            [Violation("", "no sessions in the request body", location="body")],
        )
    try:
        records = await parse_off_loop(parse, body)
    except RejectedBody as exc:
        violations = [Violation(p.path, p.message, location=p.location) for p in exc.problems]
        raise ApiError(400, exc.summary("nothing was stored"), violations) from None
    result = await store.append_sessions(records, now_ms())
    request.app.state.ingest_metrics.joined(API, result.accepted, result.duplicates)
    if result.accepted:
        request.app.state.notifier.notify()
    return OrjsonResponse({"accepted": result.accepted, "duplicates": result.duplicates})


@router.get(
    "",
    summary="Recent user sessions, newest first",
    description=(
        "Each item is the stored session JSON, byte for byte. Page with `nextPageKey` alone. A page"
        " holds up to pageSize sessions, fewer once they reach 16 MiB (at least one): follow"
        " `nextPageKey` until it is null. A page of 64 KiB or more is sent gzipped to a client that"
        " takes it (`Accept-Encoding: gzip`)."
    ),
    response_model=SessionPage,
    responses=_QUERY_ERRORS,
    dependencies=[Depends(require(Scope.SESSIONS_READ))],
)
async def list_sessions(
    request: Request,
    store: Annotated[Store, Depends(get_store)],
    userSessionId: Annotated[str | None, Query(description="Only sessions with this id")] = None,
    userId: Annotated[str | None, Query(description="Only sessions of this user (userId)")] = None,
    pageSize: Annotated[int, Query(ge=1, le=500, description="Sessions per page")] = 100,
    nextPageKey: Annotated[
        str | None, Query(description="Cursor from the previous page; use it alone")
    ] = None,
) -> Response:
    before: int | None = None
    if nextPageKey:
        page_key_alone(request)
        userSessionId, userId, pageSize, before = _decode_page_key(nextPageKey)
    page, more = await sessions_page(
        store,
        limit=pageSize,
        max_bytes=PAGE_BYTES,
        user_session_id=userSessionId,
        user_id=userId,
        before_seq=before,
    )
    key = _encode_page_key(userSessionId, userId, pageSize, page[-1].seq) if more else None
    # Assembled from the stored bytes: no session is parsed to be listed.
    body = b"".join(
        (
            b'{"userSessions":[',
            b",".join(s.body for s in page),
            b'],"nextPageKey":',
            orjson.dumps(key),
            b',"pageSize":',
            str(len(page)).encode(),
            b"}",
        )
    )
    return await large_answer(request, body, "application/json")


@contextlib.asynccontextmanager
async def room_for_body(request: Request) -> AsyncIterator[None]:
    """The request's share of the ingest body budget, held until it is answered; 503 with
    Retry-After when the server holds too many bodies for too long (the sender should retry)."""
    try:
        with _refused_bodies():  # a body that can never be taken is refused at once, not made to wait
            room = request.app.state.body_budget.room_for(request, request.app.state.config.max_body_bytes)
        async with room:
            yield
    except Busy:
        message = "The server is busy storing other requests; nothing was stored. Retry shortly."
        raise ApiError(503, message, headers={"Retry-After": "1"}) from None


async def read_limited_body(request: Request, limit: int) -> bytes:
    """The body, decoded; refused with 413 as soon as it exceeds ``limit`` (never read whole), or
    with 415/400 when its ``Content-Encoding`` is not taken or it does not decode."""
    with _refused_bodies():
        return await read_body(request, limit)


@contextlib.contextmanager
def _refused_bodies() -> Iterator[None]:
    try:
        yield
    except BodyTooLarge as exc:
        raise ApiError(
            413, f"The request body exceeds the limit of {exc.what}; send smaller batches"
        ) from None
    except UnreadableBody as exc:
        raise ApiError(
            exc.status, exc.message, [Violation("Content-Encoding", exc.message, "HEADER")]
        ) from None


def _encode_page_key(user_session_id: str | None, user_id: str | None, page_size: int, before: int) -> str:
    raw = orjson.dumps({"u": user_session_id, "i": user_id, "p": page_size, "b": before})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_page_key(key: str) -> tuple[str | None, str | None, int, int]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(key + "=" * (-len(key) % 4)))
        user_session_id, user_id = data["u"], data.get("i")
        page_size, before = int(data["p"]), int(data["b"])
        # A NUL is refused in URLs (RefuseNulInUrl): no key this server issued holds one.
        ids_ok = all(
            v is None or (isinstance(v, str) and "\x00" not in v) for v in (user_session_id, user_id)
        )
        if not ids_ok or not 1 <= page_size <= 500 or not 0 <= before <= INT_MAX:
            raise ValueError
    except (binascii.Error, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise ApiError(
            400, "Invalid nextPageKey", [Violation("nextPageKey", "not a key this server issued", "QUERY")]
        ) from None
    return user_session_id, user_id, page_size, before
