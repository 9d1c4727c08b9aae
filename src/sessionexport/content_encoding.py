"""Compressed bodies: requests' (``Content-Encoding: gzip`` or ``deflate``) decoded within a limit;
answers and exported bulks gzipped. No I/O.

Senders of large NDJSON batches compress them (the official Elasticsearch client does, with
``http_compress=True``). A data route's limit applies to the decoded body: a small body that
inflates past it (a "zip bomb") is refused as soon as it does, never inflated whole.

- ``gzip`` (and its old name ``x-gzip``): one or more gzip members, as ``cat a.gz b.gz`` makes;
- ``deflate``: the zlib format (RFC 9110), or raw deflate, which some clients send instead;
- ``identity``, or no header: the body as it is.
"""

from __future__ import annotations

import zlib

IDENTITY = "identity"
ENCODINGS = ("gzip", "deflate")
_ALIASES = {"x-gzip": "gzip"}
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_ZLIB_WBITS = zlib.MAX_WBITS
_RAW_WBITS = -zlib.MAX_WBITS
INPUT_CHUNK = 64 * 1024
# gzip members one after another are one body (cat a.gz b.gz); a body of thousands of empty ones
# is an attack on the CPU, not a batch of sessions
MAX_MEMBERS = 1000


class UnreadableBody(Exception):
    """A body that cannot be decoded: ``status`` 415 for an encoding not taken, 400 for a corrupt one."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class DecodedTooLarge(Exception):
    """The body inflates past the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body over {limit} bytes once decompressed")
        self.limit = limit


def body_encoding(header: str | None) -> str:
    """The one encoding a ``Content-Encoding`` header names (``identity`` for none), or
    UnreadableBody (415) for one that is not taken, or for several stacked."""
    names = [_ALIASES.get(n, n) for n in (p.strip().lower() for p in (header or "").split(",")) if n]
    names = [n for n in names if n != IDENTITY]
    if not names:
        return IDENTITY
    taken = f"send it as is, or with Content-Encoding {' or '.join(ENCODINGS)}"
    if len(names) > 1:
        raise UnreadableBody(415, f"Content-Encoding {header!r} stacks encodings: {taken}")
    if names[0] not in ENCODINGS:
        raise UnreadableBody(415, f"Content-Encoding {names[0]!r} is not supported: {taken}")
    return names[0]


def decode(body: bytes, encoding: str, limit: int) -> bytes:
    """``body`` decoded from ``encoding``; DecodedTooLarge as soon as it passes ``limit`` bytes,
    UnreadableBody (400) when it is corrupt or cut short."""
    if encoding == IDENTITY or not body:
        return body
    view = memoryview(body)
    pieces: list[bytes] = []
    size = position = members = 0
    while position < len(view):  # one gzip member (or the one deflate stream) at a time
        members += 1
        if members > MAX_MEMBERS:
            raise UnreadableBody(400, f"the {encoding} body has more than {MAX_MEMBERS} members")
        inflater = zlib.decompressobj(_wbits(encoding, view[position : position + 2]))
        try:
            while position < len(view) and not inflater.eof:
                # Bounded slices: what zlib copies (unconsumed_tail, unused_data) stays small.
                chunk = view[position : position + INPUT_CHUNK]
                piece = inflater.decompress(chunk, limit - size + 1)
                size += len(piece)
                if size > limit:
                    raise DecodedTooLarge(limit)
                pieces.append(piece)
                position += len(chunk) - len(inflater.unconsumed_tail) - len(inflater.unused_data)
        except zlib.error as exc:
            raise UnreadableBody(400, f"the {encoding} body is corrupt: {exc}") from None
        if not inflater.eof:
            raise UnreadableBody(400, f"the {encoding} body ends early: it was cut short")
        rest = view[position:]
        if rest and encoding != "gzip":
            raise UnreadableBody(400, f"the {encoding} body goes on after its end ({len(rest)} bytes)")
        if rest and rest[0] == 0 and bytes(rest).count(0) == len(rest):
            break  # zero padding after the last member, which gzip itself ignores
    return b"".join(pieces)


GZIP_LEVEL = 1  # 8 KB sessions shrink ~7x even so; higher levels cost much more CPU for little


def gzipped(body: bytes) -> bytes:
    """``body`` as one gzip member (zlib releases the GIL while it compresses: run it in a thread)."""
    return zlib.compress(body, GZIP_LEVEL, wbits=_GZIP_WBITS)


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an ``Accept-Encoding`` header takes gzip: by name, else by ``*``, with a weight above 0."""
    weights: dict[str, float] = {}
    for item in (accept_encoding or "").split(","):
        coding, *params = (part.strip().lower() for part in item.split(";"))
        weight = next((p.removeprefix("q=") for p in params if p.startswith("q=")), "1")
        try:
            weights[_ALIASES.get(coding, coding)] = float(weight)
        except ValueError:
            continue
    return weights.get("gzip", weights.get("*", 0.0)) > 0


def _wbits(encoding: str, head: memoryview) -> int:
    if encoding == "gzip":
        return _GZIP_WBITS
    return _ZLIB_WBITS if _zlib_header(head) else _RAW_WBITS


def _zlib_header(head: memoryview) -> bool:
    """Whether ``head`` starts as the zlib format does (deflate method, header checksum)."""
    return len(head) >= 2 and head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0
