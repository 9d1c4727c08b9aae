"""``/api/v2/settings``: Dynatrace Settings 2.0 compatible schemas and objects."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, model_validator

from sessionexport.api.errors import ApiError, Violation, page_key_alone
from sessionexport.api.rendering import OrjsonResponse
from sessionexport.api.security import require
from sessionexport.api.strict_json import StrictJsonRoute
from sessionexport.clock import now_ms
from sessionexport.settings import objects as settings_objects
from sessionexport.settings.filtering import FilterError, parse_filter, parse_sort
from sessionexport.settings.objects import ItemResult, NewObject, SettingsService
from sessionexport.settings.schemas import SCHEMAS, SCOPE_ALIASES, schema_stub
from sessionexport.store.records import SettingsRecord, TokenRecord
from sessionexport.tokens import Scope

router = APIRouter(prefix="/api/v2/settings", tags=["Settings"], route_class=StrictJsonRoute)

Reader = Annotated[TokenRecord, Depends(require(Scope.SETTINGS_READ))]
Writer = Annotated[TokenRecord, Depends(require(Scope.SETTINGS_WRITE))]

OBJECT_FIELDS = (
    "objectId",
    "summary",
    "searchSummary",
    "created",
    "modified",
    "createdBy",
    "modifiedBy",
    "author",
    "updateToken",
    "scope",
    "modificationInfo",
    "resourceContext",
    "owner",
    "schemaId",
    "schemaVersion",
    "value",
    "externalId",
)
SCHEMA_FIELDS = (
    "schemaId",
    "displayName",
    "latestSchemaVersion",
    "multiObject",
    "ordered",
    "maturity",
    "ownerBasedAccessControl",
)
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 100, 500
MAX_EXTERNAL_ID = 500  # characters


# -- documentation models (responses are rendered directly) -------------------------------------


class ConstraintViolation(BaseModel):
    path: str | None = None
    message: str | None = None
    parameterLocation: str | None = None
    location: str | None = None


class Error(BaseModel):
    code: int
    message: str
    constraintViolations: list[ConstraintViolation] | None = None


class ErrorEnvelope(BaseModel):
    error: Error


NO_NUL = r"^[^\x00]*$"


class SettingsObjectCreate(BaseModel):
    schemaId: str = Field(description="e.g. builtin:elasticsearch.user-session-export-settings-v2")
    scope: str = Field(description="environment (tenant is accepted as an alias)")
    value: dict[str, Any]
    # Kept as they are sent, in columns of their own: no NUL, which PostgreSQL's text cannot hold.
    externalId: str | None = Field(
        None,
        max_length=MAX_EXTERNAL_ID,
        pattern=NO_NUL,
        description="Upsert key: replaces the object with it",
    )
    schemaVersion: str | None = None
    insertAfter: str | None = None
    objectId: str | None = Field(
        None,
        pattern=NO_NUL,
        description="With externalId: the object to replace when none has that externalId (it takes it)",
    )


class SettingsObjectUpdate(BaseModel):
    value: dict[str, Any]
    updateToken: str | None = Field(None, description="Optimistic lock: 409 when the object changed since")
    schemaVersion: str | None = None
    insertAfter: str | None = None
    insertBefore: str | None = None

    @model_validator(mode="after")
    def _one_place(self) -> SettingsObjectUpdate:
        if self.insertAfter is not None and self.insertBefore is not None:
            raise ValueError("insertAfter and insertBefore exclude each other")
        return self


class SettingsObjectResponse(BaseModel):
    code: int
    objectId: str | None = None
    error: Error | None = None
    invalidValue: Any = None


class SettingsObject(BaseModel):
    objectId: str | None = None
    schemaId: str | None = None
    schemaVersion: str | None = None
    scope: str | None = None
    externalId: str | None = None
    summary: str | None = None
    searchSummary: str | None = None
    created: int | None = None
    modified: int | None = None
    createdBy: str | None = None
    modifiedBy: str | None = None
    author: str | None = None
    updateToken: str | None = None
    value: dict[str, Any] | None = None
    resourceContext: dict[str, Any] | None = None
    owner: dict[str, Any] | None = None
    modificationInfo: dict[str, Any] | None = None


class ObjectsList(BaseModel):
    items: list[SettingsObject]
    nextPageKey: str | None
    pageSize: int
    totalCount: int


class SchemaStub(BaseModel):
    schemaId: str | None = None
    displayName: str | None = None
    latestSchemaVersion: str | None = None
    multiObject: bool | None = None
    ordered: bool | None = None
    maturity: str | None = None
    ownerBasedAccessControl: bool | None = None


class SchemaList(BaseModel):
    items: list[SchemaStub]
    totalCount: int


# A request FastAPI cannot parse is answered with the envelope; a parsed one with item results.
ItemOrEnvelope = SettingsObjectResponse | ErrorEnvelope
ItemsOrEnvelope = list[SettingsObjectResponse] | ErrorEnvelope

# 401, 403, 413, 415 and 503 are documented on every route by api.errors.document_errors.


def service(request: Request) -> SettingsService:
    settings: SettingsService = request.app.state.settings
    return settings


Service = Annotated[SettingsService, Depends(service)]


# -- schemas -------------------------------------------------------------------------------------


@router.get(
    "/schemas",
    summary="List settings schemas",
    description="The schemas this server keeps objects of: export configurations and management zones.",
    response_model=SchemaList,
)
async def list_schemas(
    _: Reader,
    fields: Annotated[
        str | None, Query(description=f"Comma-separated, from: {', '.join(SCHEMA_FIELDS)}")
    ] = None,
) -> Response:
    wanted = _fields(fields, SCHEMA_FIELDS, SCHEMA_FIELDS)
    items = [{k: v for k, v in schema_stub(s).items() if k in wanted} for s in SCHEMAS.values()]
    return OrjsonResponse({"items": items, "totalCount": len(items)})


@router.get(
    "/schemas/{schemaId}",
    summary="A settings schema",
    description="In Settings 2.0 form: properties, types, enums, defaults, preconditions, constraints, secret properties and maxObjects.",
    response_model=dict[str, Any],
    responses={404: {"model": ErrorEnvelope, "description": "No such schema"}},
)
async def get_schema(
    _: Reader,
    schemaId: str,
    schemaVersion: Annotated[str | None, Query(description="Latest when omitted")] = None,
) -> Response:
    schema = SCHEMAS.get(schemaId)
    if schema is None or (schemaVersion is not None and schemaVersion != schema["version"]):
        raise ApiError(
            404, f"Schema {schemaId!r}{' version ' + schemaVersion if schemaVersion else ''} not found"
        )
    return OrjsonResponse(schema)


# -- objects -------------------------------------------------------------------------------------


@router.get(
    "/objects",
    summary="List settings objects",
    description="Filtered by schemaIds, scopes, externalIds and filter, ordered by sort; pageSize (default 100, at most 500) objects a page, nextPageKey alone fetches the next. Secrets are never returned.",
    response_model=ObjectsList,
    responses={400: {"model": ErrorEnvelope}, 404: {"model": ErrorEnvelope}},
)
async def list_objects(
    request: Request,
    _: Reader,
    settings: Service,
    schemaIds: Annotated[str | None, Query(description="Comma-separated schema ids (first page)")] = None,
    scopes: Annotated[str | None, Query(description="Comma-separated scopes (first page)")] = None,
    externalIds: Annotated[str | None, Query(description="Comma-separated external ids")] = None,
    fields: Annotated[str | None, Query(description="Comma-separated; default objectId,value")] = None,
    filter: Annotated[str | None, Query(description="e.g. value.endpointDefinition.usePost = true")] = None,
    sort: Annotated[
        str | None,
        Query(
            description="Comma-separated created, modified, createdBy, modifiedBy, author or value.<path>; - for descending"
        ),
    ] = None,
    nextPageKey: Annotated[
        str | None, Query(description="Cursor from the previous page; enough on its own")
    ] = None,
    pageSize: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_PAGE_SIZE,
            description=f"Objects per page, default {DEFAULT_PAGE_SIZE} (first page; kept in nextPageKey)",
        ),
    ] = None,
) -> Response:
    if nextPageKey:
        page_key_alone(request)
        query = _decode_page_key(nextPageKey)
    else:
        query = _first_page_query(schemaIds, scopes, externalIds, fields, filter, sort, pageSize)
    wanted = _fields(query["fields"], OBJECT_FIELDS, ("objectId", "value"))
    predicate = _filter(query["filter"])
    for schema_id in query["schemaIds"]:
        if schema_id not in SCHEMAS:
            raise ApiError(404, f"Schema {schema_id!r} not found")
    for scope in query["scopes"]:
        if scope not in SCOPE_ALIASES:
            raise ApiError(404, f"Scope {scope!r} not found: use environment (alias tenant)")
    records = [r for r in await settings.all() if _selected(r, query)]
    rendered = [render(settings, r) for r in records]
    matching = [obj for obj in rendered if predicate is None or predicate(obj)]
    if query["sort"]:
        matching = _sorter(query["sort"])(matching)
    start, size = _page_start(matching, query), query["pageSize"]
    page = matching[start : start + size]
    more = start + size < len(matching)
    after = [page[-1]["created"], page[-1]["objectId"]] if page else None
    key = _encode_page_key({**query, "offset": start + size, "after": after}) if more else None
    items = [{k: obj.get(k) for k in wanted} for obj in page]
    return OrjsonResponse(
        {"items": items, "nextPageKey": key, "pageSize": len(items), "totalCount": len(matching)}
    )


def _first_page_query(
    schema_ids: str | None,
    scopes: str | None,
    external_ids: str | None,
    fields: str | None,
    filter: str | None,
    sort: str | None,
    page_size: int | None,
) -> dict[str, Any]:
    """The query of a first page, as a nextPageKey carries it on (``offset``, ``after``)."""
    if not schema_ids and not scopes:
        raise ApiError(
            400,
            "Either schemaIds or scopes is required",
            [Violation("schemaIds", "required when scopes is not given", "QUERY")],
        )
    externals = _csv(external_ids)
    if too_long := [e for e in externals if len(e) > MAX_EXTERNAL_ID]:
        raise ApiError(
            400,
            f"An external id has at most {MAX_EXTERNAL_ID} characters",
            [Violation("externalIds", f"{len(too_long)} of them longer than {MAX_EXTERNAL_ID}", "QUERY")],
        )
    return {
        "schemaIds": _csv(schema_ids),
        "scopes": _csv(scopes),
        "externalIds": externals,
        "fields": fields,
        "filter": filter,
        "sort": sort,
        "pageSize": page_size or DEFAULT_PAGE_SIZE,
        "offset": 0,
        "after": None,
    }


def _validate_only(
    request: Request,
    validateOnly: Annotated[bool, Query(description="Only validate; store nothing")] = False,
) -> bool:
    """The flag, given once: ``?validateOnly=true&validateOnly=false`` would store what the caller
    may have meant only to check."""
    if len(request.query_params.getlist("validateOnly")) > 1:
        raise ApiError(
            400,
            "validateOnly is given more than once",
            [Violation("validateOnly", "given more than once", "QUERY")],
        )
    return validateOnly


ValidateOnly = Annotated[bool, Depends(_validate_only)]


@router.post(
    "/objects",
    summary="Create or validate settings objects",
    response_model=list[SettingsObjectResponse],
    description=(
        "One result per item, in order. HTTP 200 when all succeed, 207 when outcomes differ, else the items'"
        " common status (400, 404, 409). `schemaIds` and `scopes` query parameters are accepted and ignored:"
        " each item names its own."
    ),
    responses={
        207: {"model": list[SettingsObjectResponse]},
        400: {"model": ItemsOrEnvelope},
        404: {"model": list[SettingsObjectResponse]},
        409: {"model": list[SettingsObjectResponse]},
    },
)
async def create_objects(
    token: Writer,
    settings: Service,
    body: list[SettingsObjectCreate],
    validateOnly: ValidateOnly,
    schemaIds: Annotated[str | None, Query(include_in_schema=False)] = None,
    scopes: Annotated[str | None, Query(include_in_schema=False)] = None,
    adminAccess: Annotated[bool, Query(description="Accepted for compatibility")] = False,
) -> Response:
    if not body:
        raise ApiError(400, "The request body must hold at least one settings object")
    items = [NewObject(i.schemaId, i.scope, i.value, i.externalId, i.schemaVersion, i.objectId) for i in body]
    results = await settings.create_all(items, token.name, now_ms(), validate_only=validateOnly)
    codes = {r.code for r in results}
    status = codes.pop() if len(codes) == 1 else 207
    return OrjsonResponse([_item(r) for r in results], status_code=status)


@router.get(
    "/objects/{objectId}",
    summary="A settings object",
    description="Its value (secrets never returned), version and updateToken.",
    response_model=SettingsObject,
    responses={404: {"model": ErrorEnvelope}},
)
async def get_object(
    _: Reader,
    settings: Service,
    objectId: str,
    adminAccess: Annotated[bool, Query(description="Accepted for compatibility")] = False,
) -> Response:
    record = await settings.get(objectId)
    if record is None:
        raise ApiError(404, "No object available for the given objectId")
    # the single object has every field but the deprecated modificationInfo, as Dynatrace's
    whole = render(settings, record)
    return OrjsonResponse({k: v for k, v in whole.items() if k != "modificationInfo"})


@router.put(
    "/objects/{objectId}",
    summary="Update a settings object",
    description="Validated as on creation; a stale updateToken gets 409. Secrets sent as ***** keep their stored value, unless the endpoint changed.",
    response_model=SettingsObjectResponse,
    responses={
        400: {"model": ItemOrEnvelope},
        404: {"model": SettingsObjectResponse},
        409: {"model": SettingsObjectResponse},
    },
)
async def update_object(
    _: Reader,  # as on Dynatrace: an update needs settings.read as well
    token: Writer,
    settings: Service,
    objectId: str,
    body: SettingsObjectUpdate,
    validateOnly: ValidateOnly,
    adminAccess: Annotated[bool, Query(description="Accepted for compatibility")] = False,
) -> Response:
    result = await settings.update(
        objectId, body.value, body.updateToken, token.name, now_ms(), validate_only=validateOnly
    )
    return OrjsonResponse(_item(result), status_code=result.code)


@router.delete(
    "/objects/{objectId}",
    summary="Delete a settings object",
    description="204; an export's exporter stops. Refused (400): an export with pending dead letters"
    " (replay or discard them first), a management zone used by an export.",
    status_code=204,
    responses={
        400: {"model": ItemOrEnvelope},
        404: {"model": SettingsObjectResponse},
        409: {"model": SettingsObjectResponse},
    },
)
async def delete_object(
    _: Writer,
    settings: Service,
    objectId: str,
    updateToken: Annotated[
        str | None, Query(description="Optimistic lock: 409 when the object changed")
    ] = None,
    adminAccess: Annotated[bool, Query(description="Accepted for compatibility")] = False,
) -> Response:
    result = await settings.delete(objectId, updateToken)
    if result.code == 204:
        return Response(status_code=204)
    # A malformed updateToken was sent in the query; anything else refuses the object the path names.
    where = "QUERY" if any(v.path == "updateToken" for v in result.violations) else "PATH"
    return OrjsonResponse(_item(result, parameters=where), status_code=result.code)


# -- rendering -----------------------------------------------------------------------------------


def render(settings: SettingsService, record: SettingsRecord) -> dict[str, Any]:
    """Every field of an object, its secrets masked."""
    value = settings.masked_value(record)
    summary = settings_objects.summary(record, value)
    return {
        "objectId": record.object_id,
        "schemaId": record.schema_id,
        "schemaVersion": record.schema_version,
        "scope": record.scope,
        "externalId": record.external_id,
        "summary": summary,
        "searchSummary": summary,
        "created": record.created,
        "modified": record.modified,
        "createdBy": record.created_by,
        "modifiedBy": record.modified_by,
        "author": record.modified_by,
        "updateToken": settings_objects.update_token(record),
        "value": value,
        "resourceContext": {
            "operations": ["read", "write", "delete"],
            "modifications": {"modifiablePaths": [], "nonModifiablePaths": []},
        },
        "owner": None,  # this schema has no owner-based access control
        "modificationInfo": {
            "deletable": True,
            "modifiable": True,
            "movable": False,
            "modifiablePaths": [],
            "nonModifiablePaths": [],
        },
    }


def _item(result: ItemResult, parameters: str = "PAYLOAD_BODY") -> dict[str, Any]:
    """``parameters``: where what the violations name was sent (a DELETE's: its QUERY or PATH)."""
    if result.ok:
        return {"code": result.code, "objectId": result.object_id}
    error: dict[str, Any] = {"code": result.code, "message": result.message}
    if result.violations:
        error["constraintViolations"] = [
            {"path": v.path, "message": v.message, "parameterLocation": parameters, "location": None}
            for v in result.violations
        ]
    body: dict[str, Any] = {"code": result.code, "error": error}
    if result.object_id:
        body["objectId"] = result.object_id
    if result.invalid_value is not None:
        body["invalidValue"] = result.invalid_value
    return body


def _selected(record: SettingsRecord, query: dict[str, Any]) -> bool:
    if query["schemaIds"] and record.schema_id not in query["schemaIds"]:
        return False
    if query["scopes"] and record.scope not in {SCOPE_ALIASES.get(s) for s in query["scopes"]}:
        return False
    return not query["externalIds"] or record.external_id in query["externalIds"]


def _csv(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _fields(text: str | None, known: tuple[str, ...], default: tuple[str, ...]) -> tuple[str, ...]:
    wanted = tuple(_csv(text)) or default
    unknown = [f for f in wanted if f not in known]
    if unknown:
        raise ApiError(
            400,
            f"Unknown field(s) {', '.join(unknown)}",
            [Violation("fields", f"supported: {', '.join(known)}", "QUERY")],
        )
    return wanted


def _filter(text: str | None) -> Any:
    if not text:
        return None
    try:
        return parse_filter(text)
    except FilterError as exc:
        raise ApiError(400, f"Invalid filter: {exc}", [Violation("filter", str(exc), "QUERY")]) from None


def _sorter(text: str) -> Any:
    try:
        return parse_sort(text)
    except FilterError as exc:
        raise ApiError(400, f"Invalid sort: {exc}", [Violation("sort", str(exc), "QUERY")]) from None


def _page_start(matching: list[dict[str, Any]], query: dict[str, Any]) -> int:
    """Where the next page starts: after the object the last page ended with, so that objects
    deleted or created meanwhile skip none (an offset would). Should that object be gone too: by
    creation in the default order, else at the offset."""
    if query["after"] is None:
        return int(query["offset"])
    created, object_id = query["after"]
    for index, obj in enumerate(matching):
        if obj["objectId"] == object_id:
            return index + 1
    if query["sort"] is None:  # stored order: created, then objectId
        return next(
            (i for i, o in enumerate(matching) if (o["created"], o["objectId"]) > (created, object_id)),
            len(matching),
        )
    return int(query["offset"])


def _encode_page_key(query: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(query)).decode().rstrip("=")


def _decode_page_key(key: str) -> dict[str, Any]:
    try:
        query = orjson.loads(base64.urlsafe_b64decode(key + "=" * (-len(key) % 4)))
        expected = {
            "schemaIds",
            "scopes",
            "externalIds",
            "fields",
            "filter",
            "sort",
            "pageSize",
            "offset",
            "after",
        }
        if isinstance(query, dict):
            query.setdefault("sort", None)  # keys issued before sort was supported
            query.setdefault("after", None)  # ... and before pages continued after their last object
        if not isinstance(query, dict) or set(query) != expected:
            raise ValueError
        if not isinstance(query["offset"], int) or not isinstance(query["pageSize"], int):
            raise ValueError
        if not 1 <= query["pageSize"] <= MAX_PAGE_SIZE or query["offset"] < 0:
            raise ValueError
        for name in ("schemaIds", "scopes", "externalIds"):
            if not isinstance(query[name], list) or not all(isinstance(x, str) for x in query[name]):
                raise ValueError
        for name in ("fields", "filter", "sort"):
            if query[name] is not None and not isinstance(query[name], str):
                raise ValueError
        after = query["after"]
        if after is not None and not (
            isinstance(after, list)
            and len(after) == 2
            and isinstance(after[0], int)
            and isinstance(after[1], str)
        ):
            raise ValueError
    except (binascii.Error, orjson.JSONDecodeError, ValueError, TypeError):
        raise ApiError(
            400, "Invalid nextPageKey", [Violation("nextPageKey", "not a key this server issued", "QUERY")]
        ) from None
    return query
