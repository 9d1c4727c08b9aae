"""Compressed request bodies: every encoding taken, decoded within the limit; the rest refused."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib

import pytest

from sessionexport.content_encoding import (
    MAX_MEMBERS,
    DecodedTooLarge,
    UnreadableBody,
    accepts_gzip,
    body_encoding,
    decode,
    gzipped,
)

BODY = b'{"tenantId":"t","userSessionId":"1","startTime":1622107543233}\n' * 200
LIMIT = 1 << 20


def raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "identity"),
        ("", "identity"),
        ("identity", "identity"),
        ("gzip", "gzip"),
        ("GZip", "gzip"),
        ("x-gzip", "gzip"),
        ("deflate", "deflate"),
        ("identity, gzip", "gzip"),
    ],
)
def test_the_encodings_taken(header: str | None, expected: str) -> None:
    assert body_encoding(header) == expected


@pytest.mark.parametrize(
    ("header", "said"),
    [
        (
            "br",
            "Content-Encoding 'br' is not supported: send it as is, or with Content-Encoding gzip or deflate",
        ),
        ("zstd", "Content-Encoding 'zstd' is not supported"),
        ("gzip, deflate", "Content-Encoding 'gzip, deflate' stacks encodings"),
    ],
)
def test_other_encodings_are_refused_with_415_saying_what_is_taken(header: str, said: str) -> None:
    with pytest.raises(UnreadableBody) as refused:
        body_encoding(header)
    assert refused.value.status == 415
    assert said in refused.value.message


@pytest.mark.parametrize(
    ("encoding", "encoded"),
    [
        ("identity", BODY),
        ("gzip", gzip.compress(BODY)),
        ("deflate", zlib.compress(BODY)),  # the zlib format, as RFC 9110 says
        ("deflate", raw_deflate(BODY)),  # raw deflate, as some clients send it
    ],
)
def test_a_body_decodes_to_what_was_sent(encoding: str, encoded: bytes) -> None:
    assert decode(encoded, encoding, LIMIT) == BODY


def test_gzip_members_one_after_another_are_one_body() -> None:
    first, second = BODY[:1000], BODY[1000:]
    assert decode(gzip.compress(first) + gzip.compress(second), "gzip", LIMIT) == BODY


def test_zero_padding_after_the_last_member_is_ignored_as_gzip_does() -> None:
    assert decode(gzip.compress(BODY) + b"\0" * 1000, "gzip", LIMIT) == BODY


def test_many_members_cost_time_in_proportion_and_are_capped() -> None:
    """Each member used to copy the rest of the body: quadratic in their number."""
    members = gzip.compress(b"x\n") * MAX_MEMBERS
    assert decode(members, "gzip", LIMIT) == b"x\n" * MAX_MEMBERS
    with pytest.raises(UnreadableBody) as refused:
        decode(members + gzip.compress(b""), "gzip", LIMIT)
    assert refused.value.message == f"the gzip body has more than {MAX_MEMBERS} members"


def test_a_large_body_decodes_in_bounded_slices() -> None:
    big = BODY * 200  # over 2 MB, many input slices
    assert decode(gzip.compress(big), "gzip", len(big)) == big
    assert decode(raw_deflate(big), "deflate", len(big)) == big


def test_an_empty_compressed_body_is_an_empty_body() -> None:
    assert decode(b"", "gzip", LIMIT) == b""


def test_a_body_exactly_at_the_limit_is_taken() -> None:
    assert decode(gzip.compress(BODY), "gzip", len(BODY)) == BODY


def test_a_body_that_inflates_past_the_limit_is_refused_as_soon_as_it_does() -> None:
    bomb = gzip.compress(b"\0" * (64 << 20))  # 64 MiB of zeros in about 64 KB
    assert len(bomb) < LIMIT
    tracemalloc.start()
    try:
        with pytest.raises(DecodedTooLarge) as refused:
            decode(bomb, "gzip", LIMIT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.limit == LIMIT
    assert peak < 3 * LIMIT  # never inflated whole (64 MiB)
    with pytest.raises(DecodedTooLarge):
        decode(gzip.compress(BODY), "gzip", len(BODY) - 1)


@pytest.mark.parametrize(
    ("encoding", "encoded", "said"),
    [
        (
            "gzip",
            b"not gzip at all",
            "the gzip body is corrupt: Error -3 while decompressing data: incorrect header check",
        ),
        ("gzip", gzip.compress(BODY)[:-20], "the gzip body ends early: it was cut short"),
        ("gzip", gzip.compress(BODY) + b"trailing", "the gzip body is corrupt"),
        ("deflate", zlib.compress(BODY)[:-10], "the deflate body ends early"),
        ("deflate", zlib.compress(BODY) + b"more", "the deflate body goes on after its end (4 bytes)"),
    ],
)
def test_a_corrupt_or_cut_body_is_refused_with_400_saying_how(
    encoding: str, encoded: bytes, said: str
) -> None:
    with pytest.raises(UnreadableBody) as refused:
        decode(encoded, encoding, LIMIT)
    assert refused.value.status == 400
    assert refused.value.message.startswith(said)


@pytest.mark.parametrize(
    ("header", "takes"),
    [
        ("gzip, deflate, br", True),  # browsers, httpx
        ("GZIP", True),
        ("x-gzip", True),
        ("*", True),
        ("deflate;q=1.0, gzip;q=0.5", True),
        ("gzip;q=0", False),
        ("gzip;q=0.0, *", False),  # named refusal beats the wildcard
        ("*;q=0", False),
        ("identity", False),
        ("", False),
        (None, False),
        ("gzip;q=oops", False),
    ],
)
def test_what_accept_encoding_takes(header: str | None, takes: bool) -> None:
    assert accepts_gzip(header) is takes


def test_gzipped_is_one_gzip_member() -> None:
    assert gzip.decompress(gzipped(BODY)) == BODY
    assert len(gzipped(BODY)) < len(BODY) / 5
