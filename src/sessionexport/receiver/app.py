"""The receiver's HTTP app: the export endpoint, the OAuth2 token endpoint, an Elasticsearch-compatible
``_bulk``, and a small read API over what was received.

    PUT|POST /export/events        sessions, one per line; 200 only once they are durable
    POST     /oauth2/token         client-credentials tokens (when clients are configured)
    POST|PUT /_bulk, /<index>/_bulk   Elasticsearch bulk semantics and response shape
    GET      /received/counts | /received/documents | /received/requests
    GET      /health, GET /       (the latter answers like an Elasticsearch node)
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl

import msgspec
import orjson
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sessionexport.clock import now_ms
from sessionexport.content_encoding import UnreadableBody
from sessionexport.ingest.documents import RejectedBody
from sessionexport.media_types import JSON, NDJSON, media_type
from sessionexport.model.session import IDENTIFIER_MAX_CHARS
from sessionexport.model.validation import NOT_JSON, single_line
from sessionexport.receiver import bulk as es
from sessionexport.receiver.auth import (
    Authenticator,
    JwksVerifier,
    KeysUnavailable,
    OAuthError,
    TokenIssuer,
    Unauthorized,
    jwks_file_problem,
    load_token_key,
    parse_pair,
    token_form,
)
from sessionexport.receiver.documents import parse_events_body
from sessionexport.receiver.metrics import exposition
from sessionexport.receiver.store import ReceivedStore, create_received_store
from sessionexport.receiver.store.records import (
    DOCUMENT,
    LEGACY,
    SESSION,
    Document,
    RequestInfo,
    RequestRecord,
    StoredDocument,
)
from sessionexport.request_bodies import (
    DEFAULT_BUFFER_BYTES,
    SMALL_BODY_BYTES,
    BodyBudget,
    BodyDeadlines,
    BodyLimit,
    BodyTooLarge,
    Busy,
    parse_off_loop,
    read_body,
)
from sessionexport.request_urls import RefuseNulInUrl
from sessionexport.store.base import InvalidValue, StoreError, StoreFull
from sessionexport.throttle import Throttle, recurring

log = logging.getLogger(__name__)

EVENTS_TYPES = (JSON, NDJSON)
OAUTH_ROUTE = "/oauth2/token"
BULK_METHODS = ("POST", "PUT")
ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
TOKEN_FORM_LIMIT = 16 * 1024
MAX_PAGE = 1000  # records a read of /received/* gives at most
BUSY = "the receiver is busy storing other requests; nothing was stored. Retry shortly."
BULK_TYPES = frozenset(
    {
        "application/json",
        "application/x-ndjson",
        "application/vnd.elasticsearch+json",
        "application/vnd.elasticsearch+x-ndjson",
    }
)
_COMPATIBLE_WITH = re.compile(r"vnd\.elasticsearch\+json\s*;\s*compatible-with\s*=\s*(\d+)")


@dataclass(frozen=True)
class ReceiverOptions:
    """Everything ``receive`` was told, in plain values: what worker processes rebuild their app from."""

    data_dir: str
    storage: str | None = None
    basic: str | None = None
    oauth_clients: tuple[str, ...] = ()
    token_ttl: int = 300
    jwks: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    events_path: str = "/export/events"
    es_version: int = 8
    bulk_fail: tuple[str, ...] = ()
    max_body_bytes: int = 50 * 1024 * 1024
    buffer_bytes: int = DEFAULT_BUFFER_BYTES

    def build(self) -> ReceiverConfig:
        """The app's configuration; raises ValueError, StoreError or OSError for bad options."""
        data_dir = Path(self.data_dir)
        if problem := events_path_problem(self.events_path):
            raise ValueError(f"--events-path {self.events_path!r}: {problem}")
        if self.jwks and "://" not in self.jwks and not Path(self.jwks).is_file():  # URLs: see JwksVerifier
            raise ValueError(f"--jwks: no such file {self.jwks} (or give an https:// URL)")
        if self.jwks and "://" not in self.jwks and (problem := jwks_file_problem(Path(self.jwks))):
            raise ValueError(f"--jwks {self.jwks}: {problem}")
        if (self.jwt_issuer or self.jwt_audience) and not self.jwks:
            # without keys no JWT is checked at all: the receiver would be open, not guarded
            raise ValueError("--jwt-issuer and --jwt-audience check the JWTs of --jwks: give --jwks too")
        tokens = None
        if self.oauth_clients:
            tokens = TokenIssuer(oauth_clients(self.oauth_clients), load_token_key(data_dir), self.token_ttl)
        auth = Authenticator(
            basic=parse_pair(self.basic, "--basic") if self.basic else None,
            tokens=tokens,
            jwks=JwksVerifier(self.jwks, self.jwt_issuer, self.jwt_audience) if self.jwks else None,
        )
        store = create_received_store(data_dir, self.storage)
        faults = es.FaultPlan.parse(list(self.bulk_fail))
        budget = BodyBudget(self.buffer_bytes)
        return ReceiverConfig(
            store, auth, self.events_path, self.es_version, faults, self.max_body_bytes, budget
        )

    def to_environment(self) -> str:
        return msgspec.json.encode(self).decode()


OPTIONS_VARIABLE = "SESSIONEXPORT_RECEIVER_OPTIONS"


def oauth_clients(specs: Sequence[str]) -> dict[str, str]:
    """``ID:SECRET`` pairs (``--oauth-client``), each id once: a second secret for an id would be
    kept silently, and the first one refused."""
    clients: dict[str, str] = {}
    for spec in specs:
        client_id, secret = parse_pair(spec, "--oauth-client")
        if client_id in clients:
            raise ValueError(f"--oauth-client: client {client_id!r} is given twice")
        clients[client_id] = secret
    return clients


def events_path_problem(path: str) -> str | None:
    """Why ``path`` cannot be the export path (``--events-path``), or None."""
    if not path.startswith("/") or path == "/":
        return "must start with / and name a path"
    if (
        path in (OAUTH_ROUTE, "/metrics", "/health")
        or path.endswith("/_bulk")
        or path.startswith("/received/")
    ):
        return "is one of the receiver's own routes"
    return None


def app_from_environment() -> Starlette:
    """The app of one of several worker processes (``receive --workers N``)."""
    options = msgspec.json.decode(os.environ[OPTIONS_VARIABLE], type=ReceiverOptions)
    return create_receiver_app(options.build())


@dataclass
class ReceiverConfig:
    store: ReceivedStore
    auth: Authenticator = field(default_factory=Authenticator)
    events_path: str = "/export/events"
    es_version: int = 8
    faults: es.FaultPlan = field(default_factory=es.FaultPlan)
    max_body_bytes: int = 50 * 1024 * 1024
    budget: BodyBudget = field(default_factory=lambda: BodyBudget(DEFAULT_BUFFER_BYTES))  # of the data routes
    seq_nos: Iterator[int] = field(default_factory=itertools.count)  # _seq_no of indexed items, in turn


class _SessionId(msgspec.Struct):
    # Only a lookup key, kept as indexed text: longer than a session's, the document is stored unindexed.
    userSessionId: Annotated[str, msgspec.Meta(max_length=IDENTIFIER_MAX_CHARS)] | None = None


_session_id = msgspec.json.Decoder(_SessionId)


def create_receiver_app(config: ReceiverConfig) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await config.store.open()
        try:
            yield
        finally:
            await config.store.close()

    routes = [
        Route(config.events_path, _events, methods=["PUT", "POST"]),
        Route(OAUTH_ROUTE, _token, methods=["POST"]),
        # every method: another than POST or PUT is refused in Elasticsearch's words (a client reads them)
        Route("/_bulk", _bulk, methods=ANY_METHOD),
        Route("/{target:path}/_bulk", _bulk, methods=ANY_METHOD),  # read by es.bulk_target
        Route("/received/counts", _counts, methods=["GET"]),
        Route("/received/documents", _documents, methods=["GET"]),
        Route("/received/requests", _requests, methods=["GET"]),
        Route("/metrics", _metrics, methods=["GET"]),
        Route("/health", _health, methods=["GET"]),
        Route("/", _es_info, methods=["GET", "HEAD"]),
    ]
    handlers = {
        KeysUnavailable: _keys_unavailable,
        InvalidValue: _invalid_value,
        StoreError: _store_unavailable,
        StoreFull: _store_full,
    }
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    app.add_middleware(BodyDeadlines)
    app.add_middleware(BodyLimit, limit_for=lambda path: _body_limit(config, path))
    app.add_middleware(RefuseNulInUrl)
    app.state.receiver = config
    return app


def _body_limit(config: ReceiverConfig, path: str) -> int | None:
    """Exports, bulks and token forms are read within their own limits (a token form's refusal in
    OAuth's shape); every other route takes a small body."""
    own = path in (config.events_path, OAUTH_ROUTE) or path.endswith("/_bulk")
    return None if own else SMALL_BODY_BYTES


def _config(request: Request) -> ReceiverConfig:
    config: ReceiverConfig = request.app.state.receiver
    return config


def _json(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(value), status, headers, media_type="application/json")


def _error(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> Response:
    return _json({"error": {"code": status, "message": message, **extra}}, status, headers)


async def _authenticate(request: Request) -> str | None:
    config = _config(request)
    return await config.auth.check(request.headers.get("authorization"))


async def _invalid_value(request: Request, exc: Exception) -> Response:
    return _error(400, f"a value in the request cannot be stored: {exc}")


_STORE_FAILURES = Throttle()


async def _store_unavailable(request: Request, exc: Exception) -> Response:
    if (quiet := _STORE_FAILURES.allows()) is not None:
        log.error("storage failure: %s%s", exc, recurring(quiet))
    # A read stores nothing anyway: saying so would only puzzle whoever reads what was received.
    said = "storage is unavailable" + ("" if request.method in ("GET", "HEAD") else "; nothing was stored")
    return _error(503, f"{said}. Retry later.", {"Retry-After": "5"})


async def _store_full(request: Request, exc: Exception) -> Response:
    if (quiet := _STORE_FAILURES.allows()) is not None:
        log.error("storage full: %s%s", exc, recurring(quiet))
    return _error(
        503, "storage is full; nothing was stored. Retry once space is freed.", {"Retry-After": "60"}
    )


async def _keys_unavailable(request: Request, exc: Exception) -> Response:
    """The credentials may be fine: the sender should try again, not refresh its token."""
    return _error(503, f"cannot check Bearer tokens now: {exc}", {"Retry-After": "30"})


def _unauthorized(request: Request, exc: Unauthorized) -> Response:
    challenge = _config(request).auth.challenge(exc)
    return _error(401, f"unauthorized: {exc}", {"WWW-Authenticate": challenge})


def _request_info(request: Request, body_size: int, principal: str | None) -> RequestInfo:
    return RequestInfo(
        received_at=now_ms(),
        method=request.method,
        path=request.url.path,
        content_type=request.headers.get("content-type", ""),
        size=body_size,
        client=request.client.host if request.client else "",
        principal=principal,
    )


def _media_type(request: Request) -> str:
    return media_type(request.headers.get("content-type", ""))


# -- /export/events -------------------------------------------------------------------------------


async def _events(request: Request) -> Response:
    config = _config(request)
    try:
        principal = await _authenticate(request)
    except Unauthorized as exc:
        return _unauthorized(request, exc)
    media = _media_type(request)
    if media not in EVENTS_TYPES:
        message = f"unsupported content type {media or '(none)'!r}: use {' or '.join(EVENTS_TYPES)}"
        await config.store.refuse(_request_info(request, 0, principal), 415, message)
        return _error(415, message)
    try:
        async with config.budget.room_for(request, config.max_body_bytes):
            body = await read_body(request, config.max_body_bytes)
            return await _store_events(request, config, principal, body)
    except (BodyTooLarge, UnreadableBody) as exc:
        await config.store.refuse(_request_info(request, 0, principal), exc.status, str(exc))
        return _error(exc.status, str(exc))
    except Busy:
        return _error(503, BUSY, {"Retry-After": "1"})


async def _store_events(
    request: Request, config: ReceiverConfig, principal: str | None, body: bytes
) -> Response:
    info = _request_info(request, len(body), principal)
    try:
        documents = await parse_off_loop(parse_events_body, body)
    except RejectedBody as exc:
        problems = [{"location": p.location, "path": p.path, "message": p.message} for p in exc.problems]
        await config.store.refuse(info, 400, str(exc))
        listed = f" (the first {len(problems)} listed)" if exc.count > len(problems) else ""
        return _error(400, f"nothing stored: {exc.count} problem(s){listed}", problems=problems)
    result = await config.store.save(info, documents)
    legacy = sum(1 for d in documents if d.kind == LEGACY)
    return _json(
        {
            "stored": result.stored,
            "duplicates": result.duplicates,
            "legacy": legacy,
            "requestId": result.request_id,
        }
    )


# -- /oauth2/token ---------------------------------------------------------------------------------


async def _token(request: Request) -> Response:
    issuer = _config(request).auth.tokens
    if issuer is None:
        return _error(404, "this receiver issues no tokens (start it with --oauth-client ID:SECRET)")
    if _media_type(request) != "application/x-www-form-urlencoded":
        return _json(
            {"error": "invalid_request", "error_description": "use application/x-www-form-urlencoded"}, 400
        )
    try:
        raw = await read_body(request, TOKEN_FORM_LIMIT)  # unauthenticated callers: read a bounded body
    except BodyTooLarge:
        return _json({"error": "invalid_request", "error_description": "request body too large"}, 413)
    except UnreadableBody as exc:  # an encoding not taken, or a corrupt compressed form
        return _json({"error": "invalid_request", "error_description": exc.message}, exc.status)
    try:
        fields = token_form(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        answer = issuer.issue(fields, request.headers.get("authorization"))
    except OAuthError as exc:
        headers = {"WWW-Authenticate": 'Basic realm="sessionexport"'} if exc.status == 401 else None
        return _json(exc.as_json(), exc.status, headers)
    return _json(answer, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


# -- Elasticsearch ----------------------------------------------------------------------------------


def _es_response(request: Request, value: Any, status: int = 200) -> Response:
    compatible = _COMPATIBLE_WITH.search(request.headers.get("accept", ""))
    media_type = (
        f"application/vnd.elasticsearch+json; compatible-with={compatible[1]}"
        if compatible
        else "application/json"
    )
    headers = {"X-Elastic-Product": "Elasticsearch"}
    return Response(orjson.dumps(value), status, headers, media_type=media_type)


async def _bulk(request: Request) -> Response:
    config = _config(request)
    raw_path = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
    target = es.bulk_target(raw_path, config.es_version)
    if target is None:
        unknown = f"no handler found for uri [{raw_path}] and method [{request.method}]"
        return _es_response(request, {"error": unknown, "status": 400}, 400)
    if request.method not in BULK_METHODS:
        allowed = ", ".join(BULK_METHODS)
        said = f"Incorrect HTTP method for uri [{request.url.path}] and method [{request.method}], allowed: [{allowed}]"
        response = _es_response(request, {"error": said, "status": 405}, 405)
        response.headers["Allow"] = allowed
        return response
    started = time.perf_counter()
    try:
        principal = await _authenticate(request)
    except Unauthorized as exc:
        cause = {"type": "security_exception", "reason": f"unable to authenticate: {exc}"}
        error = {"error": {"root_cause": [cause], **cause}, "status": 401}
        response = _es_response(request, error, 401)
        response.headers["WWW-Authenticate"] = config.auth.challenge(exc)
        return response
    if _media_type(request) not in BULK_TYPES:
        content_type = request.headers.get("content-type", "")
        unsupported = {"error": f"Content-Type header [{content_type}] is not supported", "status": 406}
        return _es_response(request, unsupported, 406)  # as Elasticsearch answers it, unread
    try:
        async with config.budget.room_for(request, config.max_body_bytes):
            body = await read_body(request, config.max_body_bytes)
            return await _store_bulk(request, config, target, principal, body, started)
    except (BodyTooLarge, UnreadableBody) as exc:
        refused = _unread_bulk(exc)
        await config.store.refuse(_request_info(request, 0, principal), refused.status, refused.reason)
        return _es_response(request, refused.as_json(), refused.status)
    except Busy:
        busy = es.BulkRequestError("es_rejected_execution_exception", BUSY, 429)
        return _es_response(request, busy.as_json(), 429)


async def _store_bulk(
    request: Request,
    config: ReceiverConfig,
    target: es.BulkTarget,
    principal: str | None,
    body: bytes,
    started: float,
) -> Response:
    info = _request_info(request, len(body), principal)
    try:
        parse = functools.partial(
            es.parse_bulk,
            path_index=target.index,
            es_version=config.es_version,
            path_type=target.doc_type,
        )
        operations = await parse_off_loop(parse, body)
    except es.BulkRequestError as exc:
        await config.store.refuse(info, exc.status, exc.reason)
        return _es_response(request, exc.as_json(), exc.status)
    items = await _apply(config, info, operations)
    response = _es_response(request, es.bulk_response(items, int((time.perf_counter() - started) * 1000)))
    if warning := es.type_warning(operations, config.es_version):
        response.headers["Warning"] = warning
    return response


def _unread_bulk(exc: BodyTooLarge | UnreadableBody) -> es.BulkRequestError:
    """A bulk body that was not read, as Elasticsearch names why."""
    kind = "http_content_too_long" if isinstance(exc, BodyTooLarge) else "illegal_argument_exception"
    return es.BulkRequestError(kind, str(exc), exc.status)


async def _apply(
    config: ReceiverConfig, info: RequestInfo, operations: Sequence[es.Operation]
) -> list[dict[str, Any]]:
    """Store what can be stored, in order (``index`` replaces, ``create`` keeps), in one save: one
    request record, all or nothing. An item per operation, in order."""
    items: list[dict[str, Any] | None] = [None] * len(operations)
    stored: list[tuple[int, es.Operation]] = []
    documents: list[Document] = []
    for number, op in enumerate(operations):
        failure = _item_failure(op, config.faults)
        if failure is not None:
            items[number] = es.failed_item(op, failure, config.es_version)
            continue
        stored.append((number, op))
        documents.append(_document(op))
    # a request whose items all failed is still recorded (with no documents)
    result = await config.store.save(info, documents)
    for (number, op), created in zip(stored, result.created, strict=True):
        if op.action == "create" and not created:
            conflict = es.ItemFailure(
                409, es.ERROR_TYPES[409], f"[{op.doc_id}]: version conflict, document already exists", True
            )
            items[number] = es.failed_item(op, conflict, config.es_version)
        else:
            items[number] = es.item_result(op, created, next(config.seq_nos), config.es_version)
    return [item for item in items if item is not None]


def _item_failure(op: es.Operation, faults: es.FaultPlan) -> es.ItemFailure | None:
    return op.problem or faults.failure(op)


def _document(op: es.Operation) -> Document:
    source = op.source or b""
    try:
        session_id = _session_id.decode(source).userSessionId
    except (msgspec.ValidationError, *NOT_JSON):
        session_id = None
    if session_id is not None and "\x00" in session_id:
        session_id = None  # only a lookup key, kept as text: the document is stored, unindexed
    replaces = op.action == "index"  # ``create`` keeps a stored document and fails with 409
    # One line per document, as every store keeps them (a \r inside is JSON whitespace).
    body = single_line(source)
    return Document(DOCUMENT, f"{op.index}/{op.doc_id}", body, session_id, op.index, replaces)


async def _es_info(request: Request) -> Response:
    number = es.ES_VERSION_NUMBERS[_config(request).es_version]
    info = {
        "name": "sessionexport-receiver",
        "cluster_name": "sessionexport",
        "version": {"number": number, "build_flavor": "default", "lucene_version": "9.11.1"},
        "tagline": "You Know, for Search",
    }
    return _es_response(request, info)


# -- read API ------------------------------------------------------------------------------------------


async def _counts(request: Request) -> Response:
    try:
        await _authenticate(request)
    except Unauthorized as exc:
        return _unauthorized(request, exc)
    return _json((await _config(request).store.counts()).as_json())


async def _metrics(request: Request) -> Response:
    try:
        await _authenticate(request)
    except Unauthorized as exc:
        return _unauthorized(request, exc)
    counts = await _config(request).store.counts()
    return Response(exposition(counts), media_type=CONTENT_TYPE_LATEST)


async def _documents(request: Request) -> Response:
    try:
        await _authenticate(request)
    except Unauthorized as exc:
        return _unauthorized(request, exc)
    query = request.query_params
    try:
        limit = int(query.get("limit", "20"))
        request_id = int(query["requestId"]) if "requestId" in query else None
        before = int(query["before"]) if "before" in query else None
    except ValueError:
        return _error(400, "limit, requestId and before must be integers")
    if problem := _limit_problem(limit):
        return _error(400, problem)
    if request_id is not None and not 1 <= request_id < 2**63:
        return _error(400, "requestId must be a request's id (a positive 64-bit integer)")
    if before is not None and not 1 <= before < 2**63:
        return _error(400, "before must be a document's seq (a positive 64-bit integer)")
    if query.get("kind") not in (None, SESSION, LEGACY, DOCUMENT):
        return _error(400, f"kind must be {SESSION}, {LEGACY} or {DOCUMENT}")
    found = await _config(request).store.documents(
        user_session_id=query.get("userSessionId"),
        request_id=request_id,
        kind=query.get("kind"),
        limit=limit,
        before_seq=before,
    )
    following = found[-1].seq if len(found) == limit else None  # the next page: ?before=<it>
    return _json({"documents": [_document_json(d) for d in found], "nextBefore": following})


def _document_json(doc: StoredDocument) -> dict[str, Any]:
    return {
        "seq": doc.seq,
        "requestId": doc.request_id,
        "receivedAt": doc.received_at,
        "kind": doc.kind,
        "key": doc.key,
        "userSessionId": doc.user_session_id,
        "index": doc.index,
        "document": orjson.Fragment(doc.body),  # the stored bytes, not re-serialised
    }


def _limit_problem(limit: int) -> str | None:
    """What is wrong with a read's ``limit`` (out of range is refused, not taken as the nearest)."""
    return None if 1 <= limit <= MAX_PAGE else f"limit must be between 1 and {MAX_PAGE}"


async def _requests(request: Request) -> Response:
    try:
        await _authenticate(request)
    except Unauthorized as exc:
        return _unauthorized(request, exc)
    try:
        limit = int(request.query_params.get("limit", "20"))
    except ValueError:
        return _error(400, "limit must be an integer")
    if problem := _limit_problem(limit):
        return _error(400, problem)
    records = await _config(request).store.requests(limit)
    return _json({"requests": [_request_json(r) for r in records]})


def _request_json(record: RequestRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "receivedAt": record.received_at,
        "method": record.method,
        "path": record.path,
        "contentType": record.content_type,
        "size": record.size,
        "client": record.client,
        "principal": record.principal,
        "status": record.status,
        "documents": record.documents,
        "stored": record.stored,
        "duplicates": record.duplicates,
        "error": record.error,
    }


async def _health(request: Request) -> Response:
    try:
        await _config(request).store.counts()
    except StoreError as exc:
        return _json({"status": "unavailable", "error": str(exc)}, 503)
    return _json({"status": "ok"})
