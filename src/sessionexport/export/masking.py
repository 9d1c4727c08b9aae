"""Secrets kept out of what an endpoint says back. No I/O.

An endpoint may echo the credentials it was sent (a token endpoint repeating ``client_secret``,
a proxy showing the Authorization header): every reason taken from an answer goes into logs,
alerts, dead letters and the UI, so each is masked, in the raw bytes and again once decoded
(JSON escapes and HTML entities hide a secret from a byte search). An error message may quote a
secret escaped (an HTTP library refusing a header shows its ``repr``): those forms are masked too.
"""

from __future__ import annotations

import json

from sessionexport.settings.secrets import MASK

SHORTEST_MASKED = 4  # a shorter secret would mask ordinary letters of every message


def masked(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every secret in it, as it is or escaped, replaced by the mask."""
    for form in _maskable(tuple(form for secret in secrets for form in _quoted_forms(secret))):
        text = text.replace(form, MASK)
    return text


def masked_answer(answer: bytes, secrets: tuple[str, ...]) -> bytes:
    """An answer's bytes masked as ``masked`` does, before a reason is cut out of them (a secret
    across the cut would otherwise keep its start)."""
    for secret in _maskable(secrets):
        answer = answer.replace(secret.encode(), MASK.encode())
    return answer


def sent_secret(headers: dict[str, str]) -> tuple[str, ...]:
    """The credential an attempt sent in its Authorization header (the access token it used, which
    another attempt may have replaced by now)."""
    _, _, credential = headers.get("Authorization", "").partition(" ")
    return (credential,) if credential else ()


def _quoted_forms(secret: str) -> tuple[str, ...]:
    """The secret, and how a ``repr`` of it or of its UTF-8 bytes, or ASCII JSON, writes it."""
    return secret, repr(secret)[1:-1], repr(secret.encode())[2:-1], json.dumps(secret)[1:-1]


def _maskable(secrets: tuple[str, ...]) -> list[str]:
    # The longer form first: it may hold another.
    return sorted((s for s in secrets if len(s) >= SHORTEST_MASKED), key=len, reverse=True)
