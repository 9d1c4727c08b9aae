"""Who may deliver: Basic credentials, Bearer tokens from the receiver's own token endpoint, or JWTs
from an external issuer's JWKS. With none configured, every request is accepted.

Own tokens are JWTs signed (HS256) with a key kept in the data directory, so tokens issued before
a restart stay valid until they expire, as a sender that caches them expects; each names its
client's secret by a keyed fingerprint, so removing a client or changing its secret (and
restarting) revokes the tokens issued to it at once.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote_plus

import httpx
import orjson
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, OctKey

from sessionexport.folders import make_private_dir
from sessionexport.settings.secrets import create_private_file

log = logging.getLogger(__name__)

TOKEN_KEY_FILE = "token.key"  # noqa: S105 (a file name)
DEFAULT_SCOPE = "session-export-api"
KEYS_RETRY_SECONDS = 10.0  # after a failed load of the JWKS
# Every asymmetric JWS algorithm an issuer may sign with (a P-384 key can only sign ES384). None
# of HS*: keys anyone may read hold no shared secret, and a public key taken for one forges tokens.
_ASYMMETRIC = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]


class Unauthorized(Exception):
    """401: the reason goes into the body and ``WWW-Authenticate``, never the presented secret."""


class InvalidToken(Unauthorized):
    """A Bearer token that was presented and refused (RFC 6750's ``invalid_token``)."""


class KeysUnavailable(Exception):
    """503: the issuer's keys cannot be read now, so no Bearer JWT can be judged either way."""


class OAuthError(Exception):
    """An RFC 6749 error answer of the token endpoint."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description

    def as_json(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


def parse_pair(text: str, what: str) -> tuple[str, str]:
    """``USER:PASS`` or ``ID:SECRET``; the secret may contain ``:``."""
    name, sep, secret = text.partition(":")
    if not sep or not name or not secret:
        raise ValueError(f"{what} must look like NAME:SECRET")
    return name, secret


def basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except ValueError:  # not base64 (binascii.Error), not ASCII, or not UTF-8 once decoded
        return None
    return (user, password) if sep else None


def bearer_token(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def load_token_key(data_dir: Path) -> bytes:
    """The signing key of issued tokens, created (mode 0600) on first use."""
    path = data_dir / TOKEN_KEY_FILE
    if not path.exists():
        make_private_dir(data_dir)
        create_private_file(path, secrets.token_hex(32).encode())  # False: another process made it first
    return bytes.fromhex(path.read_text().strip())


def token_form(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """The fields of a token request; a field given twice is refused (RFC 6749 §3.2: which one
    would count is not for a server to guess)."""
    fields = dict(pairs)
    if len(fields) < len(pairs):
        twice = sorted(name for name, count in Counter(name for name, _ in pairs).items() if count > 1)
        raise OAuthError(400, "invalid_request", f"given more than once: {', '.join(twice)}")
    return fields


@dataclass
class TokenIssuer:
    """The OAuth 2.0 client-credentials token endpoint (RFC 6749 §4.4), and the check of its tokens."""

    clients: dict[str, str]
    key: bytes
    ttl_seconds: int = 300
    default_scope: str = DEFAULT_SCOPE
    clock: Callable[[], float] = time.time

    def issue(self, form: Mapping[str, str], authorization: str | None) -> dict[str, object]:
        candidates = self._client(form, authorization)
        if not form.get("grant_type"):  # RFC 6749 §5.2: a required parameter missing
            raise OAuthError(400, "invalid_request", "grant_type is missing (client_credentials)")
        if form["grant_type"] != "client_credentials":
            raise OAuthError(400, "unsupported_grant_type", "grant_type must be client_credentials")
        known = [client_id for client_id, secret in candidates if self._known(client_id, secret)]
        if not known:
            raise OAuthError(401, "invalid_client", "unknown client or wrong secret")
        client_id = known[0]
        scope = form.get("scope") or self.default_scope
        now = int(self.clock())
        claims = {
            "sub": client_id,
            "scope": scope,
            "iat": now,
            "exp": now + self.ttl_seconds,
            "sec": self._fingerprint(client_id),
        }
        token = jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(self.key))
        return {"access_token": token, "token_type": "Bearer", "expires_in": self.ttl_seconds, "scope": scope}

    def _known(self, client_id: str, secret: str) -> bool:
        # Both checks always run: how long the answer takes says nothing about which one failed.
        known = client_id in self.clients
        right = _equal(secret, self.clients.get(client_id, secret + "x"))
        return known and right

    def verify(self, token: str) -> str:
        try:
            claims = jwt.decode(token, OctKey.import_key(self.key), algorithms=["HS256"]).claims
            jwt.JWTClaimsRegistry(now=int(self.clock()), exp={"essential": True}).validate(claims)
        except (JoseError, ValueError) as exc:
            raise InvalidToken(f"invalid or expired token: {exc}") from None
        client_id = claims.get("sub")
        if (
            not isinstance(client_id, str)
            or client_id not in self.clients
            or not _equal(str(claims.get("sec")), self._fingerprint(client_id))
        ):
            raise InvalidToken("token of a client that is gone or whose secret has changed")
        return client_id

    def _fingerprint(self, client_id: str) -> str:
        """The client's current secret, keyed: tells a changed secret, tells nothing of the secret."""
        secret = f"{client_id}\0{self.clients[client_id]}".encode()
        return hmac.new(self.key, secret, "sha256").hexdigest()[:32]

    @staticmethod
    def _client(form: Mapping[str, str], authorization: str | None) -> list[tuple[str, str]]:
        """The client id and secret to check: by the Basic header or by form fields (both allowed
        by RFC 6749 §2.3.1), never both at once (§2.3: one method per request). In a Basic header
        the RFC has them form-urlencoded first; many clients send them as they are: both are tried."""
        if authorization and (pair := basic_credentials(authorization)):
            if "client_secret" in form:
                raise OAuthError(
                    400, "invalid_request", "authenticate by the Basic header or by form fields, not both"
                )
            candidates = [pair, (unquote_plus(pair[0]), unquote_plus(pair[1]))]
            if "client_id" in form and form["client_id"] not in {client_id for client_id, _ in candidates}:
                raise OAuthError(
                    400, "invalid_request", "the form's client_id is not the Basic header's client"
                )
            return candidates
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if not client_id or not secret:
            raise OAuthError(
                401,
                "invalid_client",
                "client authentication missing (Basic header or client_id/client_secret)",
            )
        return [(client_id, secret)]


@dataclass
class JwksVerifier:
    """Bearer JWTs signed by an external issuer whose keys are published as a JWKS (file or https URL)."""

    source: str
    issuer: str | None = None
    audience: str | None = None
    verify: object = True  # an ssl.SSLContext for extra CAs, passed to httpx
    clock: Callable[[], float] = time.time
    _keys: KeySet | None = None
    _loaded_at: float = field(default=0.0)
    _failed_at: float | None = None  # the last load that failed, and why: tried again after a while
    _failure: str = ""
    _loading: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        # Keys fetched over plain HTTP could be swapped on the way, and forged tokens then accepted.
        if self.source.lower().startswith("http://"):
            raise ValueError("--jwks: keys are fetched over https:// only (or read from a file)")

    async def load(self) -> None:
        asked_at = self.clock()
        async with self._loading:  # one fetch at a time: requests that wait take its outcome
            if self._loaded_at >= asked_at:
                return  # loaded while this one waited
            await self._load()

    async def _load(self) -> None:
        if self._failed_at is not None and self.clock() - self._failed_at < KEYS_RETRY_SECONDS:
            raise KeysUnavailable(self._failure)  # not fetched again for every request meanwhile
        try:
            if self.source.lower().startswith("https://"):
                async with httpx.AsyncClient(verify=self.verify, timeout=10) as client:  # type: ignore[arg-type]
                    response = await client.get(self.source)
                    response.raise_for_status()
                    self._keys = KeySet.import_key_set(response.json())
            else:
                self._keys = KeySet.import_key_set(_read_json(Path(self.source)))  # type: ignore[arg-type]
        except (httpx.HTTPError, OSError, ValueError, KeyError, TypeError, JoseError) as exc:
            log.warning("JWKS %s could not be loaded: %r", self.source, exc)
            self._failed_at, self._failure = self.clock(), f"the JWKS could not be loaded: {exc!r}"
            raise KeysUnavailable(self._failure) from None
        self._loaded_at, self._failed_at = self.clock(), None

    async def check(self, token: str) -> str | None:
        """Who the token names (see ``_caller``); InvalidToken when it is not good here."""
        try:
            claims = await self._verified_claims(token, reload=self.clock() - self._loaded_at >= 60)
        except JoseError as exc:
            raise InvalidToken(f"invalid token: {exc}") from None
        options: dict[str, dict[str, object]] = {"exp": {"essential": True}}
        if self.issuer:
            options["iss"] = {"essential": True, "value": self.issuer}
        if self.audience:
            options["aud"] = {"essential": True, "value": self.audience}
        try:
            jwt.JWTClaimsRegistry(now=int(self.clock()), **options).validate(claims)  # type: ignore[arg-type]
        except JoseError as exc:
            raise InvalidToken(f"token rejected: {exc}") from None
        return _caller(claims)

    async def _verified_claims(self, token: str, reload: bool) -> dict[str, object]:
        """Claims of a validly signed token; keys are fetched again (at most once a minute) when the
        signature does not verify, since the issuer may have rotated them."""
        if self._keys is None:
            await self.load()
        assert self._keys is not None
        try:
            return jwt.decode(token, self._keys, algorithms=_ASYMMETRIC).claims
        except JoseError as unverified:
            if not reload:
                raise
            try:
                await self.load()
            except KeysUnavailable:  # the keys known so far stay, and they judged the token
                raise unverified from None
        return jwt.decode(token, self._keys, algorithms=_ASYMMETRIC).claims


# The subject, or the client of a client-credentials token, in the claim an issuer names it by.
CALLER_CLAIMS = ("sub", "client_id", "azp", "appid")


def _caller(claims: dict[str, object]) -> str | None:
    """Who a token names, for the request record: its subject, else its client (issuers differ
    in which claims a client-credentials token carries); None when it names no one."""
    return next((str(v) for name in CALLER_CLAIMS if (v := claims.get(name)) not in (None, "")), None)


def jwks_file_problem(path: Path) -> str | None:
    """Why the JWKS file cannot give keys, or None: told when the receiver starts, not as a 503 to
    every Bearer token."""
    try:
        KeySet.import_key_set(_read_json(path))  # type: ignore[arg-type]
    except (OSError, ValueError, KeyError, TypeError, JoseError) as exc:
        return f"not a JWKS ({exc!r})"
    return None


def _read_json(path: Path) -> dict[str, object]:
    value = orjson.loads(path.read_bytes())
    if not isinstance(value, dict):
        raise ValueError(f"{path} is not a JWKS document")
    return value


@dataclass
class Authenticator:
    basic: tuple[str, str] | None = None
    tokens: TokenIssuer | None = None
    jwks: JwksVerifier | None = None

    @property
    def required(self) -> bool:
        return bool(self.basic or self.tokens or self.jwks)

    def challenge(self, refused: Unauthorized | None = None) -> str:
        """``WWW-Authenticate`` for a 401; after a refused Bearer token, saying so (RFC 6750 §3)."""
        bearer = 'Bearer realm="sessionexport"'
        if isinstance(refused, InvalidToken):
            bearer += ', error="invalid_token"'
        schemes = (['Basic realm="sessionexport"'] if self.basic else []) + (
            [bearer] if self.tokens or self.jwks else []
        )
        return ", ".join(schemes)

    async def check(self, authorization: str | None) -> str | None:
        """The principal (user, client id, subject); None when no auth is configured."""
        if not self.required:
            return None
        if not authorization:
            raise Unauthorized("credentials required")
        if self.basic and authorization.partition(" ")[0].lower() == "basic":
            if not (pair := basic_credentials(authorization)):
                raise Unauthorized("malformed Basic credentials (base64 of USER:PASSWORD expected)")
            user_ok, password_ok = _equal(pair[0], self.basic[0]), _equal(pair[1], self.basic[1])
            if user_ok and password_ok:  # both compared: no timing hint about which one was wrong
                return pair[0]
            raise Unauthorized("wrong user name or password")
        token = bearer_token(authorization)
        # Tokens of the receiver's own endpoint are signed with HS256, which a JWKS issuer's never
        # are: each token goes to the one check that can judge it, and fails with its reason.
        if token and self.tokens and (not self.jwks or _algorithm(token) == "HS256"):
            return self.tokens.verify(token)
        if token and self.jwks:
            return await self.jwks.check(token)
        if (self.tokens or self.jwks) and authorization.partition(" ")[0].lower() == "bearer":
            raise Unauthorized("a Bearer header without a token")
        raise Unauthorized("unsupported authorization scheme for this receiver")


def _algorithm(token: str) -> str | None:
    """The ``alg`` of a compact JWS's header, or None when there is none to read."""
    try:
        alg = jws.extract_compact(token.encode()).headers().get("alg")
    except (JoseError, ValueError):
        return None
    return alg if isinstance(alg, str) else None
