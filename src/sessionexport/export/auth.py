"""Credentials for export requests: Basic, or an OAuth 2.0 client-credentials bearer token.

The token is requested as the original documentation shows (form fields ``client_id``,
``client_secret``, ``grant_type=client_credentials`` and ``scope`` when set), cached until shortly
before ``expires_in`` runs out, and fetched again when the endpoint answers 401. The OAuth
protocol parts (request body, client authentication, token expiry) are Authlib's.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from typing import Any, Protocol

import httpx
from authlib.oauth2.auth import ClientAuth
from authlib.oauth2.rfc6749 import OAuth2Token
from authlib.oauth2.rfc6749.parameters import prepare_token_request

from sessionexport.export.answers import http_error
from sessionexport.export.config import BasicAuth, OAuth2
from sessionexport.export.exchange import TRANSPORT_ERRORS, describe_transport_error, exchange
from sessionexport.model.validation import NOT_JSON, decode_any

EXPIRY_LEEWAY_SECONDS = 30
TOKEN_ANSWER_BYTES = 64 * 1024  # a token answer is a few hundred bytes: more is not a token
_SENDABLE_TOKEN = re.compile(r"[!-~]+")  # visible ASCII: what a header value carries as it is


class TokenError(Exception):
    """The token endpoint did not give a usable token."""


class Credentials(Protocol):
    async def headers(self) -> dict[str, str]: ...

    async def refresh(self) -> bool:
        """Forget a token the endpoint refused; True when a retry can use a new one."""

    def secrets(self) -> tuple[str, ...]:
        """The credentials as they travel (a password, the Basic header's base64, a token):
        masked, in every encoding of them, wherever an endpoint echoes them."""


class NoCredentials:
    async def headers(self) -> dict[str, str]:
        return {}

    async def refresh(self) -> bool:
        return False

    def secrets(self) -> tuple[str, ...]:
        return ()


class BasicCredentials:
    def __init__(self, auth: BasicAuth) -> None:
        encoded = base64.b64encode(f"{auth.username}:{auth.password}".encode()).decode()
        self._header = {"Authorization": "Basic " + encoded}
        self._secrets = (auth.password, encoded)  # masking adds their encoded forms

    async def headers(self) -> dict[str, str]:
        return self._header

    async def refresh(self) -> bool:
        return False

    def secrets(self) -> tuple[str, ...]:
        return self._secrets


class OAuth2Credentials:
    def __init__(self, auth: OAuth2, client: httpx.AsyncClient, timeout: float) -> None:
        self._auth = auth
        self._client = client
        self._timeout = timeout
        self._token: OAuth2Token | None = None
        self._lock = asyncio.Lock()

    async def headers(self) -> dict[str, str]:
        async with self._lock:
            if self._token is None or self._token.is_expired(leeway=EXPIRY_LEEWAY_SECONDS):
                self._token = await self._fetch()
            return {"Authorization": f"Bearer {self._token['access_token']}"}

    def secrets(self) -> tuple[str, ...]:
        secret = self._auth.client_secret
        token = (self._token["access_token"],) if self._token is not None else ()
        return (secret, *token)  # masking adds their encoded forms

    async def refresh(self) -> bool:
        self._token = None
        return True

    async def _fetch(self) -> OAuth2Token:
        body = prepare_token_request("client_credentials", scope=self._auth.scope)
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        client_auth = ClientAuth(self._auth.client_id, self._auth.client_secret, "client_secret_post")
        url, headers, body = client_auth.prepare("POST", self._auth.token_url, headers, body)
        try:
            request = self._client.build_request(
                "POST", url, content=body, headers=headers, timeout=self._timeout
            )
            async with asyncio.timeout(self._timeout):  # the whole exchange, however the answer trickles
                response, answer = await exchange(self._client, request, TOKEN_ANSWER_BYTES)
        except (TimeoutError, httpx.TimeoutException):
            raise TokenError("token request timed out") from None
        except TRANSPORT_ERRORS as exc:
            raise TokenError(f"token request failed: {describe_transport_error(exc)}") from None
        except (httpx.InvalidURL, ValueError) as exc:  # stored before validation refused such URLs
            raise TokenError(f"the token request could not be made: {exc}") from None
        if response.status_code != 200:
            said = http_error(response.status_code, answer, self.secrets())
            raise TokenError(f"token endpoint answered {said}")
        if len(answer) >= TOKEN_ANSWER_BYTES:
            raise TokenError(
                f"token endpoint answered more than {TOKEN_ANSWER_BYTES // 1024} KiB: not a token"
            )
        try:
            data = decode_any(answer)  # an expires_in of 1e400 is JSON, refused below as no seconds
        except NOT_JSON:
            raise TokenError("token endpoint answered something other than JSON") from None
        token = usable_token(data)
        if token.get("expires_in") is not None:  # 0 too, which Authlib would read as "never"
            token["expires_at"] = int(time.time()) + token["expires_in"]
        return OAuth2Token.from_dict(token)


def usable_token(data: object) -> dict[str, Any]:
    """A token answer's fields as the exporter uses them (``expires_in`` in whole seconds, as some
    endpoints send it as a string: "3600"); a ``TokenError`` says why the answer is no usable token."""
    if not isinstance(data, dict) or not isinstance(data.get("access_token"), str):
        raise TokenError("token endpoint answer has no access_token")
    if not _SENDABLE_TOKEN.fullmatch(data["access_token"]):
        # Kept, it would fail every request before it went out, with no 401 to replace it.
        raise TokenError(
            "token endpoint answered an access_token that no Authorization header can carry"
            " (empty, or not visible ASCII: a space, line break or other character in it)"
        )
    if str(data.get("token_type") or "Bearer").lower() != "bearer":  # null: not said, as when left out
        raise TokenError(f"token type {data.get('token_type')!r} is not Bearer")
    # RFC 6749 has no expires_at; an endpoint's own (in milliseconds, or anything) is not read.
    data = {name: value for name, value in data.items() if name != "expires_at"}
    if (expires_in := data.get("expires_in")) is None:
        return data
    try:
        return {**data, "expires_in": int(expires_in)}
    except (TypeError, ValueError, OverflowError):  # OverflowError: an infinite float
        shown = repr(expires_in)[:40]
        raise TokenError(f"token endpoint answered an expires_in that is not seconds: {shown}") from None


def credentials_for(
    auth: BasicAuth | OAuth2 | None, client: httpx.AsyncClient, timeout: float
) -> Credentials:
    if isinstance(auth, BasicAuth):
        return BasicCredentials(auth)
    if isinstance(auth, OAuth2):
        return OAuth2Credentials(auth, client, timeout)
    return NoCredentials()
