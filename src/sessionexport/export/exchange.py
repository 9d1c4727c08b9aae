"""HTTP with endpoints, as the exporters have it: the client (certificates always verified), one
exchange read within bounds, and what went wrong in words.

An endpoint may answer with anything, of any size, as slowly as it likes: the answer is read only
up to what the caller needs of it (a reason, Elasticsearch's items, a token), and the caller puts
a deadline on the whole exchange.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import certifi
import httpx

ResponseHook = Callable[[httpx.Response], Awaitable[None]]
# What an exchange with an endpoint may fail with. TLS failing after its handshake (an endpoint
# that wants a client certificate, one that writes plain text into the TLS stream) comes as an
# ssl.SSLError that httpx does not wrap.
TRANSPORT_ERRORS = (httpx.HTTPError, ssl.SSLError)


def ssl_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """Certificates are always verified: the public CAs, plus ``ca_bundle`` when given."""
    context = ssl.create_default_context(cafile=certifi.where())
    if ca_bundle is not None:
        context.load_verify_locations(cafile=str(ca_bundle))
    return context


def exporter_client(
    verify: ssl.SSLContext, on_response: ResponseHook | None = None, *, proxy: str | None = None
) -> httpx.AsyncClient:
    """A client as the exporters send with: no redirects followed (a bulk is not sent on to
    where an answer points), no proxy or certificate settings taken from the environment: only
    ``proxy``, an HTTP proxy that HTTPS goes through by CONNECT (TLS stays end to end)."""
    hooks = {"response": [on_response]} if on_response is not None else None
    return httpx.AsyncClient(
        verify=verify, follow_redirects=False, trust_env=False, event_hooks=hooks, proxy=proxy
    )


def proxy_problem(url: str) -> str | None:
    """Why ``url`` cannot be a proxy for exports; None when it can."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a URL with a valid port (percent-encode a password's @ : / ? # [ ] % and spaces)"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be http://HOST:PORT (or https://), optionally with USER:PASSWORD@"
    if port == 0 or parts.path not in ("", "/") or parts.query or parts.fragment:
        return "must be only a scheme, a host and a port (and credentials)"
    return None


async def exchange(
    client: httpx.AsyncClient, request: httpx.Request, limit: int
) -> tuple[httpx.Response, bytes]:
    """The response, and at most ``limit`` bytes of its (decoded) answer; what is left unread
    closes the connection rather than returning it to the pool."""
    response = await client.send(request, stream=True)
    try:
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
        return response, b"".join(chunks)[:limit]
    finally:
        await response.aclose()


_OPENSSL_SOURCE = re.compile(r"\s*\(_ssl\.c:\d+\)\W*$")  # where in CPython it failed: no help to an operator


def describe_transport_error(exc: httpx.HTTPError | ssl.SSLError) -> str:
    """A short, precise reason; certificate problems are named as such."""
    text = _OPENSSL_SOURCE.sub("", str(exc)).strip()
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        detail = text.split("certificate verify failed:", 1)[-1] if ":" in text else text
        return f"TLS certificate verification failed ({detail.strip()})"
    if isinstance(exc, ssl.SSLError):
        if "CERTIFICATE_REQUIRED" in text:
            return (
                f"TLS failed: the endpoint requires a client certificate, which exports do not send ({text})"
            )
        return f"TLS failed after the handshake ({text})"
    if isinstance(exc, httpx.ProxyError):  # the proxy's own answer to CONNECT
        return f"the proxy refused the tunnel to the endpoint ({text or 'no reason given'})"
    if isinstance(exc, httpx.ConnectError):
        # Empty when the endpoint closed the connection in the handshake: no TLS on that port, or
        # only a version too old to use.
        return f"connection failed ({text or 'closed by the endpoint before TLS was set up'})"
    text = text or type(exc).__name__
    for kind, what in _BROKEN:
        if isinstance(exc, kind):
            return f"{what} ({text})" if str(exc) else what
    return text


# What broke, when httpx's text says little more than its type (a reset gives an empty message).
_BROKEN: tuple[tuple[type[httpx.HTTPError], str], ...] = (
    (httpx.WriteError, "the connection broke while the body was being sent"),
    (httpx.ReadError, "the connection broke while the answer was awaited or read"),
    (httpx.RemoteProtocolError, "the endpoint broke the HTTP exchange"),
)
