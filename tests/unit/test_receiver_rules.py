"""The receiver's rules without I/O: body parsing, the legacy decision, _bulk parsing, faults, tokens."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey
from tests.conftest import sample

from sessionexport.ingest.documents import RejectedBody
from sessionexport.model.elasticsearch_names import DATE_SHAPE
from sessionexport.model.validation import compact
from sessionexport.receiver import bulk as es
from sessionexport.receiver.auth import (
    KEYS_RETRY_SECONDS,
    Authenticator,
    InvalidToken,
    JwksVerifier,
    KeysUnavailable,
    OAuthError,
    TokenIssuer,
    Unauthorized,
    basic_credentials,
    parse_pair,
    token_form,
)
from sessionexport.receiver.documents import parse_events_body
from sessionexport.receiver.store.records import LEGACY, SESSION

DOC_CHECK = (
    b'{"visitorId":"14804637803609BCTKP776NMJBOIF3R8OD6R0E4NQALJO","visitId":"16229530",'
    b'"startTime":1480463779085,"endTime":1480463784889,"visitType":"SYNTHETIC"}'
)


def test_sessions_keyed_by_the_elasticsearch_id_rule_and_kept_compact() -> None:
    mobile = sample("doc-mobile-session.json")
    docs = parse_events_body(b"\n" + compact(mobile) + b"\r\n\n")
    assert len(docs) == 1
    session = orjson.loads(mobile)
    assert docs[0].kind == SESSION
    assert docs[0].key == f"{session['tenantId']}-{session['userSessionId']}-{session['startTime']}"
    assert docs[0].body == compact(mobile)
    assert docs[0].user_session_id == session["userSessionId"]


def test_identities_that_the_id_rule_would_join_keep_two_keys() -> None:
    """``a-b`` + ``c`` and ``a`` + ``b-c``: one ``_id`` by Dynatrace's rule, two sessions by
    identity; the keys are the ``_id`` an export gives them."""
    lines = [
        orjson.dumps({"tenantId": tenant, "userSessionId": user, "startTime": 1_700_000_000_000})
        for tenant, user in (("a-b", "c"), ("a", "b-c"), ("a%2Db", "c"))
    ]
    keys = [doc.key for doc in parse_events_body(b"\n".join(lines))]
    assert len(set(keys)) == 3
    assert keys[1] == "a-b-c-1700000000000"  # a tenant id without "-" or "%" keeps the rule


def test_the_documented_check_document_is_kept_as_legacy() -> None:
    [doc] = parse_events_body(DOC_CHECK)
    assert doc.kind == LEGACY
    assert doc.key == "legacy-14804637803609BCTKP776NMJBOIF3R8OD6R0E4NQALJO-16229530-1480463779085"
    assert doc.body == DOC_CHECK


def test_legacy_documents_whose_ids_hold_dashes_stay_apart() -> None:
    lines = [
        orjson.dumps({"visitorId": visitor, "visitId": visit, "startTime": 1})
        for visitor, visit in (("a-b", "c"), ("a", "b-c"), ("a%2Db", "c"))
    ]
    assert len({doc.key for doc in parse_events_body(b"\n".join(lines))}) == 3


def test_every_problem_of_every_line_is_reported_and_nothing_accepted() -> None:
    good = compact(sample("doc-mobile-session.json"))
    body = b"\n".join(
        [
            good,
            b"{not json",
            b'{"tenantId":5,"userSessionId":"x","startTime":1700000000000}',
            b'{"tenantId":"\xff","userSessionId":"x","startTime":1700000000000}',
            b'{"x":' + b"[" * 1100 + b"]" * 1100 + b"}",
        ]
    )
    with pytest.raises(RejectedBody) as raised:
        parse_events_body(body)
    places = {(p.location, p.path) for p in raised.value.problems}
    assert ("line 2", "") in places
    assert ("line 3", "tenantId") in places
    assert all(p.location != "line 1" for p in raised.value.problems)
    said = {p.location: p.message for p in raised.value.problems}
    assert said["line 4"].startswith("not UTF-8: byte 0xff")
    assert "depth limit exceeded" in said["line 5"]


def test_json_array_bodies_and_empty_bodies() -> None:
    good = compact(sample("doc-mobile-session.json"))
    assert len(parse_events_body(b"[" + good + b"," + DOC_CHECK + b"]")) == 2
    with pytest.raises(RejectedBody, match="no sessions"):
        parse_events_body(b"\n \n")


# -- _bulk ------------------------------------------------------------------------------------------


def bulk_body(*pairs: tuple[dict[str, object], dict[str, object] | bytes]) -> bytes:
    lines = []
    for action, doc in pairs:
        lines += [orjson.dumps(action), doc if isinstance(doc, bytes) else orjson.dumps(doc)]
    return b"\n".join(lines) + b"\n"


def test_bulk_pairs_with_index_from_the_line_or_the_path() -> None:
    body = bulk_body(({"index": {"_index": "a", "_id": "1"}}, {"x": 1}), ({"create": {"_id": "2"}}, {"y": 2}))
    ops = es.parse_bulk(body, "from-path", 8)
    assert [(o.action, o.index, o.doc_id, o.problem) for o in ops] == [
        ("index", "a", "1", None),
        ("create", "from-path", "2", None),
    ]
    assert ops[1].source == b'{"y":2}'


@pytest.mark.parametrize(
    ("body", "error_type"),
    [
        (b'{"index":{"_index":"a"}}\n{"x":1}', "illegal_argument_exception"),  # no final newline
        (b"{broken\n{}\n", "x_content_parse_exception"),
        (b'{"upsert":{"_index":"a"}}\n{}\n', "illegal_argument_exception"),
        (b'{"index":{"_id":"1"}}\n{}\n', "action_request_validation_exception"),  # no index anywhere
        (b"", "action_request_validation_exception"),
        (b'{"index":{"_index":"a\xff"}}\n{}\n', "x_content_parse_exception"),  # not UTF-8
        # nested past the parser's limit: in the metadata, or as the action's value
        (
            b'{"index":{"_index":"a","x":' + b"[" * 2000 + b"]" * 2000 + b"}}\n{}\n",
            "x_content_parse_exception",
        ),
        (b'{"index":' + b"[" * 2000 + b"]" * 2000 + b"}\n{}\n", "x_content_parse_exception"),
    ],
)
def test_whole_request_errors(body: bytes, error_type: str) -> None:
    with pytest.raises(es.BulkRequestError) as raised:
        es.parse_bulk(body, None, 8)
    assert raised.value.as_json()["error"]["type"] == error_type
    assert raised.value.as_json()["status"] == 400


def test_type_is_refused_by_elasticsearch_8_and_kept_by_7() -> None:
    body = bulk_body(({"index": {"_index": "a", "_type": "_doc", "_id": "1"}}, {"x": 1}))
    with pytest.raises(es.BulkRequestError, match=r"unknown parameter \[_type\]"):
        es.parse_bulk(body, None, 8)
    [op] = es.parse_bulk(body, None, 7)
    assert es.item_result(op, True, 1, 7)["index"]["_type"] == "_doc"
    assert "_type" not in es.item_result(op, True, 1, 8)["index"]
    busy = es.ItemFailure(429, "es_rejected_execution_exception", "busy")
    assert es.failed_item(op, busy, 7)["index"]["_type"] == "_doc"  # a failed item names it too
    assert "_type" not in es.failed_item(op, busy, 8)["index"]


def test_a_type_that_is_not_text_is_refused_naming_its_action_line() -> None:
    body = bulk_body(
        ({"index": {"_index": "a", "_id": "1"}}, {"x": 1}), ({"index": {"_type": True}}, {"x": 2})
    )
    with pytest.raises(es.BulkRequestError, match=r"^\[3:1\] \[index\] _type doesn't support"):
        es.parse_bulk(body, "a", 7)


def test_a_broken_document_fails_only_its_item() -> None:
    body = bulk_body(
        ({"index": {"_index": "a", "_id": "1"}}, b"[1,2]"),
        ({"index": {"_index": "a"}}, b"{oops"),
        ({"index": {"_index": "a"}}, b'{"a":"\xff"}'),
        ({"index": {"_index": "a"}}, b"[" * 1100 + b"]" * 1100),
    )
    ops = es.parse_bulk(body, None, 8)
    assert ops[0].problem is not None and "not a JSON object" in ops[0].problem.reason
    assert ops[1].problem is not None and ops[1].doc_id  # an id is generated, as ES does
    assert ops[2].problem is not None and "not UTF-8" in ops[2].problem.reason
    assert ops[3].problem is not None and "depth limit exceeded" in ops[3].problem.reason


@pytest.mark.parametrize(
    ("meta", "reason"),
    [
        ({"_index": ["s"]}, "[index] _index doesn't support values of type: START_ARRAY"),
        ({"_index": "s", "_id": {"x": 1}}, "[index] _id doesn't support values of type: START_OBJECT"),
        ({"_index": "s", "_id": True}, "[index] _id doesn't support values of type: VALUE_BOOLEAN"),
    ],
)
def test_names_in_action_lines_must_be_text(meta: dict[str, object], reason: str) -> None:
    with pytest.raises(es.BulkRequestError) as refused:
        es.parse_bulk(bulk_body(({"index": meta}, {"x": 1})), None, 8)
    assert refused.value.error_type == "x_content_parse_exception" and reason in refused.value.reason


def test_a_numeric_id_is_read_as_text_and_nul_fails_its_item() -> None:
    ops = es.parse_bulk(
        bulk_body(
            ({"index": {"_index": "s", "_id": 5}}, {"x": 1}),
            ({"index": {"_index": "s", "_id": "a\x00b"}}, {"x": 2}),
        ),
        None,
        8,
    )
    assert (ops[0].doc_id, ops[0].problem) == ("5", None)
    assert ops[1].problem is not None and "NUL" in ops[1].problem.reason


def test_numeric_ids_keep_the_digits_they_were_written_with() -> None:
    """Read as floats, these two would be one id, and the second would overwrite the first."""
    body = (
        b'{"index":{"_index":"s","_id":12345678901234567890123}}\n{"x":1}\n'
        b'{"index":{"_index":"s","_id":12345678901234567890124}}\n{"x":2}\n'
        b'{"index":{"_index":"s","_id":1e2}}\n{"x":3}\n'
    )
    assert [op.doc_id for op in es.parse_bulk(body, None, 8)] == [
        "12345678901234567890123",
        "12345678901234567890124",
        "1e2",
    ]


def test_op_type_create_makes_an_index_action_a_create() -> None:
    body = bulk_body(({"index": {"_index": "s", "_id": "1", "op_type": "create"}}, {"x": 1}))
    assert [op.action for op in es.parse_bulk(body, None, 8)] == ["create"]
    with pytest.raises(es.BulkRequestError, match=r"opType must be 'create' or 'index', found: \[upsert\]"):
        es.parse_bulk(bulk_body(({"index": {"_index": "s", "op_type": "upsert"}}, {"x": 1})), None, 8)


def test_elasticsearch_7_takes_the_type_from_the_path_when_the_line_names_none() -> None:
    body = bulk_body(({"index": {"_id": "1"}}, {"x": 1}), ({"index": {"_id": "2", "_type": "t"}}, {"x": 2}))
    assert [op.doc_type for op in es.parse_bulk(body, "s", 7, path_type="_doc")] == ["_doc", "t"]


@pytest.mark.parametrize(
    ("index", "reason"),
    [
        ("a/b", "must not contain '/'"),
        ("Sessions", "must be lower case"),
        ("_sessions", "must not start with -, _ or +"),
        ("..", "must not be . or .."),
        ("a#b", "must not contain '#'"),
        ("a:b", "must not contain ':'"),
        ("a b", "must not contain ' '"),
        ("x" * 256, "must be at most 255 bytes"),
        ("<Sessions-{now/d}>", "must be lower case"),  # date math: the text around its dates
        ("<>", "must not be empty"),
        ("<_s-{now/d}>", "must not start with -, _ or +"),
        ("<s#{now/d}>", "must not contain '#'"),
        # a date never closed, or empty: else "<{a>" + "b}>/X" and "<{a>/b}>" + "X" were one key;
        # or one whose format would put / : or upper case into the name, or that is no date at all
        *(
            (name, f"must write each date as {DATE_SHAPE}")
            for name in (
                "<{a>",
                "<{a>/b}>",
                "<s-{}>",
                "<s-{now/d}}>",
                "<s-{now/d{yyyy}>",
                "<s-{now/d,x}>",
                "<s-{foo}>",
                "<s-{now/d{}}>",
                "<s-{now/d{yyyy/MM/dd}}>",
                "<s-{now/d{yyyy:MM}}>",
                "<s-{now/d{MMM}}>",
                "<s-{now/d{yyyy.MM.dd'T'HH}}>",
            )
        ),
    ],
)
def test_an_invalid_index_name_fails_its_item_as_elasticsearch_says(index: str, reason: str) -> None:
    """Elasticsearch's rules for index names (those an export's settings are checked by):
    otherwise ``a/b`` + ``c`` and ``a`` + ``b/c`` would be one document."""
    good, bad = es.parse_bulk(
        bulk_body(
            ({"index": {"_index": "ok", "_id": "1"}}, {"x": 1}), ({"index": {"_index": index}}, {"x": 2})
        ),
        None,
        8,
    )
    assert good.problem is None
    assert bad.problem is not None
    assert (bad.problem.status, bad.problem.error_type) == (400, "invalid_index_name_exception")
    assert bad.problem.reason == f"Invalid index name [{index}], {reason}"


@pytest.mark.parametrize(
    "index",
    [
        "<sessions-{now/d}>",
        "<s-{now/M{yyyy.MM}}>",
        "<s-{now/d{yyyy.MM.dd|+01:00}}-x>",
        "<s-{now/d{yyyy.MM.dd|Europe/Paris}}>",
        "<s-{2024.01.01||+1M/d}>",
        "<s-{now-1d/d{yyyy_MM_dd-HH}}>",
    ],
)
def test_a_date_math_index_name_is_judged_by_the_text_around_its_dates(index: str) -> None:
    [op] = es.parse_bulk(bulk_body(({"index": {"_index": index}}, {"x": 1})), None, 8)
    assert op.problem is None


def test_an_empty_id_fails_its_item_and_a_too_long_one_the_request() -> None:
    [empty] = es.parse_bulk(bulk_body(({"index": {"_index": "s", "_id": ""}}, {"x": 1})), None, 8)
    assert empty.problem == es.ItemFailure(
        400, "illegal_argument_exception", "if _id is specified it must not be empty"
    )
    widest = "\u00e9" * 256  # 512 bytes in UTF-8: allowed
    [kept] = es.parse_bulk(bulk_body(({"index": {"_index": "s", "_id": widest}}, {"x": 1})), None, 8)
    assert (kept.doc_id, kept.problem) == (widest, None)
    with pytest.raises(es.BulkRequestError) as refused:
        es.parse_bulk(bulk_body(({"index": {"_index": "s", "_id": widest + "x"}}, {"x": 1})), None, 8)
    assert refused.value.error_type == "action_request_validation_exception"
    assert refused.value.reason.endswith("must be no longer than 512 bytes but was: 513;")


def test_an_unknown_parameter_in_an_action_line_refuses_the_request() -> None:
    known = {"_index": "s", "_id": "1", "routing": "r", "pipeline": "p", "require_alias": False}
    assert es.parse_bulk(bulk_body(({"create": known}, {"x": 1})), None, 8)[0].problem is None
    with pytest.raises(
        es.BulkRequestError, match=r"Action/metadata line \[1\] contains an unknown parameter \[foo\]"
    ):
        es.parse_bulk(bulk_body(({"index": {"_index": "s", "foo": 1}}, {"x": 1})), None, 7)


def test_a_carriage_return_before_a_newline_is_not_part_of_the_document() -> None:
    body = b'{"index":{"_index":"s","_id":"1"}}\r\n{"a":1}\r\n{"index":{"_index":"s","_id":"2"}}\r\n{"a":\r2}\r\n'
    first, second = es.parse_bulk(body, None, 8)
    assert (first.source, first.problem) == (b'{"a":1}', None)
    assert (second.source, second.problem) == (b'{"a":\r2}', None)  # inside, it is JSON whitespace


def test_a_legacy_document_with_nul_in_its_identity_is_refused() -> None:
    with pytest.raises(RejectedBody):
        parse_events_body(DOC_CHECK.replace(b'"visitId":"', b'"visitId":"\\u0000', 1))


@pytest.mark.parametrize("kind", ["session", "legacy"])
def test_a_document_whose_unread_fields_are_not_utf8_is_refused_at_its_line(kind: str) -> None:
    """Kept as sent, it would break every reader of what was received."""
    good = compact(sample("doc-mobile-session.json")) if kind == "session" else DOC_CHECK
    broken = good[:-1] + b',"zzz":"a\xffb"}'
    with pytest.raises(RejectedBody) as refused:
        parse_events_body(good + b"\n" + broken)
    [problem] = refused.value.problems
    assert problem.location == "line 2" and problem.message.startswith("not UTF-8: byte 0xff at offset")


def test_fault_plan_fails_matching_ids_the_given_number_of_times() -> None:
    plan = es.FaultPlan.parse(["429:-7$:1", "400:bad"])
    op = es.Operation("index", "i", "t-7", None, b"{}")
    first = plan.failure(op)
    assert first is not None and first.status == 429 and first.error_type == "es_rejected_execution_exception"
    assert plan.failure(op) is None  # the retry gets through
    bad = plan.failure(es.Operation("index", "i", "so-bad", None, b"{}"))
    assert (
        bad is not None
        and bad.status == 400
        and plan.failure(es.Operation("index", "i", "so-bad", None, b"{}"))
    )
    assert plan.failure(es.Operation("index", "i", "fine", None, b"{}")) is None
    with pytest.raises(ValueError, match="4xx or 5xx"):
        es.FaultPlan.parse(["200:x"])


def test_bulk_response_reports_errors_when_any_item_failed() -> None:
    op = es.Operation("index", "i", "1", None, b"{}")
    ok = es.item_result(op, True, 1, 8)
    failed = es.failed_item(op, es.ItemFailure(429, "es_rejected_execution_exception", "busy"), 8)
    assert es.bulk_response([ok], 3) == {"took": 3, "errors": False, "items": [ok]}
    assert es.bulk_response([ok, failed], 3)["errors"] is True
    assert failed["index"]["status"] == 429 and failed["index"]["error"]["reason"] == "busy"


# -- auth --------------------------------------------------------------------------------------------


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_pairs_and_basic_headers() -> None:
    assert parse_pair("me:se:cret", "--basic") == ("me", "se:cret")
    with pytest.raises(ValueError, match="NAME:SECRET"):
        parse_pair("nocolon", "--basic")
    assert basic_credentials(basic("a", "b:c")) == ("a", "b:c")
    assert basic_credentials("Basic !!!") is None
    assert basic_credentials("Bearer abc") is None
    assert (
        basic_credentials("Basic \u00e9\u00e9\u00e9\u00e9") is None
    )  # not ASCII: no credentials, not a crash
    assert basic_credentials("Basic " + base64.b64encode(b"\xff:\xfe").decode()) is None  # not UTF-8


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_token_endpoint_by_form_or_basic_header_and_expiry() -> None:
    clock = Clock()
    issuer = TokenIssuer({"exporter": "s3cret"}, b"k" * 32, ttl_seconds=60, clock=clock)
    by_form = issuer.issue(
        {"grant_type": "client_credentials", "client_id": "exporter", "client_secret": "s3cret"}, None
    )
    assert by_form["token_type"] == "Bearer" and by_form["expires_in"] == 60
    assert by_form["scope"] == "session-export-api"
    by_header = issuer.issue({"grant_type": "client_credentials", "scope": "x"}, basic("exporter", "s3cret"))
    assert by_header["scope"] == "x"
    assert issuer.verify(str(by_form["access_token"])) == "exporter"
    clock.now += 61
    with pytest.raises(Unauthorized, match="expired"):
        issuer.verify(str(by_form["access_token"]))
    with pytest.raises(Unauthorized):
        TokenIssuer({"exporter": "s3cret"}, b"o" * 32, clock=clock).verify(str(by_header["access_token"]))


def test_a_token_dies_with_its_client_or_the_secret_it_was_issued_for() -> None:
    key = b"k" * 32
    grant = {"grant_type": "client_credentials", "client_id": "exporter", "client_secret": "s3cret"}
    token = str(TokenIssuer({"exporter": "s3cret"}, key).issue(grant, None)["access_token"])
    assert TokenIssuer({"exporter": "s3cret", "other": "x"}, key).verify(token) == "exporter"
    for clients in ({"other": "x"}, {"exporter": "rotated"}):  # as the receiver restarted without it
        with pytest.raises(InvalidToken, match="gone or whose secret has changed"):
            TokenIssuer(clients, key).verify(token)


def test_basic_client_credentials_are_taken_form_urlencoded_or_as_they_are() -> None:
    """RFC 6749 §2.3.1 has the client id and secret form-urlencoded in the Basic header; many
    clients send them as they are."""
    issuer = TokenIssuer({"my client": "pl+us%20 s3cret"}, b"k" * 32)
    grant = {"grant_type": "client_credentials"}
    for user, password in (("my client", "pl+us%20 s3cret"), ("my+client", "pl%2Bus%2520+s3cret")):
        token = issuer.issue(grant, basic(user, password))["access_token"]
        assert issuer.verify(str(token)) == "my client"
    with pytest.raises(OAuthError):
        issuer.issue(grant, basic("my+client", "pl+us%20+s3cret"))  # neither as sent nor decoded
    with pytest.raises(OAuthError):  # form fields are decoded once already, by the form
        issuer.issue(grant | {"client_id": "my+client", "client_secret": "pl%2Bus%2520+s3cret"}, None)


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        (
            {"grant_type": "client_credentials", "client_id": "exporter", "client_secret": "wrong"},
            401,
            "invalid_client",
        ),
        (
            {"grant_type": "client_credentials", "client_id": "nobody", "client_secret": "s3cret"},
            401,
            "invalid_client",
        ),
        (
            {"grant_type": "password", "client_id": "exporter", "client_secret": "s3cret"},
            400,
            "unsupported_grant_type",
        ),
        ({"grant_type": "client_credentials"}, 401, "invalid_client"),
        ({"client_id": "exporter", "client_secret": "s3cret"}, 400, "invalid_request"),  # RFC 6749 §5.2
    ],
)
def test_token_endpoint_refusals(form: dict[str, str], status: int, error: str) -> None:
    issuer = TokenIssuer({"exporter": "s3cret"}, b"k" * 32)
    with pytest.raises(OAuthError) as raised:
        issuer.issue(form, None)
    assert (raised.value.status, raised.value.error) == (status, error)


def test_one_client_authentication_method_and_each_field_once() -> None:
    """RFC 6749 §2.3 and §3.2: which credentials or which value would count is not for a server to guess."""
    issuer = TokenIssuer({"exporter": "s3cret"}, b"k" * 32)
    both = {"grant_type": "client_credentials", "client_id": "other", "client_secret": "other"}
    with pytest.raises(OAuthError) as raised:
        issuer.issue(both, basic("exporter", "s3cret"))
    assert (raised.value.status, raised.value.error) == (400, "invalid_request")
    named = {"grant_type": "client_credentials", "client_id": "exporter"}  # naming the client is allowed
    assert issuer.issue(named, basic("exporter", "s3cret"))["token_type"] == "Bearer"
    with pytest.raises(OAuthError, match="not the Basic header's client") as raised:
        issuer.issue(named | {"client_id": "other"}, basic("exporter", "s3cret"))
    assert (raised.value.status, raised.value.error) == (400, "invalid_request")
    with pytest.raises(OAuthError) as raised:
        token_form([("grant_type", "client_credentials"), ("client_secret", "a"), ("client_secret", "b")])
    assert (raised.value.status, raised.value.error) == (400, "invalid_request")
    assert "client_secret" in raised.value.as_json()["error_description"]
    assert token_form([("grant_type", "client_credentials"), ("scope", "")]) == {
        "grant_type": "client_credentials",
        "scope": "",
    }


async def test_authenticator_basic_and_bearer() -> None:
    issuer = TokenIssuer({"c": "s"}, b"k" * 32)
    auth = Authenticator(basic=("u", "p"), tokens=issuer)
    assert await auth.check(basic("u", "p")) == "u"
    token = issuer.issue({"grant_type": "client_credentials", "client_id": "c", "client_secret": "s"}, None)
    assert await auth.check(f"Bearer {token['access_token']}") == "c"
    for header in (None, basic("u", "wrong"), "Bearer forged", "Digest x"):
        with pytest.raises(Unauthorized):
            await auth.check(header)
    with pytest.raises(Unauthorized, match="malformed Basic credentials"):
        await auth.check("Basic not-base64!")
    for empty in ("Bearer", "Bearer   "):  # told what is wrong, not that Bearer is not taken
        with pytest.raises(Unauthorized, match="a Bearer header without a token"):
            await auth.check(empty)
    assert await Authenticator().check(None) is None  # nothing configured: open


async def test_jwks_tokens_checked_for_signature_issuer_audience_and_expiry(tmp_path: Path) -> None:
    key = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    other = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(KeySet([key]).as_dict(private=False)))
    clock = Clock()
    verifier = JwksVerifier(str(jwks), issuer="https://idp", audience="receiver", clock=clock)

    def token(signer: RSAKey = key, **claims: object) -> str:
        base = {"sub": "svc", "iss": "https://idp", "aud": "receiver", "exp": int(clock.now) + 60}
        body = {name: value for name, value in (base | claims).items() if value is not None}
        return jwt.encode({"alg": "RS256", "kid": "k1"}, body, signer)

    assert await verifier.check(token()) == "svc"
    # a client-credentials token may name its client rather than a subject; or no one
    assert await verifier.check(token(sub=None, azp="exporter-client")) == "exporter-client"
    assert await verifier.check(token(sub=None)) is None
    for bad in (token(aud="other"), token(iss="https://evil"), token(exp=int(clock.now) - 1), token(other)):
        with pytest.raises(Unauthorized):
            await verifier.check(bad)


async def test_with_both_kinds_of_bearer_token_each_is_refused_for_its_own_reason(tmp_path: Path) -> None:
    """An expired token of the receiver's own endpoint is "expired", not the JWKS check's "HS256
    is not allowed"; the challenge says the token was refused (RFC 6750 §3)."""
    key = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(KeySet([key]).as_dict(private=False)))
    clock = Clock()
    issuer = TokenIssuer({"c": "s"}, b"k" * 32, ttl_seconds=60, clock=clock)
    auth = Authenticator(tokens=issuer, jwks=JwksVerifier(str(jwks), clock=clock))
    own = issuer.issue({"grant_type": "client_credentials", "client_id": "c", "client_secret": "s"}, None)
    external = jwt.encode({"alg": "RS256", "kid": "k1"}, {"sub": "svc", "exp": int(clock.now) + 600}, key)
    assert await auth.check(f"Bearer {own['access_token']}") == "c"
    assert await auth.check(f"Bearer {external}") == "svc"
    clock.now += 120
    with pytest.raises(InvalidToken, match="expired") as refused:
        await auth.check(f"Bearer {own['access_token']}")
    assert auth.challenge(refused.value) == 'Bearer realm="sessionexport", error="invalid_token"'
    assert auth.challenge(Unauthorized("credentials required")) == 'Bearer realm="sessionexport"'


@pytest.mark.parametrize(
    ("make_key", "alg"),
    [
        (lambda: RSAKey.generate_key(2048, parameters={"kid": "k"}), "RS384"),
        (lambda: RSAKey.generate_key(2048, parameters={"kid": "k"}), "PS512"),
        (lambda: ECKey.generate_key("P-384", parameters={"kid": "k"}), "ES384"),  # its only algorithm
        (lambda: ECKey.generate_key("P-521", parameters={"kid": "k"}), "ES512"),
    ],
)
async def test_tokens_of_every_asymmetric_algorithm_are_taken(
    tmp_path: Path, make_key: Callable[[], RSAKey | ECKey], alg: str
) -> None:
    key = make_key()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(KeySet([key]).as_dict(private=False)))
    clock = Clock()
    token = jwt.encode(
        {"alg": alg, "kid": "k"}, {"sub": "svc", "exp": int(clock.now) + 60}, key, algorithms=[alg]
    )
    assert await JwksVerifier(str(jwks), clock=clock).check(token) == "svc"


async def test_requests_waiting_for_the_keys_share_one_fetch(tmp_path: Path) -> None:
    """A burst of Bearer requests at start (or at a reload) makes one request to the issuer."""
    key = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(KeySet([key]).as_dict(private=False)))
    clock = Clock()
    verifier = JwksVerifier(str(jwks), clock=clock)
    token = jwt.encode({"alg": "RS256", "kid": "k1"}, {"sub": "svc", "exp": int(clock.now) + 60}, key)
    fetches = 0
    load = verifier._load

    async def counted() -> None:
        nonlocal fetches
        fetches += 1
        await asyncio.sleep(0.05)  # as an issuer takes a moment to answer
        await load()

    verifier._load = counted  # type: ignore[method-assign]
    assert await asyncio.gather(*(verifier.check(token) for _ in range(10))) == ["svc"] * 10
    assert fetches == 1


def test_jwks_is_never_fetched_over_plain_http() -> None:
    with pytest.raises(ValueError, match="https:// only"):
        JwksVerifier("http://127.0.0.1:8000/jwks.json")
    JwksVerifier("https://idp.test/jwks.json")  # fine, and a file path too
    JwksVerifier("/etc/receiver/jwks.json")


async def test_keys_that_cannot_be_loaded_are_unavailable_not_a_crash(tmp_path: Path) -> None:
    """The token may be fine: the answer is 503 (KeysUnavailable), neither a 500 nor a 401."""
    broken, shapeless = tmp_path / "jwks.json", tmp_path / "empty.json"
    broken.write_text("{not json")
    shapeless.write_text("{}")  # no "keys"
    for source in (tmp_path / "missing.json", broken, shapeless, "https://127.0.0.1:1/jwks.json"):
        with pytest.raises(KeysUnavailable, match="could not be loaded"):
            await JwksVerifier(str(source)).check("a.b.c")


async def test_keys_are_fetched_again_only_after_a_while_and_known_ones_stay(tmp_path: Path) -> None:
    key = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    jwks = tmp_path / "jwks.json"
    clock = Clock()
    verifier = JwksVerifier(str(jwks), clock=clock)
    with pytest.raises(KeysUnavailable):
        await verifier.check("a.b.c")  # no file yet
    jwks.write_text(json.dumps(KeySet([key]).as_dict(private=False)))
    with pytest.raises(KeysUnavailable):  # not read again at once: every request would
        await verifier.check("a.b.c")
    clock.now += KEYS_RETRY_SECONDS
    token = jwt.encode({"alg": "RS256", "kid": "k1"}, {"sub": "svc", "exp": int(clock.now) + 600}, key)
    assert await verifier.check(token) == "svc"
    jwks.unlink()  # the issuer is down for a while
    clock.now += 61
    other = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    forged = jwt.encode({"alg": "RS256", "kid": "k1"}, {"sub": "x", "exp": int(clock.now) + 60}, other)
    with pytest.raises(Unauthorized):  # judged by the keys known so far, not "unavailable"
        await verifier.check(forged)
    assert await verifier.check(token) == "svc"
