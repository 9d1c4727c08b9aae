"""Export operations: status, alerts, dead letters and their replay, cursor moves."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)

from sessionexport.api.errors import ApiError
from sessionexport.api.errors import Violation as ApiViolation
from sessionexport.api.rendering import OrjsonResponse, download
from sessionexport.api.security import require
from sessionexport.api.strict_json import StrictJsonRoute
from sessionexport.clock import now_ms
from sessionexport.export.config import ExportConfig
from sessionexport.export.deadletters import REPLAY_ALL_LIMIT, discard_pending, letters_to_replay
from sessionexport.export.preview import (
    NoSessions,
    mapping_of,
    preview_sessions,
    run_test_export,
    sample_body,
    saved_config,
    unsaved_config,
)
from sessionexport.export.replay import DeliveryRefused, ReplayTally
from sessionexport.export.status import alert_json, export_health, export_running
from sessionexport.export.supervisor import ExportSupervisor
from sessionexport.media_types import NDJSON
from sessionexport.model.session import EPOCH_MS_MAX, EPOCH_MS_MIN
from sessionexport.settings.objects import SettingsService
from sessionexport.store import Store
from sessionexport.store.records import INT_MAX, ListedDeadLetter, LogEntry, TokenRecord
from sessionexport.tokens import Scope

router = APIRouter(prefix="/api/v2", tags=["Exports"], route_class=StrictJsonRoute)

Reader = Depends(require(Scope.SETTINGS_READ))
Manager = Depends(require(Scope.EXPORTS_MANAGE))
SessionsReader = Depends(require(Scope.SESSIONS_READ))  # whatever shows or sends session content
# 401, 403, 413, 415 and 503: documented on every route by api.errors.document_errors.
_NO_EXPORT: dict[int | str, dict[str, Any]] = {
    404: {"description": "No export configuration with this objectId"}
}


# -- documentation models (responses are rendered directly) -------------------------------------


class Alert(BaseModel):
    id: int
    objectId: str
    kind: str = Field(
        description="What failed: delivery, token (the token endpoint) or exporter, each with :shard-N for"
        " an export of several shards; retention (sessions expired unexported); zone (its management zone"
        " is gone); or worker:<name> (a process that cannot run the export)"
    )
    title: str = Field(description="e.g. Request timeout, Request failed: <reason>")
    message: str
    openedAt: int = Field(description="Epoch ms")
    lastSeenAt: int = Field(description="Epoch ms of the latest failure it stands for")
    occurrences: int
    closedAt: int | None = Field(description="Epoch ms; null while open")
    state: Literal["open", "closed"]


class AlertList(BaseModel):
    alerts: list[Alert]
    totalCount: int


class DeadLetterSummary(BaseModel):
    id: int
    createdAt: int = Field(description="Epoch ms")
    state: str = Field(description="pending, or replayed")
    replayedAt: int | None
    sessionCount: int
    firstSeq: int
    lastSeq: int
    bytes: int = Field(description="Size of the body, as sent")
    reason: str
    attempts: list[dict[str, Any]] = Field(description="Each attempt: attempt, at, durationMs, status, error")
    sessions: list[tuple[str, str, int]] | None = Field(
        None,
        description="tenantId, userSessionId, startTime of each session; only for a token with sessions.read",
    )


class DeadLetterPage(BaseModel):
    deadLetters: list[DeadLetterSummary]
    pageSize: int
    nextBeforeId: int | None = Field(description="beforeId of the next page; null on the last")


class ReplayedLetter(BaseModel):
    id: int
    delivered: bool
    reason: str | None = Field(description="Why it failed again; null when delivered")
    attempts: list[dict[str, Any]]


class ReplayResult(BaseModel):
    replayed: int = Field(description="Letters delivered")
    failed: int = Field(description="Letters that failed again (still pending)")
    skipped: list[int] = Field(
        description="Ids another replay was sending, no longer pending, or left pending because the export"
        " was paused or deleted during the replay"
    )
    results: list[ReplayedLetter]


class Replaying(BaseModel):
    replaying: int = Field(description="Letters the background replay goes on to send")


class Discarded(BaseModel):
    discardedDeadLetters: int
    discardedSessions: int


class PositionMoved(BaseModel):
    objectId: str
    position: int = Field(description="Seq after which the export's exporters go on")
    backlog: int = Field(description="Sessions after it, to export")


_MAPPING_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The mapping document (or, with form=index, the body of PUT /<indexName>)",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


class ExportStatus(BaseModel):
    objectId: str
    endpointUrl: str
    state: Literal["running", "failing", "paused", "stopped"]
    position: int | None = Field(
        description="Seq up to which every session is decided (delivered, dead-lettered, filtered);"
        " for an export split in shards, its slowest shard's"
    )
    backlog: int = Field(
        description="Sessions in the log not yet decided (split in shards: after their own shard's position)"
    )
    lagSeconds: float | None = Field(description="Age in seconds of the oldest session not yet decided")
    deliveredSessions: int
    failedSessions: int = Field(
        description="Sessions kept as dead letters (failed bulks, rejected documents)"
    )
    replayedSessions: int = Field(description="Sessions of dead letters that a replay delivered")
    retriedItems: int = Field(description="Elasticsearch items sent again after a 429 or 5xx item answer")
    lastSuccess: int | None
    lastError: str | None
    lastErrorAt: int | None
    deadLetters: int = Field(description="Dead letters waiting for replay")
    openAlerts: list[Alert]


StoredId = Annotated[int, Field(strict=True, ge=1, le=INT_MAX)]


class ReplayRequest(BaseModel):
    # Refused, not ignored: a misspelt "ids" would leave ids out, which replays every pending letter.
    model_config = ConfigDict(extra="forbid")

    ids: list[StoredId] | None = Field(
        None,
        max_length=REPLAY_ALL_LIMIT,
        description=f"Dead letters to replay (at most {REPLAY_ALL_LIMIT:,}); all pending ones when omitted",
    )


class ExportValue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: dict[str, Any] = Field(
        description="An export configuration value (schema builtin:elasticsearch.user-session-export-settings-v2),"
        " saved or not"
    )


class TestResult(BaseModel):
    success: bool
    statusCode: int | None = Field(description="HTTP status of the (last) request; null when none came back")
    responseTimeMs: int | None
    error: str | None = Field(description="Why the test failed: HTTP status, timeout, credentials, TLS, ...")
    sessionsSent: int = Field(
        description="Sessions in the request sent; 0 when it did not go out whole (no connection, TLS, token)"
    )
    itemErrors: list[dict[str, Any]] = Field(
        description="Sessions Elasticsearch rejected: userSessionId, status, type, reason"
    )


def _one_reason(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """One reason for a bad ``start``, rather than one per member of the union (whose paths would
    name pydantic's internals, such as ``start.constrained-int``)."""
    try:
        return handler(value)
    except ValidationError:
        raise ValueError(
            "must be 'now', 'oldest' or an epoch-millisecond time from 1973-03-03 on (a time in seconds"
            " is not one)"
        ) from None


class MoveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: Annotated[
        # as session times are: a time in seconds would be 1970, and silently send all retention again
        Literal["now", "oldest"] | Annotated[int, Field(strict=True, ge=EPOCH_MS_MIN, le=EPOCH_MS_MAX)],
        WrapValidator(_one_reason),
    ] = Field(
        description="'now' (skip the backlog), 'oldest' (everything in retention), or an epoch-ms time:"
        " sessions that joined the log at or after it are exported (again)"
    )


def _objects(request: Request) -> tuple[Store, SettingsService, ExportSupervisor]:
    state = request.app.state
    return state.store, state.settings, state.exports


async def _config(settings: SettingsService, export_id: str) -> ExportConfig:
    """The saved configuration, its secrets masked (``saved_config``), or 404."""
    return _found(await saved_config(settings, export_id), export_id)


def _found(config: ExportConfig | None, export_id: str) -> ExportConfig:
    if config is None:
        raise ApiError(404, f"No user session export with objectId {export_id!r}")
    return config


async def _value_config(
    settings: SettingsService, value: dict[str, Any], *, secrets_needed: bool
) -> ExportConfig:
    config, violations = await unsaved_config(settings, value, secrets_needed=secrets_needed)
    if config is None:
        raise ApiError(
            400,
            f"Invalid export configuration: {len(violations)} constraint violation(s)",
            [ApiViolation(f"value.{v.path}", v.message) for v in violations],
        )
    return config


async def _sample(request: Request, config: ExportConfig, status_when_none: int = 404) -> list[LogEntry]:
    store, settings, _ = _objects(request)
    try:
        return await preview_sessions(store, settings, config, now_ms())
    except NoSessions as exc:
        raise ApiError(status_when_none, str(exc)) from None


@router.post(
    "/exports/test",
    summary="Test an export configuration",
    description="Sends up to 50 sessions from the last 7 days exactly as the exporter would (format, method,"
    " authentication, timeout; one attempt) and reports the outcome. The value need not be saved; its"
    " secrets must be entered again. 400 for an invalid value (e.g. an http:// URL) or when there are no"
    " sessions to send.",
    response_model=TestResult,
    dependencies=[Manager, SessionsReader],
    responses={400: {"description": "Invalid value, or no sessions in the last 7 days"}},
)
async def test_export(request: Request, body: ExportValue) -> Response:
    _, settings, supervisor = _objects(request)
    config = await _value_config(settings, body.value, secrets_needed=True)
    entries = await _sample(request, config, status_when_none=400)
    async with supervisor.client() as client:
        result = await run_test_export(supervisor.sender(config, client), entries)
    return OrjsonResponse(result.as_json())


_SAMPLE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The body the export would send (JSON lines)",
        "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
    },
    404: {"description": "No such export, or no sessions from the last 7 days"},
}


@router.get(
    "/exports/{objectId}/sample",
    summary="Download sample export data",
    description="Up to 50 sessions from the last 7 days in exactly the format the export sends"
    " (with Elasticsearch action lines when sending directly).",
    dependencies=[Reader, SessionsReader],
    response_class=Response,
    responses=_SAMPLE_RESPONSES,
)
async def sample_of_export(request: Request, objectId: str) -> Response:
    _, settings, _ = _objects(request)
    config = await _config(settings, objectId)
    body = sample_body(config, await _sample(request, config))
    return await download(request, body, NDJSON, f"sample-{objectId}.ndjson")


@router.post(
    "/exports/sample",
    summary="Download sample export data for an unsaved configuration",
    description="Up to 50 sessions of the last 7 days as the export would send them (JSON lines or Elasticsearch bulk lines); 404 when there are none.",
    dependencies=[Reader, SessionsReader],
    response_class=Response,
    responses={
        **_SAMPLE_RESPONSES,
        400: {"description": "Invalid value"},
        404: {"description": "No sessions from the last 7 days"},
    },
)
async def sample_of_value(request: Request, body: ExportValue) -> Response:
    _, settings, _ = _objects(request)
    config = await _value_config(settings, body.value, secrets_needed=False)
    sample = sample_body(config, await _sample(request, config))
    return await download(request, sample, NDJSON, "sample.ndjson")


MappingForm = Annotated[
    Literal["mapping", "index"],
    Query(
        description="mapping: the mapping download; index: the body of PUT /<indexName> that creates the index"
    ),
]


async def _mapping_response(request: Request, config: ExportConfig, form: str, name: str) -> Response:
    document = mapping_of(config, index=form == "index")
    return await download(
        request, orjson.dumps(document, option=orjson.OPT_INDENT_2), "application/json", f"{name}.json"
    )


@router.get(
    "/exports/{objectId}/mapping",
    summary="Download the Elasticsearch mapping",
    description="Generated from the session model; wrapped in the document type when one is set. ?form=index"
    " gives the body of PUT /<index> (typeless for the document type `_doc`, which Elasticsearch 7 and 8 take"
    " no other way).",
    dependencies=[Reader],
    responses={**_MAPPING_RESPONSE, **_NO_EXPORT},
)
async def mapping_of_export(request: Request, objectId: str, form: MappingForm = "mapping") -> Response:
    _, settings, _ = _objects(request)
    return await _mapping_response(request, await _config(settings, objectId), form, f"mapping-{objectId}")


@router.post(
    "/exports/mapping",
    summary="Download the Elasticsearch mapping for an unsaved configuration",
    description="Generated from the session model, for the configuration's document type; ?form=index gives"
    " the body of PUT /<index> (typeless for the document type `_doc`, which Elasticsearch 7 and 8 take no"
    " other way).",
    dependencies=[Reader],
    responses={**_MAPPING_RESPONSE, 400: {"description": "Invalid value"}},
)
async def mapping_of_value(request: Request, body: ExportValue, form: MappingForm = "mapping") -> Response:
    _, settings, _ = _objects(request)
    config = await _value_config(settings, body.value, secrets_needed=False)
    return await _mapping_response(request, config, form, "mapping")


@router.get(
    "/exports/{objectId}/status",
    summary="Delivery status of an export",
    description="State (running, failing: an alert is open, paused, stopped), cursor position, backlog, lag, delivered and failed counts, last success and error, dead letters, open alerts.",
    response_model=ExportStatus,
    responses=_NO_EXPORT,
    dependencies=[Reader],
)
async def export_status(request: Request, objectId: str) -> Response:
    store, settings, supervisor = _objects(request)
    config = await _config(settings, objectId)
    here = supervisor if request.app.state.config.run_exporters else None
    running = await export_running(store, here, objectId)
    return OrjsonResponse((await export_health(store, config, running, now_ms())).as_json())


ALERT_HISTORY = 200  # closed alerts listed with state=all: the newest (open ones are all listed)


@router.get(
    "/alerts",
    summary="Alerts of failing exports",
    description="Open ones by default, every one of them (state=all: closed ones too, the newest"
    f" {ALERT_HISTORY} of all); each closes at the export's next successful delivery, or when the export"
    " is deleted.",
    dependencies=[Reader],
    response_model=AlertList,
)
async def list_alerts(
    request: Request,
    state: Annotated[Literal["open", "all"], Query(description="open (default) or all")] = "open",
) -> Response:
    store, _, _ = _objects(request)
    alerts = await store.list_alerts(
        open_only=state == "open", limit=None if state == "open" else ALERT_HISTORY
    )
    return OrjsonResponse({"alerts": [alert_json(a) for a in alerts], "totalCount": len(alerts)})


@router.get(
    "/exports/{objectId}/deadletters",
    summary="Bulks that failed every attempt",
    description="Each with its reason and attempts. The identities of its sessions (tenantId,"
    " userSessionId, startTime) are listed only for a token that also has sessions.read.",
    response_model=DeadLetterPage,
    responses=_NO_EXPORT,
)
async def list_dead_letters(
    request: Request,
    objectId: str,
    token: Annotated[TokenRecord, Reader],
    state: Annotated[Literal["pending", "replayed", "all"], Query()] = "pending",
    pageSize: Annotated[int, Query(ge=1, le=500)] = 100,
    beforeId: Annotated[
        int | None, Query(ge=1, le=INT_MAX, description="Page: only dead letters with a smaller id")
    ] = None,
) -> Response:
    store, settings, _ = _objects(request)
    await _config(settings, objectId)
    letters = await store.list_dead_letters(
        objectId, state=None if state == "all" else state, limit=pageSize, before_id=beforeId
    )
    return OrjsonResponse(
        {
            "deadLetters": [
                _letter(d, identities=Scope.SESSIONS_READ.value in token.scopes) for d in letters
            ],
            "pageSize": len(letters),
            "nextBeforeId": letters[-1].id if len(letters) == pageSize else None,
        }
    )


@router.get(
    "/exports/{objectId}/deadletters/{letterId}/body",
    summary="The exact body of a dead letter",
    description="The bytes that failed, as sent, for inspection or replay elsewhere.",
    dependencies=[Reader, SessionsReader],
    response_class=Response,
    responses={
        200: {
            "description": "The body, in the content type it was sent with",
            "content": {
                "application/json": {"schema": {"type": "string"}},
                NDJSON: {"schema": {"type": "string"}},
            },
        },
        404: {"description": "No such dead letter for this export"},
        410: {"description": "The dead letter was replayed, and retention has removed its body since"},
    },
)
async def dead_letter_body(
    request: Request, objectId: str, letterId: Annotated[int, Path(ge=1, le=INT_MAX)]
) -> Response:
    store, _, _ = _objects(request)
    letter = await store.get_dead_letter(letterId)
    if letter is None or letter.export_id != objectId:
        raise ApiError(404, f"No dead letter {letterId} for export {objectId!r}")
    if letter.state == "replayed" and not letter.body:
        raise ApiError(410, f"Dead letter {letterId} was replayed, and retention has removed its body since")
    media_type = letter.content_type.split(";")[0]
    return await download(request, letter.body, media_type, f"deadletter-{letterId}.ndjson")


@router.post(
    "/exports/{objectId}/deadletters/replay",
    summary="Send dead letters again",
    description="Delivered again through the export's endpoint with its current authentication, with"
    " the usual retries; a delivered letter is marked replayed, a failed one stays pending. A letter"
    " another replay is sending at the same time (or that stopped being pending meanwhile) is not sent"
    " again: its id is listed in skipped. The replay follows the export as saved: an edit holds from the"
    " next letter, a pause or a delete stops it (the letters not sent stay pending, listed in skipped)."
    " 409, with nothing sent, when the export is paused, when this server may not send to the"
    " endpoint (an http:// URL it no longer allows), or when its keys cannot decrypt the export's secrets. With background=true it answers 202 at once"
    " with the number of letters it goes on to send (thousands take minutes); the server log says"
    " how it went, and the letters leave the pending list as they are delivered.",
    dependencies=[Manager],
    response_model=ReplayResult,
    responses={
        404: {"description": "No such export, or a listed dead letter is not pending"},
        202: {"description": "Replaying in the background", "model": Replaying},
        409: {
            "description": "The export is paused, its endpoint may not be sent to from this server, or"
            " this server's keys cannot decrypt its secrets"
        },
    },
)
async def replay_dead_letters(
    request: Request,
    objectId: str,
    body: ReplayRequest | None = None,
    background: Annotated[bool, Query(description="Answer at once; send in the background")] = False,
) -> Response:
    store, _, supervisor = _objects(request)
    try:
        config = _found(await supervisor.sending_config(objectId), objectId)
        letters, missing = await letters_to_replay(store, objectId, body.ids if body is not None else None)
        if missing:
            raise ApiError(404, f"No pending dead letter(s) {', '.join(map(str, missing))} for this export")
        if background:
            supervisor.replay_in_background(config, letters)
            return OrjsonResponse({"replaying": len(letters)}, status_code=202)
        results = await supervisor.replay(config, letters)
    except DeliveryRefused as exc:
        raise ApiError(409, f"Not replayed: {exc}") from None
    tally = ReplayTally.of(results)
    return OrjsonResponse(
        {
            "replayed": tally.delivered,
            "failed": len(tally.failed),
            "skipped": tally.skipped,
            "results": [
                {
                    "id": r.letter_id,
                    "delivered": r.delivered,
                    "reason": None if r.delivered else r.outcome.alert_title,
                    "attempts": [a.as_json() for a in r.outcome.attempts],
                }
                for r in tally.sent
            ],
        }
    )


@router.delete(
    "/exports/{objectId}/deadletters",
    summary="Discard the pending dead letters",
    description="Deletes every pending dead letter of the export (not those a replay is sending"
    " right now), for good: their sessions are not sent. Answers how many letters and sessions"
    " were discarded. An export can be deleted only once it has none pending.",
    response_model=Discarded,
    responses=_NO_EXPORT,
)
async def discard_dead_letters(
    request: Request, objectId: str, token: Annotated[TokenRecord, Manager]
) -> Response:
    store, settings, _ = _objects(request)
    await _config(settings, objectId)
    letters, sessions = await discard_pending(store, objectId, now_ms(), f"API token {token.name!r}")
    return OrjsonResponse({"discardedDeadLetters": letters, "discardedSessions": sessions})


@router.put(
    "/exports/{objectId}/position",
    summary="Move an export's cursor (backfill, replay, skip)",
    description="start: now (skip the backlog), oldest (everything in retention) or an epoch-ms time; the export's exporters restart from there.",
    dependencies=[Manager],
    response_model=PositionMoved,
    responses=_NO_EXPORT,
)
async def move_position(request: Request, objectId: str, body: MoveRequest) -> Response:
    store, settings, supervisor = _objects(request)
    await _config(settings, objectId)
    if body.start == "now":
        position = await store.log_position()
    elif body.start == "oldest":
        position = await store.position_before(0)
    else:
        position = await store.position_before(body.start)
    await supervisor.move(objectId, position)
    backlog, _ = await store.backlog(position)
    return OrjsonResponse({"objectId": objectId, "position": position, "backlog": backlog})


def _letter(letter: ListedDeadLetter, *, identities: bool) -> dict[str, Any]:
    shown = {
        "id": letter.id,
        "createdAt": letter.created_at,
        "state": letter.state,
        "replayedAt": letter.replayed_at,
        "sessionCount": len(letter.sessions),
        "firstSeq": letter.first_seq,
        "lastSeq": letter.last_seq,
        "bytes": letter.size,
        "reason": letter.reason,
        "attempts": letter.attempts,
    }
    if identities:  # keys to session data: shown where that data may be read
        shown["sessions"] = [list(s) for s in letter.sessions]
    return shown
