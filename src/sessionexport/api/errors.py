"""Errors as HTTP answers, translated once here, all in Dynatrace's error envelope:

    {"error": {"code": 400, "message": "...", "constraintViolations": [
        {"path": "...", "message": "...", "parameterLocation": "PAYLOAD_BODY", "location": "line 3"}]}}

Error tree handled here:
    ApiError                 raised by routes and dependencies, carries status and violations
    RequestValidationError   FastAPI's query/path parameter errors -> 400 with QUERY/PATH violations
    HTTPException            Starlette's (404 for unknown routes, 405 ...) -> same envelope
    InvalidValue             a value the database cannot hold (PostgreSQL: NUL in text) -> 400
    StoreFull                the disk (or quota) of the store is full -> 503, saying so
    StoreError               the storage backend failed -> 503
    SecretKeyError           stored secrets cannot be decrypted with the configured keys -> 500
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from sessionexport.api.rendering import OrjsonResponse
from sessionexport.http_methods import allowed_methods
from sessionexport.media_types import JSON, media_type
from sessionexport.settings.secrets import SecretKeyError
from sessionexport.store import StoreError
from sessionexport.store.base import InvalidValue, StoreFull
from sessionexport.throttle import Throttle, recurring

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Violation:
    path: str
    message: str
    parameter_location: str = "PAYLOAD_BODY"
    location: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "message": self.message,
            "parameterLocation": self.parameter_location,
            "location": self.location,
        }


@dataclass
class ApiError(Exception):
    status: int
    message: str
    violations: list[Violation] = field(default_factory=list)
    headers: Mapping[str, str] | None = None


def page_key_alone(request: Request) -> None:
    """Dynatrace's paging rule: a ``nextPageKey`` carries the whole query, so nothing else may come
    with it (a ``pageSize`` beside it would otherwise be silently ignored)."""
    others = sorted({name for name in request.query_params if name != "nextPageKey"})
    if others:
        raise ApiError(
            400,
            "nextPageKey must be given alone: the key carries the query of the first page",
            [Violation(name, "not allowed with nextPageKey", "QUERY") for name in others],
        )


def envelope(status: int, message: str, violations: list[Violation] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": status, "message": message}
    if violations:
        body["constraintViolations"] = [v.as_json() for v in violations]
    return {"error": body}


def error_response(error: ApiError) -> OrjsonResponse:
    return OrjsonResponse(
        envelope(error.status, error.message, error.violations),
        status_code=error.status,
        headers=error.headers,
    )


async def _api_error(_: Request, exc: Exception) -> OrjsonResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _validation_error(route_tokens: TokenCheck, request: Request, exc: Exception) -> OrjsonResponse:
    assert isinstance(exc, RequestValidationError)
    if any(err.get("type") == "json_invalid" for err in exc.errors()):
        try:  # refused before the route's token checks ran: they come first
            await route_tokens(request)
        except ApiError as error:
            return error_response(error)
    media = media_type(request.headers.get("content-type", ""))
    json_body = not media or media == JSON or media.endswith("+json")
    violations = []
    for err in exc.errors():
        where, *path = err.get("loc", ("body",))
        if where == "body" and not json_body:  # FastAPI read the body as JSON only for these types
            violations = [Violation("Content-Type", "must be application/json", "HEADER")]
            break
        violations.append(_violation(err, where, path))
    return error_response(ApiError(400, "Invalid request parameters", violations))


def _violation(err: Mapping[str, Any], where: str, path: list[Any]) -> Violation:
    location = _PARAMETER_LOCATION.get(where, "PAYLOAD_BODY")
    if err.get("type") == "json_invalid":  # path: a byte offset (api.strict_json), message: generic
        reason = err.get("ctx", {}).get("error", "malformed")
        return Violation("", f"invalid JSON at byte {path[0] if path else 0}: {reason}", location)
    return Violation(".".join(str(p) for p in path), err.get("msg", "invalid"), location)


async def _http_error(request: Request, exc: Exception) -> OrjsonResponse:
    assert isinstance(exc, HTTPException)
    headers = exc.headers
    if exc.status_code == 405:  # not only the methods of the route that happened to match first
        headers = {**(headers or {}), "Allow": allowed_methods(request)}
    return error_response(ApiError(exc.status_code, str(exc.detail), headers=headers))


async def _secret_key_error(_: Request, exc: Exception) -> OrjsonResponse:
    log.error("secrets: %s", exc)
    return error_response(
        ApiError(
            500, "Stored secrets cannot be decrypted with the configured keys (SESSIONEXPORT_SECRET_KEY)"
        )
    )


async def _invalid_value(_: Request, exc: Exception) -> OrjsonResponse:
    return error_response(ApiError(400, f"A value in the request cannot be stored: {exc}"))


_STORE_FAILURES = Throttle()


async def _store_error(_: Request, exc: Exception) -> OrjsonResponse:
    if (quiet := _STORE_FAILURES.allows()) is not None:
        log.error("storage failure: %s%s", exc, recurring(quiet))
    return error_response(
        ApiError(
            503, "Storage is unavailable; nothing was changed. Retry later.", headers={"Retry-After": "5"}
        )
    )


async def _store_full(_: Request, exc: Exception) -> OrjsonResponse:
    if (quiet := _STORE_FAILURES.allows()) is not None:
        log.error("storage full: %s%s", exc, recurring(quiet))
    message = (
        "The disk of the store is full; nothing was changed. Retry once space is freed (an operator can"
        " shorten the retention, or give the store more space)."
    )
    return error_response(ApiError(503, message, headers={"Retry-After": "60"}))


ERROR_ENVELOPE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "integer"},
                "message": {"type": "string"},
                "constraintViolations": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "path": {"type": ["string", "null"]},
                            "message": {"type": ["string", "null"]},
                            "parameterLocation": {"type": ["string", "null"]},
                            "location": {"type": ["string", "null"]},
                        },
                    },
                },
            },
        }
    },
}

_PARAMETER_LOCATION = {"query": "QUERY", "path": "PATH", "header": "HEADER", "body": "PAYLOAD_BODY"}


TokenCheck = Callable[[Request], Awaitable[None]]


def install_error_handlers(app: FastAPI, route_tokens: TokenCheck) -> None:
    """``route_tokens``: checks the token a request's route requires (raising ``ApiError``)."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, functools.partial(_validation_error, route_tokens))
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(StoreError, _store_error)
    app.add_exception_handler(StoreFull, _store_full)
    app.add_exception_handler(InvalidValue, _invalid_value)
    app.add_exception_handler(SecretKeyError, _secret_key_error)


# What any route may answer besides its own answers: the error handlers and middleware above are
# global, so their answers are documented once, here, for every operation they apply to.
_COMMON_ERRORS: dict[str, str] = {
    "401": "Missing, invalid, revoked or expired token",
    "403": "The token lacks the required scope",
    "413": "The request body is larger than this route takes (as sent, or once decoded)",
    "415": "A body in a `Content-Encoding` this route does not take (a wrong `Content-Type` gets 400)",
    "503": "The store is unavailable or its disk is full; nothing was changed. `Retry-After` says"
    " when to try again",
}


def document_errors(operation: dict[str, Any]) -> None:
    """Add to an OpenAPI operation the error answers every route of its kind can give (401 and
    403 when it needs a token; 413, 415 and 503 always: the body limits hold for any request, one
    that should have no body included), and give every error answer the envelope's schema."""
    responses: dict[str, Any] = operation.setdefault("responses", {})
    codes = ["413", "415", "503"]
    if operation.get("security"):
        codes += ["401", "403"]
    for code in codes:
        responses.setdefault(code, {"description": _COMMON_ERRORS[code]})
    for code, response in responses.items():
        if code[0] in "45":
            response.setdefault("content", {"application/json": {"schema": ERROR_ENVELOPE_SCHEMA}})
