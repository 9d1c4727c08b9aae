"""Secrets kept out of what an endpoint says back. No I/O.

An endpoint may echo the credentials it was sent (a token endpoint repeating ``client_secret``,
a proxy showing the Authorization header): every reason taken from an answer goes into logs,
alerts, dead letters and the UI, so each is masked, in the raw bytes and again once decoded
(JSON escapes and HTML entities hide a secret from a byte search). An endpoint or an error message
may quote a secret encoded (percent-encoded as a form, a URL or JavaScript's encodeURIComponent
write it; HTML-escaped; in an HTTP library's ``repr`` of a header it refused): those forms are
masked too.
"""

from __future__ import annotations

import html
import json
import re
from urllib.parse import quote, quote_plus

from sessionexport.settings.secrets import MASK

SHORTEST_MASKED = 4  # a shorter secret would mask ordinary letters of every message


def masked(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every secret in it, as it is or encoded, replaced by the mask."""
    for form in _forms(secrets):
        text = text.replace(form, MASK)
    return text


def masked_answer(answer: bytes, secrets: tuple[str, ...]) -> bytes:
    """An answer's bytes masked as ``masked`` does, before a reason is cut out of them (a secret
    across the cut would otherwise keep its start)."""
    for form in _forms(secrets):
        answer = answer.replace(form.encode(), MASK.encode())
    return answer


def sent_secret(headers: dict[str, str]) -> tuple[str, ...]:
    """The credential an attempt sent in its Authorization header (the access token it used, which
    another attempt may have replaced by now)."""
    _, _, credential = headers.get("Authorization", "").partition(" ")
    return (credential,) if credential else ()


def _encoded_forms(secret: str) -> set[str]:
    """The secret, and how a ``repr`` of it or of its UTF-8 bytes, ASCII JSON, percent-encoding
    (a form's ``+`` for a space, a URL's ``%20``, encodeURIComponent's; in upper or lower case
    hex) and HTML escapes (of the quotes: by name, in decimal or hex) write it."""
    # As a form writes it (+ for a space), as a URL does (%20), as encodeURIComponent does.
    percent = {quote_plus(secret), quote(secret, safe=""), quote(secret, safe="!'()*")}
    escaped = html.escape(secret, quote=False)
    quotes = [("'", '"'), ("&#x27;", "&quot;"), ("&#39;", "&#34;"), ("&#39;", "&quot;"), ("&apos;", "&quot;")]
    return {
        secret,
        repr(secret)[1:-1],
        repr(secret.encode())[2:-1],
        json.dumps(secret)[1:-1],
        *percent,
        *(_PERCENT_HEX.sub(lambda hexed: hexed[0].lower(), form) for form in percent),
        *(escaped.replace("'", single).replace('"', double) for single, double in quotes),
    }


_PERCENT_HEX = re.compile(r"%[0-9A-F]{2}")


def _forms(secrets: tuple[str, ...]) -> list[str]:
    forms = {form for secret in secrets if len(secret) >= SHORTEST_MASKED for form in _encoded_forms(secret)}
    return sorted(forms, key=len, reverse=True)  # the longer form first: it may hold another
