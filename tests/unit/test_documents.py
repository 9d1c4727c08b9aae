"""Request bodies (NDJSON or a JSON array) to session-log records, with every problem located."""

from __future__ import annotations

import msgspec
import pytest

from sessionexport.ingest.documents import (
    DocumentProblem,
    RejectedBody,
    UnsupportedMediaType,
    ndjson_lines,
    parse_body,
    parse_json_array,
    parse_ndjson,
    to_record,
)
from sessionexport.model.samples import doc_sample
from sessionexport.model.validation import decode_session
from sessionexport.store.records import NewSession

MOBILE = doc_sample("doc-mobile-session.json")
WEB = doc_sample("doc-web-synthetic-session.json")
BAD_USER_TYPE = MOBILE.replace(b'"userType":"REAL_USER"', b'"userType":"HUMAN"')
NO_TENANT = WEB.replace(b'"tenantId":"umsaywsjuo",', b"")


def rejected(call: object, *args: object) -> list[DocumentProblem]:
    with pytest.raises(RejectedBody) as info:
        call(*args)  # type: ignore[operator]
    assert str(info.value).startswith(f"{len(info.value.problems)} problem(s), first: ")
    return info.value.problems


def test_fixtures_were_edited_as_intended() -> None:
    assert BAD_USER_TYPE != MOBILE
    assert NO_TENANT != WEB


# --- NDJSON ----------------------------------------------------------------------------------


def test_ndjson_two_sessions() -> None:
    records = parse_ndjson(MOBILE + b"\n" + WEB)
    assert [r.user_session_id for r in records] == ["1394_1008", "744377345"]
    assert [r.body for r in records] == [MOBILE, WEB]


def test_ndjson_blank_lines_crlf_and_trailing_newline() -> None:
    body = b"\r\n\n" + MOBILE + b"\r\n   \r\n\t\n" + WEB + b"\r\n\n"
    records = parse_ndjson(body)
    assert [r.user_session_id for r in records] == ["1394_1008", "744377345"]
    assert [r.body for r in records] == [MOBILE, WEB]


def test_ndjson_lines_numbers_physical_lines() -> None:
    body = b"\n" + b"a\r\n" + b"\r\n" + b"  \n" + b" b \n"
    assert list(ndjson_lines(body)) == [(2, b"a"), (5, b"b")]
    assert list(ndjson_lines(b"")) == []


def test_a_leading_byte_order_mark_is_no_part_of_the_first_session() -> None:
    """Windows tools (Notepad, PowerShell 5) start UTF-8 files with one."""
    assert [r.body for r in parse_ndjson(b"\xef\xbb\xbf" + MOBILE + b"\n" + WEB)] == [MOBILE, WEB]
    assert [r.body for r in parse_json_array(b"\xef\xbb\xbf[" + MOBILE + b"]")] == [MOBILE]
    with pytest.raises(RejectedBody):  # anywhere else it is what it is: not JSON
        parse_ndjson(MOBILE + b"\n\xef\xbb\xbf" + WEB)


def test_ndjson_problems_carry_the_physical_line_number() -> None:
    # line 1 blank, 2 valid, 3 blank, 4 bad user type, 5 blank (CRLF), 6 missing tenant
    body = b"\n" + MOBILE + b"\n\n" + BAD_USER_TYPE + b"\r\n\r\n" + NO_TENANT + b"\n"
    problems = rejected(parse_ndjson, body)
    assert [(p.location, p.path) for p in problems] == [("line 4", "userType"), ("line 6", "tenantId")]
    assert problems[1].message == "required field is missing"
    assert str(problems[0]).startswith("line 4, userType: invalid value 'HUMAN'")


def test_ndjson_every_problem_of_every_line() -> None:
    two_problems = BAD_USER_TYPE.replace(b'"bounce":false', b'"bounce":0')
    problems = rejected(parse_ndjson, two_problems + b"\n" + b"{broken\n" + NO_TENANT)
    assert [(p.location, p.path) for p in problems] == [
        ("line 1", "userType"),
        ("line 1", "bounce"),
        ("line 2", ""),
        ("line 3", "tenantId"),
    ]
    assert str(problems[2]).startswith("line 2: ")


def test_ndjson_one_bad_line_refuses_the_whole_body() -> None:
    problems = rejected(parse_ndjson, MOBILE + b"\n" + WEB + b"\n" + b"[]")
    assert problems == [DocumentProblem("line 3", "", "expected object, got array")]


@pytest.mark.parametrize("body", [b"", b"\n", b"\r\n\r\n  \n"])
def test_ndjson_without_sessions_is_refused(body: bytes) -> None:
    [problem] = rejected(parse_ndjson, body)
    assert problem.location == "body"
    assert problem.path == ""
    assert "no sessions" in problem.message
    assert str(problem) == f"body: {problem.message}"


def test_ndjson_pretty_printed_document_is_not_one_line() -> None:
    pretty = msgspec.json.format(MOBILE, indent=2)
    problems = rejected(parse_ndjson, pretty)
    assert problems[0].location == "line 1"
    assert len({p.location for p in problems}) > 1


# --- JSON array ------------------------------------------------------------------------------


def test_json_array_two_sessions() -> None:
    records = parse_json_array(b"[" + MOBILE + b"," + WEB + b"]")
    assert [r.user_session_id for r in records] == ["1394_1008", "744377345"]
    assert [r.body for r in records] == [MOBILE, WEB]


def test_json_array_pretty_printed_is_stored_compact() -> None:
    body = msgspec.json.format(b"[" + WEB + b"," + MOBILE + b"]", indent=2)
    records = parse_json_array(body)
    assert [r.body for r in records] == [WEB, MOBILE]


def test_json_array_problems_carry_the_index() -> None:
    body = b"[" + MOBILE + b",\n" + BAD_USER_TYPE + b"," + WEB + b"," + NO_TENANT + b", 7]"
    problems = rejected(parse_json_array, body)
    assert [(p.location, p.path) for p in problems] == [
        ("index 1", "userType"),
        ("index 3", "tenantId"),
        ("index 4", ""),
    ]
    assert problems[2].message == "expected object, got integer"
    assert str(problems[0]).startswith("index 1, userType: ")


@pytest.mark.parametrize("body", [MOBILE, b'"sessions"', b"1", b"null", b'{"sessions": []}'])
def test_json_body_that_is_not_an_array_is_a_body_problem(body: bytes) -> None:
    assert rejected(parse_json_array, body) == [
        DocumentProblem("body", "", "expected a JSON array of sessions")
    ]


@pytest.mark.parametrize("body", [b"[", b"", b"[" + MOBILE, b"[1,]"])
def test_json_array_broken_json_is_a_body_problem(body: bytes) -> None:
    [problem] = rejected(parse_json_array, body)
    assert (problem.location, problem.path) == ("body", "")
    assert problem.message.startswith("invalid JSON: ")


def test_empty_json_array_is_refused() -> None:
    [problem] = rejected(parse_json_array, b"[]")
    assert problem.location == "body"
    assert "no sessions" in problem.message


# --- content type dispatch -------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["application/x-ndjson", "application/x-ndjson; charset=utf-8", "Application/X-NDJSON ;charset=UTF-8"],
)
def test_parse_body_ndjson(content_type: str) -> None:
    records = parse_body(MOBILE + b"\n" + WEB + b"\n", content_type)
    assert [r.user_session_id for r in records] == ["1394_1008", "744377345"]


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", " APPLICATION/JSON;charset=utf-8"]
)
def test_parse_body_json(content_type: str) -> None:
    records = parse_body(b"[" + MOBILE + b"," + WEB + b"]", content_type)
    assert [r.user_session_id for r in records] == ["1394_1008", "744377345"]


def test_parse_body_really_dispatches() -> None:
    # an NDJSON body sent as JSON is not an array; an array sent as NDJSON is not an object
    assert rejected(parse_body, MOBILE + b"\n" + WEB, "application/json")[0].location == "body"
    assert rejected(parse_body, b"[" + MOBILE + b"]", "application/x-ndjson")[0].location == "line 1"


@pytest.mark.parametrize("content_type", ["text/plain", "text/plain; charset=utf-8", "application/xml"])
def test_parse_body_unsupported_media_type(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType) as info:
        parse_body(MOBILE, content_type)
    message = str(info.value)
    assert repr(content_type.split(";")[0]) in message
    assert "application/x-ndjson" in message and "application/json" in message


def test_parse_body_without_content_type() -> None:
    with pytest.raises(UnsupportedMediaType, match="none"):
        parse_body(MOBILE, "")


# --- records ---------------------------------------------------------------------------------


def test_record_of_the_mobile_sample() -> None:
    [record] = parse_ndjson(MOBILE)
    assert record == NewSession(
        tenant_id="umsaywsjuo",
        user_session_id="1394_1008",
        start_time=1511441593539,
        end_time=1511441716896,
        user_id="fearghasbag",
        user_type="REAL_USER",
        application_type="MOBILE_APPLICATION",
        country="United States",  # from the legacy geolocationCountryName
        applications=("easyTravel Demo",),  # events' applications do not count
        body=MOBILE,
    )
    assert type(record.user_type) is str


def test_record_of_the_web_sample() -> None:
    [record] = parse_json_array(b"[" + WEB + b"]")
    assert record == NewSession(
        tenant_id="umsaywsjuo",
        user_session_id="744377345",
        start_time=1622107543233,
        end_time=1622107578205,
        user_id=None,
        user_type="SYNTHETIC",
        application_type="WEB_APPLICATION",
        country="Poland",
        applications=(
            "APPLICATION-A8894472DACEDA0E",
            "mySampleEnv.dynatrace.com - browser monitor - analysis - 1620645163422",
        ),
        body=WEB,
    )
    assert b"\\u00d7" in record.body


def test_record_country_prefers_country_over_the_legacy_name() -> None:
    raw = MOBILE.replace(b'"ip":', b'"country":"Canada","ip":')
    assert to_record(decode_session(raw), raw).country == "Canada"


def test_record_without_optional_fields() -> None:
    raw = b'{ "tenantId": "t", "userSessionId": "s", "startTime": 1700000000000 }'
    record = to_record(decode_session(raw), raw)
    assert record == NewSession("t", "s", 1700000000000, None, None, None, None, None, (), body=raw)


def test_record_applications_are_sorted_unique_names_and_ids() -> None:
    doc = {
        "tenantId": "t",
        "userSessionId": "s",
        "startTime": 1_700_000_000_000,
        "userActions": [
            {"application": "Shop", "internalApplicationId": "APPLICATION-2"},
            {"application": "Portal", "internalApplicationId": "APPLICATION-1"},
            {"application": "Shop", "internalApplicationId": "APPLICATION-2"},
            {"application": "", "internalApplicationId": None},
            {},
        ],
        "events": [{"application": "Other"}],
        "errors": [{"internalApplicationId": "APPLICATION-9"}],
    }
    raw = msgspec.json.encode(doc)
    assert to_record(decode_session(raw), raw).applications == (
        "APPLICATION-1",
        "APPLICATION-2",
        "Portal",
        "Shop",
    )


def test_single_line_body_is_stored_exactly_as_sent() -> None:
    line = msgspec.json.format(WEB, indent=3).replace(b"\n", b" ").strip()
    [record] = parse_ndjson(line)
    assert record.body == line


def test_multi_line_body_is_compacted_with_escapes_untouched() -> None:
    [record] = parse_json_array(b"[" + msgspec.json.format(WEB, indent=3) + b"]")
    assert record.body == WEB
