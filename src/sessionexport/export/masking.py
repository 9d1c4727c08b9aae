"""Secrets kept out of what an endpoint says back. No I/O.

An endpoint may echo the credentials it was sent (a token endpoint repeating ``client_secret``,
a proxy showing the Authorization header): every reason taken from an answer goes into logs,
alerts, dead letters and the UI, so each is masked, in the raw bytes and again once decoded.
Echoed, a secret is often encoded: percent-encoded (as a form, a URL or JavaScript writes it, in
upper or lower case hex), HTML-escaped (by name, in decimal or in hex, as each server's escaper
chooses), JSON-escaped, or quoted by an HTTP library's ``repr`` of a header it refused. So a secret
is sought as a pattern that takes each of its characters in any of these spellings, whichever
mix of them the text uses.
"""

from __future__ import annotations

import functools
import re

from sessionexport.settings.secrets import MASK

SHORTEST_MASKED = 4  # a shorter secret would mask ordinary letters of every message

_ENTITIES = {"&": "amp", "<": "lt", ">": "gt", '"': "quot", "'": "apos"}
_SHORT_ESCAPES = {
    '"': '\\"',
    "'": "\\'",
    "\\": "\\\\",
    "/": "\\/",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}


def masked(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every secret in it, as it is or encoded, replaced by the mask."""
    pattern = _pattern(secrets)
    return pattern.sub(MASK, text) if pattern is not None else text


def masked_answer(answer: bytes, secrets: tuple[str, ...]) -> bytes:
    """An answer's bytes masked as ``masked`` does, before a reason is cut out of them (a secret
    across the cut would otherwise keep its start)."""
    pattern = _bytes_pattern(secrets)
    return pattern.sub(MASK.encode(), answer) if pattern is not None else answer


def sent_secret(headers: dict[str, str]) -> tuple[str, ...]:
    """The credential an attempt sent in its Authorization header (the access token it used, which
    another attempt may have replaced by now)."""
    _, _, credential = headers.get("Authorization", "").partition(" ")
    return (credential,) if credential else ()


@functools.lru_cache(maxsize=64)
def _pattern(secrets: tuple[str, ...]) -> re.Pattern[str] | None:
    maskable = sorted({s for s in secrets if len(s) >= SHORTEST_MASKED}, key=len, reverse=True)
    if not maskable:
        return None
    # The longer secret first: it may hold another.
    return re.compile("|".join("".join(map(_any_spelling, secret)) for secret in maskable))


@functools.lru_cache(maxsize=64)
def _bytes_pattern(secrets: tuple[str, ...]) -> re.Pattern[bytes] | None:
    pattern = _pattern(secrets)
    return re.compile(pattern.pattern.encode()) if pattern is not None else None


def _any_spelling(char: str) -> str:
    """A pattern of one character as it is or in any of the encodings an echo may use."""
    utf8 = char.encode()
    spellings = [
        re.escape(char),
        "".join("%" + _hex(b, 2) for b in utf8),  # percent-encoded
        f"&#0*{ord(char)};",  # HTML, decimal
        f"&#[xX]0*{_hex(ord(char), 1)};",  # HTML, hex
        "".join("\\\\x" + _hex(b, 2) for b in utf8),  # a repr of its UTF-8 bytes
        _json_escape(char),
    ]
    if char == " ":
        spellings.append(r"\+")  # a form's space
    if char in _ENTITIES:
        spellings.append(f"&{_ENTITIES[char]};")
    if char in _SHORT_ESCAPES:
        spellings.append(re.escape(_SHORT_ESCAPES[char]))
    if ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0:  # what a repr of a str escapes in hex
        spellings.append("\\\\x" + _hex(ord(char), 2))
    return "(?:" + "|".join(spellings) + ")"


def _json_escape(char: str) -> str:
    """``\\uXXXX``, or the surrogate pair JSON writes for a character beyond the BMP."""
    code = ord(char)
    if code < 0x10000:
        return "\\\\u" + _hex(code, 4)
    code -= 0x10000
    return "\\\\u" + _hex(0xD800 + (code >> 10), 4) + "\\\\u" + _hex(0xDC00 + (code & 0x3FF), 4)


def _hex(value: int, width: int) -> str:
    """A pattern of ``value`` in hex digits of either case, zero-padded to ``width``."""
    return "".join(f"[{d}{d.lower()}]" if d.isalpha() else d for d in f"{value:0{width}X}")
