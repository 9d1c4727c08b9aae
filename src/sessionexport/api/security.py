"""Token authentication: ``Authorization: Api-Token <token>``, checked for one scope per route."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

from fastapi import Request, Security
from fastapi.dependencies.models import Dependant
from fastapi.security import APIKeyHeader
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from sessionexport import tokens
from sessionexport.api.errors import ApiError, error_response
from sessionexport.clock import now_ms
from sessionexport.store import Store, StoreError
from sessionexport.store.records import TokenRecord

_header = APIKeyHeader(
    name="Authorization",
    auto_error=False,
    scheme_name="ApiToken",
    description="`Api-Token <token>`; create one with `sessionexport tokens create`.",
)
_CHALLENGE = {"WWW-Authenticate": "Api-Token"}


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def require(scope: tokens.Scope) -> Callable[..., Awaitable[TokenRecord]]:
    """A dependency that admits a request only with a valid token holding ``scope``."""

    async def check(
        request: Request, authorization: str | None = Security(_header, scopes=[scope.value])
    ) -> TokenRecord:
        record: TokenRecord | None = request.scope.get("state", {}).get(_VALIDATED)  # TokenFirst's
        if record is None:
            record = await valid_token(get_store(request), authorization)
        if scope.value not in record.scopes:
            raise ApiError(403, f"The API token lacks the required scope {scope.value}")
        return record

    _TOKEN_CHECKS.add(check)
    return check


_TOKEN_CHECKS: set[Callable[..., Awaitable[TokenRecord]]] = set()  # those ``require`` made
_VALIDATED = "sessionexport.api_token"  # request state: the token record TokenFirst found valid


async def valid_token(store: Store, authorization: str | None) -> TokenRecord:
    """The record of the header's token; ApiError 401 when there is none, or it is not valid."""
    token = _token_from_header(authorization)
    token_id = tokens.public_id(token)
    record = await store.get_token(token_id) if token_id else None
    if record is None or not tokens.matches(record, token):
        raise ApiError(401, "The API token is invalid or revoked", headers=_CHALLENGE)
    if tokens.expired(record, now_ms()):
        raise ApiError(401, "The API token has expired; create a new one", headers=_CHALLENGE)
    return record


async def check_route_tokens(request: Request) -> None:
    """Run the token checks among the dependencies of the request's route, on their own: for a
    request refused before they ran (FastAPI decodes a JSON body first), so that a body that is
    not JSON is told it needs a valid token with the scope before it is told it is not JSON."""
    for check in _token_checks(getattr(request.scope.get("route"), "dependant", None)):
        await check(request, request.headers.get("authorization"))


def _token_checks(dependant: Dependant | None) -> Iterator[Callable[..., Awaitable[TokenRecord]]]:
    if dependant is None:
        return
    if dependant.call in _TOKEN_CHECKS:
        yield dependant.call
    for sub in dependant.dependencies:
        yield from _token_checks(sub)


def _token_from_header(authorization: str | None) -> str:
    if not authorization:
        raise ApiError(
            401, "Missing Authorization header: send 'Authorization: Api-Token <token>'", headers=_CHALLENGE
        )
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "api-token" or not token.strip():
        raise ApiError(
            401,
            "Unsupported Authorization scheme: send 'Authorization: Api-Token <token>'",
            headers=_CHALLENGE,
        )
    return token.strip()


class TokenFirst:
    """ASGI middleware: an ``/api/v2`` request without a valid ``Api-Token`` gets its 401 before
    its body is read. FastAPI reads a route's body before its dependencies run, so a malformed
    body would otherwise be told what is wrong with it (400), not that it needs a token; and
    anyone could make the server read and hold a body (a megabyte on a settings route, for as long
    as they send it slowly). Whether the token holds the scope, the routes check (and
    ``check_route_tokens``, for a body FastAPI could not decode), with the record found here;
    when the store fails, they answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (scope["path"] + "/").startswith("/api/v2/"):
            try:
                record = await valid_token(
                    scope["app"].state.store, Headers(scope=scope).get("authorization")
                )
            except ApiError as error:
                await error_response(error)(scope, receive, send)
                return
            except StoreError:
                pass  # the route's own check answers, through the app's error handlers
            else:  # the route's check takes it, rather than reading the token again
                scope.setdefault("state", {})[_VALIDATED] = record
        await self.app(scope, receive, send)
