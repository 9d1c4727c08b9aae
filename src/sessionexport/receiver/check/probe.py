"""The I/O side: a probe sends with the exporter's client, credentials and timeout, and keeps every exchange."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import msgspec

from sessionexport.export.auth import (
    Credentials,
    TokenError,
    credentials_for,
)
from sessionexport.export.config import BasicAuth, ExportConfig, OAuth2, SendDirect
from sessionexport.export.delivery import Attempt, Sender
from sessionexport.export.exchange import (
    TRANSPORT_ERRORS,
    describe_transport_error,
    exporter_client,
    ssl_context,
)
from sessionexport.export.tuning import ExportTuning
from sessionexport.media_types import JSON, NDJSON, media_type
from sessionexport.receiver.check.bodies import Bodies
from sessionexport.receiver.check.verdicts import CountError, Exchange, count_at

DEFAULT_TIMEOUT = ExportTuning().timeoutSeconds  # the exporter's request timeout
# A count is read until it holds still for a while (see Probe.settled_count).
SETTLE_MIN_SECONDS, SETTLE_STEP_SECONDS, SETTLE_MAX_SECONDS = 1.2, 0.4, 10.0


@dataclass(frozen=True, slots=True)
class CheckOptions:
    url: str
    timeout: float = DEFAULT_TIMEOUT
    ca_bundle: Path | None = None
    allow_http: bool = False
    auth: BasicAuth | OAuth2 | None = None
    count_url: str | None = None
    count_key: str = "sessions"
    seed: int | None = None  # of the generated sessions; random by default, so every run sends new ones
    index: str | None = None  # an Elasticsearch _bulk endpoint: the index the bulks' actions name
    use_post: bool = False  # the export's usePost and contentType: how its bulks are sent
    content_type: str = JSON

    @property
    def direct(self) -> SendDirect | None:
        return SendDirect(self.index, None) if self.index else None

    @property
    def method(self) -> str:
        """The method of the export's bulks: POST with sendDirect, as the settings require."""
        return "POST" if self.use_post or self.index else "PUT"

    @property
    def bulk_type(self) -> str:
        """The content type of the export's bulks: NDJSON with sendDirect, as the settings require."""
        return NDJSON if self.index and media_type(self.content_type) != NDJSON else self.content_type


class FixedHeaders:
    """Credentials that never change: a bogus bearer token, say."""

    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = headers

    async def headers(self) -> dict[str, str]:
        return self._headers

    async def refresh(self) -> bool:
        return False

    def secrets(self) -> tuple[str, ...]:
        return ()  # a bogus token: nothing to hide


class RefusalsCounted:
    """The exporter's credentials, counting how often the endpoint refused them (a 401 makes the
    sender forget an OAuth2 token and ask for a new one, once)."""

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials
        self.refused = 0

    async def headers(self) -> dict[str, str]:
        return await self._credentials.headers()

    async def refresh(self) -> bool:
        self.refused += 1
        return await self._credentials.refresh()

    def secrets(self) -> tuple[str, ...]:
        return self._credentials.secrets()


@dataclass
class TokenAnswer:
    status: int | None = None
    data: object = None


class Probe:
    """Sends with the exporter's client, credentials and timeout; keeps every exchange for timing."""

    def __init__(self, options: CheckOptions, client: httpx.AsyncClient, token_answer: TokenAnswer) -> None:
        self.options = options
        self.client = client
        self.token_answer = token_answer
        seed = options.seed if options.seed is not None else secrets.randbits(31)
        self.bodies = Bodies.generate(seed, options.direct)
        self.config = ExportConfig(
            export_id="check-endpoint",
            endpoint_url=options.url,
            enabled=True,
            content_type=JSON,
            use_post=False,
            auth=options.auth,
            send_direct=options.direct,
            management_zone=None,
            disable_notification=True,
            tuning=ExportTuning(timeoutSeconds=options.timeout, retries=0),
        )
        self.credentials = RefusalsCounted(credentials_for(options.auth, client, options.timeout))
        self.exchanges: list[Exchange] = []
        self.plain: Attempt | None = None  # the re-sent bulk's first send, for the gzip check
        self.plain_counted: bool | None = None  # whether the count rose for it (None: not counted)

    async def send(
        self,
        label: str,
        body: bytes,
        *,
        method: str | None = None,
        content_type: str | None = None,
        credentials: Credentials | None = None,
        compressed: bool = False,
    ) -> Attempt:
        """``body`` sent as the export would (its method and content type unless told otherwise)."""
        method, content_type = method or self.options.method, content_type or self.options.bulk_type
        config = replace(self.config, use_post=method == "POST")
        if compressed:
            config = replace(config, tuning=msgspec.structs.replace(config.tuning, compression="gzip"))
        sender = Sender(config, self.client, credentials or self.credentials)
        # An Elasticsearch bulk holds two lines per session: its items are read and judged too.
        items = body.count(b"\n") // 2 if self.options.direct else None
        attempt = (await sender.send(body, retries=0, content_type=content_type, items=items)).last
        self.exchanges.append(Exchange(label, attempt))
        return attempt

    async def settled_count(self) -> int | CountError:
        """The count once it stops changing: a store may count what it took a moment later
        (Elasticsearch counts documents from its next refresh, every second by default)."""
        loop = asyncio.get_running_loop()
        started, last = loop.time(), await self.count()
        while loop.time() - started < SETTLE_MAX_SECONDS:
            await asyncio.sleep(SETTLE_STEP_SECONDS)
            now = await self.count()
            if now == last and loop.time() - started >= SETTLE_MIN_SECONDS:
                return now
            last = now
        return last

    async def count(self) -> int | CountError:
        """The endpoint's session count from --count-url, or why there is none."""
        assert self.options.count_url is not None
        try:
            headers = {"Accept": JSON, **await self.credentials.headers()}
            response = await self.client.get(
                self.options.count_url, headers=headers, timeout=self.options.timeout
            )
        except TRANSPORT_ERRORS as exc:
            return CountError(f"count URL: {describe_transport_error(exc)}")
        except TokenError as exc:
            return CountError(f"count URL: OAuth token: {exc}")
        if response.status_code != 200:
            return CountError(f"count URL answered HTTP {response.status_code}")
        try:
            return count_at(response.json(), self.options.count_key)
        except ValueError:
            return CountError("count URL answered something other than JSON")
        except CountError as exc:
            return exc


@contextlib.asynccontextmanager
async def open_probe(options: CheckOptions) -> AsyncIterator[Probe]:
    token_answer = TokenAnswer()
    token_url = options.auth.token_url if isinstance(options.auth, OAuth2) else None

    async def keep_token_answer(response: httpx.Response) -> None:
        # The exporter's token code only says whether the token was usable; the check reports the raw answer.
        if token_url is not None and response.request.url == httpx.URL(token_url):
            await response.aread()
            token_answer.status = response.status_code
            with contextlib.suppress(ValueError):
                token_answer.data = response.json()

    # As the exporter's client: certificates verified, no redirects, no proxy settings from the environment.
    async with exporter_client(ssl_context(options.ca_bundle), keep_token_answer) as client:
        yield Probe(options, client, token_answer)


async def tls_handshake(url: str, context: ssl.SSLContext) -> str:
    """The negotiated TLS version; raises what the handshake raised."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    _, writer = await asyncio.open_connection(host, parts.port or 443, ssl=context, server_hostname=host)
    ssl_object = writer.get_extra_info("ssl_object")
    version = str(ssl_object.version()) if ssl_object is not None else "TLS"
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()
    return version
