"""Request bodies: stored bytes joined by newlines; Elasticsearch gets an index action line per session."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessionexport.export.config import SendDirect
from sessionexport.export.formats import action_line, bulk_body, encoded_size
from sessionexport.store.records import LogEntry

# bytes a re-serialisation would change: an escaped \u00d7, raw UTF-8, a space, an escaped slash
FIRST = b'{"userSessionId":"u","name":"a \\u00d7 b","city":"Z\xc3\xbcrich","path":"\\/x"}'
SECOND = b'{"userSessionId":"v", "times":"3\xc3\x974","emoji":"\xf0\x9f\x98\x80"}'


def entry(body: bytes, tenant: str = "t", session: str = "u", start: int = 123, seq: int = 1) -> LogEntry:
    return LogEntry(
        seq=seq,
        received_at=0,
        tenant_id=tenant,
        user_session_id=session,
        start_time=start,
        user_type=None,
        application_type=None,
        country=None,
        applications=(),
        body=body,
    )


ENTRIES = [entry(FIRST), entry(SECOND, tenant="t2", session="v", start=456, seq=2)]
DIRECTS = [None, SendDirect("idx", None), SendDirect("idx", "_doc"), SendDirect("sessions-2024.01", "")]


def test_action_line_ids_a_session_by_tenant_session_and_start_time() -> None:
    line = action_line(entry(b"{}", "umsaywsjuo", "ABCDEF_1234", 1_700_000_000_000), SendDirect("idx", None))
    assert orjson.loads(line) == {"index": {"_index": "idx", "_id": "umsaywsjuo-ABCDEF_1234-1700000000000"}}


def test_ids_that_would_share_an_id_get_two() -> None:
    """``a-b`` + ``c`` and ``a`` + ``b-c``: with Dynatrace's rule as it is, the second document
    would overwrite the first in the index, both counted as delivered."""
    direct = SendDirect("idx", None)
    first, second = (
        orjson.loads(action_line(entry(b"{}", t, u, 1), direct)) for t, u in (("a-b", "c"), ("a", "b-c"))
    )
    assert first["index"]["_id"] != second["index"]["_id"]


def test_plain_body_is_the_stored_bytes_one_per_line_untouched() -> None:
    body = bulk_body(ENTRIES, None)
    assert body == FIRST + b"\n" + SECOND + b"\n"
    assert b"\\u00d7" in body
    assert b"\\/x" in body
    assert "Zürich".encode() in body


def test_plain_body_of_one_session_ends_with_a_newline() -> None:
    assert bulk_body([entry(FIRST)], None) == FIRST + b"\n"


def test_empty_bulk_is_an_empty_body() -> None:
    assert bulk_body([], None) == b""
    assert bulk_body([], SendDirect("idx", None)) == b""


def test_action_line_without_doc_type_has_no_type() -> None:
    assert action_line(entry(b"{}"), SendDirect("idx", None)) == b'{"index":{"_index":"idx","_id":"t-u-123"}}'


def test_action_line_with_doc_type() -> None:
    line = action_line(entry(b"{}"), SendDirect("idx", "_doc"))
    assert line == b'{"index":{"_index":"idx","_type":"_doc","_id":"t-u-123"}}'


def test_action_line_with_empty_doc_type_has_no_type() -> None:
    assert b"_type" not in action_line(entry(b"{}"), SendDirect("idx", ""))


def test_action_line_escapes_the_index_name_as_json() -> None:
    line = action_line(entry(b"{}"), SendDirect('we"ird\\idx', None))
    assert json.loads(line) == {"index": {"_index": 'we"ird\\idx', "_id": "t-u-123"}}


def test_elasticsearch_body_without_doc_type() -> None:
    body = bulk_body(ENTRIES, SendDirect("idx", None))
    assert body == (
        b'{"index":{"_index":"idx","_id":"t-u-123"}}\n'
        + FIRST
        + b"\n"
        + b'{"index":{"_index":"idx","_id":"t2-v-456"}}\n'
        + SECOND
        + b"\n"
    )
    assert b"_type" not in body


def test_elasticsearch_body_with_doc_type() -> None:
    body = bulk_body(ENTRIES, SendDirect("idx", "_doc"))
    assert body == (
        b'{"index":{"_index":"idx","_type":"_doc","_id":"t-u-123"}}\n'
        + FIRST
        + b"\n"
        + b'{"index":{"_index":"idx","_type":"_doc","_id":"t2-v-456"}}\n'
        + SECOND
        + b"\n"
    )


def test_elasticsearch_body_lines_alternate_action_and_session() -> None:
    lines = bulk_body(ENTRIES, SendDirect("idx", None)).split(b"\n")
    assert lines[-1] == b""  # trailing newline
    assert len(lines) == 5
    assert [json.loads(line)["index"]["_id"] for line in lines[0:4:2]] == ["t-u-123", "t2-v-456"]
    assert lines[1:4:2] == [FIRST, SECOND]


@pytest.mark.parametrize("direct", DIRECTS)
def test_encoded_size_is_exactly_what_each_session_adds(direct: SendDirect | None) -> None:
    assert sum(encoded_size(e, direct) for e in ENTRIES) == len(bulk_body(ENTRIES, direct))
    for e in ENTRIES:
        assert encoded_size(e, direct) == len(bulk_body([e], direct))


def test_encoded_size_values() -> None:
    e = entry(b"{}")
    assert encoded_size(e, None) == 3
    assert (
        encoded_size(e, SendDirect("idx", None)) == 3 + len(b'{"index":{"_index":"idx","_id":"t-u-123"}}') + 1
    )


@given(
    bodies=st.lists(st.binary(min_size=1, max_size=50).filter(lambda b: b"\n" not in b), max_size=8),
    sessions=st.text(max_size=12),
    index=st.text(min_size=1, max_size=12),
    doc_type=st.one_of(st.none(), st.just(""), st.text(max_size=8)),
    direct_on=st.booleans(),
)
def test_encoded_size_sums_to_the_body_length(
    bodies: list[bytes], sessions: str, index: str, doc_type: str | None, direct_on: bool
) -> None:
    direct = SendDirect(index, doc_type) if direct_on else None
    entries = [entry(b, session=f"{sessions}{i}", start=i) for i, b in enumerate(bodies)]
    body = bulk_body(entries, direct)
    assert sum(encoded_size(e, direct) for e in entries) == len(body)
    assert body == b"" or body.endswith(b"\n")
