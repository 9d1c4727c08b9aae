"""Reading Elasticsearch ``_bulk`` answers item by item (response shapes from spec §7)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from sessionexport.export.elasticsearch import BulkResponseError, ItemOutcome, item_outcomes

# §7: the documented mixed answer (HTTP 200, errors true): one index created, one create conflicting.
CONFLICT_REASON = "[tt1392214]: version conflict, document already exists (current version [1])"
MIXED = b"""{ "took": 11, "errors": true, "items": [
  { "index":  { "_index": "movies", "_id": "tt1979320", "_version": 1, "result": "created",
                "_shards": {"total": 2, "successful": 1, "failed": 0},
                "_seq_no": 1, "_primary_term": 1, "status": 201 } },
  { "create": { "_index": "movies", "_id": "tt1392214", "status": 409,
                "error": { "type": "version_conflict_engine_exception",
                           "reason": "[tt1392214]: version conflict, document already exists (current version [1])",
                           "index": "movies", "shard": "0", "index_uuid": "yhizhusbSWmP0G7OJnmcLg" } } } ] }"""

# §7: the mapper failure item, with caused_by.
MAPPER_ITEM = (
    b'{"index":{"_index":"index1","_id":"ID1","status":400,"error":{"type":"mapper_parsing_exception",'
    b'"reason":"failed to parse field [Value] of type [double]","caused_by":{"type":"number_format_exception",'
    b'"reason":"For input string: \\"potato\\""}}}}'
)
REJECTED_REASON = (
    "rejected execution of coordinating operation [coordinating_and_primary_bytes=0, "
    "replica_bytes=0, all_bytes=0, coordinating_operation_bytes=1048576, max_coordinating_and_primary_bytes=0]"
)
REJECTED_ITEM = orjson.dumps(
    {
        "index": {
            "_index": "sessions",
            "_id": "t-u-1",
            "status": 429,
            "error": {"type": "es_rejected_execution_exception", "reason": REJECTED_REASON},
        }
    }
)
UNAVAILABLE_REASON = "[sessions][0] primary shard is not active Timeout: [1m]"
UNAVAILABLE_ITEM = orjson.dumps(
    {
        "index": {
            "_index": "sessions",
            "_id": "t-u-2",
            "status": 503,
            "error": {
                "type": "unavailable_shards_exception",
                "reason": UNAVAILABLE_REASON,
                "index_uuid": "aAsFqTI0Tc2W0LCWgPNrOA",
                "shard": "0",
                "index": "sessions",
            },
        }
    }
)
MISSING_ITEM = orjson.dumps(
    {
        "update": {
            "_index": "sessions",
            "_id": "t-u-3",
            "status": 404,
            "error": {
                "type": "document_missing_exception",
                "reason": "[_doc][t-u-3]: document missing",
                "index_uuid": "aAsFqTI0Tc2W0LCWgPNrOA",
                "shard": "0",
                "index": "sessions",
            },
        }
    }
)
UPDATED_ITEM = orjson.dumps(
    {
        "index": {
            "_index": "sessions",
            "_id": "t-u-4",
            "_version": 2,
            "result": "updated",
            "_shards": {"total": 2, "successful": 2, "failed": 0},
            "_seq_no": 7,
            "_primary_term": 1,
            "status": 200,
        }
    }
)
# §7: the whole-request failure of Elasticsearch 8 (no items at all).
ES8_TYPE_REJECTED = (
    b'{"error":{"root_cause":[{"type":"illegal_argument_exception","reason":"Action/metadata line [1] '
    b'contains an unknown parameter [_type]"}],"type":"illegal_argument_exception","reason":"Action/metadata '
    b'line [1] contains an unknown parameter [_type]"},"status":400}'
)


def response(*items: bytes, errors: bool = True) -> bytes:
    """A bulk answer holding these items (each one ``{"<action>": {...}}``)."""
    return (
        b'{"took":3,"errors":' + (b"true" if errors else b"false") + b',"items":[' + b",".join(items) + b"]}"
    )


def item(action: str, status: int, error: Any = None, **fields: Any) -> bytes:
    body: dict[str, Any] = {"_index": "sessions", **fields, "status": status}
    if error is not None:
        body["error"] = error
    return orjson.dumps({action: body})


def only(answer: bytes) -> ItemOutcome:
    outcomes = item_outcomes(answer, 1)
    assert len(outcomes) == 1
    return outcomes[0]


# ---------------------------------------------------------------------------------------------
# real response shapes


def test_the_documented_mixed_answer() -> None:
    outcomes = item_outcomes(MIXED, 2)
    assert outcomes == [
        ItemOutcome(201),
        ItemOutcome(409, "version_conflict_engine_exception", CONFLICT_REASON),
    ]
    assert [o.ok for o in outcomes] == [True, True]  # the conflicting create: already there
    assert [o.retryable for o in outcomes] == [False, False]


def test_the_mapper_failure_is_final_and_keeps_the_top_level_reason() -> None:
    outcome = only(response(MAPPER_ITEM))
    assert outcome == ItemOutcome(
        400, "mapper_parsing_exception", "failed to parse field [Value] of type [double]"
    )
    assert not outcome.ok
    assert not outcome.retryable


def test_a_rejected_execution_is_retryable() -> None:
    outcome = only(response(REJECTED_ITEM))
    assert outcome == ItemOutcome(429, "es_rejected_execution_exception", REJECTED_REASON)
    assert not outcome.ok
    assert outcome.retryable


def test_an_unavailable_shard_is_retryable() -> None:
    outcome = only(response(UNAVAILABLE_ITEM))
    assert outcome == ItemOutcome(503, "unavailable_shards_exception", UNAVAILABLE_REASON)
    assert not outcome.ok
    assert outcome.retryable


def test_a_missing_document_is_final() -> None:
    outcome = only(response(MISSING_ITEM))
    assert outcome == ItemOutcome(404, "document_missing_exception", "[_doc][t-u-3]: document missing")
    assert not outcome.ok
    assert not outcome.retryable


def test_an_updated_document_is_delivered() -> None:
    outcome = only(response(UPDATED_ITEM, errors=False))
    assert outcome == ItemOutcome(200)
    assert outcome.ok
    assert not outcome.retryable


@pytest.mark.parametrize("action", ["index", "create", "update", "delete"])
def test_every_bulk_action_name_is_read(action: str) -> None:
    assert only(response(item(action, 201, _id="x"))) == ItemOutcome(201)


def test_an_answer_without_took_or_errors_is_read() -> None:
    assert item_outcomes(b'{"items":[{"index":{"status":201}}]}', 1) == [ItemOutcome(201)]


def test_unknown_fields_are_ignored() -> None:
    answer = (
        b'{"took":1,"ingest_took":0,"errors":false,"extra":[1,2],"items":[{"index":{"status":201,"x":{}}}]}'
    )
    assert item_outcomes(answer, 1) == [ItemOutcome(201)]


def test_an_empty_request_has_an_empty_answer() -> None:
    assert item_outcomes(b'{"took":0,"errors":false,"items":[]}', 0) == []


# ---------------------------------------------------------------------------------------------
# classification


@pytest.mark.parametrize(
    ("status", "error_type", "ok", "retryable"),
    [
        (200, None, True, False),
        (201, None, True, False),
        (202, None, True, False),
        (299, None, True, False),
        (409, "version_conflict_engine_exception", True, False),
        (409, None, False, False),  # a conflict that is not a version conflict is not "already there"
        (409, "illegal_argument_exception", False, False),
        (429, "es_rejected_execution_exception", False, True),
        (429, None, False, True),
        (500, "exception", False, True),
        (502, None, False, True),
        (503, "unavailable_shards_exception", False, True),
        (504, None, False, True),
        (400, "mapper_parsing_exception", False, False),
        (400, "illegal_argument_exception", False, False),
        (400, "version_conflict_engine_exception", False, False),  # the type alone is not enough
        (401, None, False, False),
        (403, "cluster_block_exception", False, False),
        (404, "document_missing_exception", False, False),
        (404, "index_not_found_exception", False, False),
        (413, None, False, False),
        (199, None, False, False),
        (300, None, False, False),
    ],
)
def test_classification(status: int, error_type: str | None, ok: bool, retryable: bool) -> None:
    outcome = ItemOutcome(status, error_type, "some reason")
    assert (outcome.ok, outcome.retryable) == (ok, retryable)


@pytest.mark.parametrize(
    "error_type", [None, "version_conflict_engine_exception", "mapper_parsing_exception"]
)
def test_no_outcome_is_both_ok_and_retryable(error_type: str | None) -> None:
    both = [
        s for s in range(100, 600) if ItemOutcome(s, error_type).ok and ItemOutcome(s, error_type).retryable
    ]
    assert both == []


def test_classification_from_a_whole_answer() -> None:
    answer = response(
        item("index", 201),
        REJECTED_ITEM,
        MAPPER_ITEM,
        UNAVAILABLE_ITEM,
        MISSING_ITEM,
        item("create", 409, {"type": "version_conflict_engine_exception", "reason": CONFLICT_REASON}),
    )
    outcomes = item_outcomes(answer, 6)
    assert [o.ok for o in outcomes] == [True, False, False, False, False, True]
    assert [o.retryable for o in outcomes] == [False, True, False, True, False, False]


# ---------------------------------------------------------------------------------------------
# describe()


@pytest.mark.parametrize(
    ("outcome", "text"),
    [
        (
            ItemOutcome(409, "version_conflict_engine_exception", CONFLICT_REASON),
            "409 version_conflict_engine_exception: " + CONFLICT_REASON,
        ),
        (
            ItemOutcome(400, "mapper_parsing_exception", "failed to parse field [Value] of type [double]"),
            "400 mapper_parsing_exception: failed to parse field [Value] of type [double]",
        ),
        (
            ItemOutcome(400, None, "MapperParsingException[failed]"),
            "400 error: MapperParsingException[failed]",
        ),
        (
            ItemOutcome(503, "unavailable_shards_exception"),
            "503 unavailable_shards_exception: no reason given",
        ),
        (ItemOutcome(500), "500 error: no reason given"),
        (ItemOutcome(429, "", ""), "429 error: no reason given"),
    ],
)
def test_describe(outcome: ItemOutcome, text: str) -> None:
    assert outcome.describe() == text


def test_describe_of_a_read_item() -> None:
    assert (
        only(response(REJECTED_ITEM)).describe() == f"429 es_rejected_execution_exception: {REJECTED_REASON}"
    )


def test_the_outcome_is_immutable() -> None:
    outcome = ItemOutcome(201)
    with pytest.raises(AttributeError):
        outcome.status = 500  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# order and error shapes


def test_items_are_returned_in_request_order() -> None:
    statuses = [201, 429, 200, 400, 503, 409, 404, 201, 500]
    items = [
        item(
            "create" if status == 409 else "index",
            status,
            None if status < 300 else {"type": f"type-{n}", "reason": f"reason-{n}"},
            _id=f"doc-{n}",
        )
        for n, status in enumerate(statuses)
    ]
    outcomes = item_outcomes(response(*items), len(items))
    assert [o.status for o in outcomes] == statuses
    assert [o.reason for o in outcomes] == [
        None if s < 300 else f"reason-{n}" for n, s in enumerate(statuses)
    ]
    assert [o.error_type for o in outcomes] == [
        None if s < 300 else f"type-{n}" for n, s in enumerate(statuses)
    ]


def test_the_order_is_not_sorted_by_anything() -> None:
    forward = item_outcomes(response(item("index", 503), item("index", 201)), 2)
    backward = item_outcomes(response(item("index", 201), item("index", 503)), 2)
    assert [o.status for o in forward] == [503, 201]
    assert [o.status for o in backward] == [201, 503]


def test_an_error_given_as_a_plain_string() -> None:
    reason = "MapperParsingException[failed to parse [startTime]]; nested: NumberFormatException"
    outcome = only(response(item("index", 400, reason)))
    assert outcome == ItemOutcome(400, None, reason)
    assert not outcome.ok
    assert not outcome.retryable
    assert outcome.describe() == f"400 error: {reason}"


def test_a_conflict_given_as_a_plain_string_is_not_taken_for_delivered() -> None:
    outcome = only(response(item("create", 409, "DocumentAlreadyExistsException[[sessions][0] [_doc][x]]")))
    assert outcome.error_type is None
    assert not outcome.ok


def test_an_error_object_without_reason_or_type() -> None:
    assert only(response(item("index", 500, {"type": "exception"}))) == ItemOutcome(500, "exception", None)
    assert only(response(item("index", 500, {}))) == ItemOutcome(500, None, None)


def test_what_an_item_error_says_is_one_short_line_without_control_characters() -> None:
    """It goes into dead letters, alerts and logs: a NUL (which PostgreSQL cannot store) or a
    200 kB reason from an endpoint would stop the export or flood them."""
    error = {"type": "mapper\x00parsing" + "x" * 300, "reason": "line1\nline2 " + "r" * 200_000}
    outcome = only(response(item("index", 400, error)))
    assert outcome.error_type is not None and outcome.reason is not None
    for text in (outcome.error_type, outcome.reason):
        assert len(text) <= 200 and not any(ord(c) < 32 for c in text)
    assert outcome.error_type.startswith("mapper parsing") and outcome.reason.startswith("line1 line2 r")
    assert only(response(item("index", 400, "\x00\x01"))).reason is None  # nothing left to say


def test_a_null_error_is_no_error() -> None:
    assert only(b'{"errors":false,"items":[{"index":{"status":201,"error":null}}]}') == ItemOutcome(201)


# ---------------------------------------------------------------------------------------------
# malformed answers


@pytest.mark.parametrize(
    "answer",
    [
        b"",
        b"<html><body><h1>502 Bad Gateway</h1></body></html>",
        b'{"took":1,"errors":false,"items":[',
        b"\xff\xfe{}",
    ],
    ids=["empty", "html", "truncated", "binary"],
)
def test_an_answer_that_is_not_json(answer: bytes) -> None:
    with pytest.raises(BulkResponseError, match=r"^not an Elasticsearch bulk response: "):
        item_outcomes(answer, 1)


@pytest.mark.parametrize("answer", [b"", b" \r\n"], ids=["nothing", "whitespace"])
def test_an_empty_answer_is_called_empty_not_truncated(answer: bytes) -> None:
    with pytest.raises(BulkResponseError) as raised:
        item_outcomes(answer, 1)
    assert str(raised.value) == "not an Elasticsearch bulk response: the answer is empty"


@pytest.mark.parametrize(
    "answer",
    [b'{"took":1,"errors":false}', b"{}", ES8_TYPE_REJECTED],
    ids=["took-and-errors", "empty-object", "whole-request-error"],
)
def test_an_answer_without_items(answer: bytes) -> None:
    with pytest.raises(BulkResponseError, match=r"^not an Elasticsearch bulk response: .*`items`"):
        item_outcomes(answer, 1)


@pytest.mark.parametrize(
    "answer",
    [
        b"[]",
        b"null",
        b'"ok"',
        b'{"items":{}}',
        b'{"items":null}',
        b'{"items":[1]}',
        b'{"items":[{"index":"created"}]}',
        b'{"items":[{"index":{"_id":"x"}}]}',  # no status
        b'{"items":[{"index":{"status":"201"}}]}',
        b'{"items":[{"index":{"status":201.5}}]}',
        b'{"items":[{"index":{"status":400,"error":42}}]}',
        b'{"items":[{"index":{"status":400,"error":{"type":1}}}]}',
        b'{"errors":"yes","items":[{"index":{"status":201}}]}',
    ],
)
def test_an_answer_of_the_wrong_shape(answer: bytes) -> None:
    with pytest.raises(BulkResponseError, match=r"^not an Elasticsearch bulk response: "):
        item_outcomes(answer, 1)


@pytest.mark.parametrize(("items", "expected"), [(2, 3), (3, 2), (0, 1), (1, 0)])
def test_an_answer_with_another_number_of_items(items: int, expected: int) -> None:
    answer = response(*[item("index", 201) for _ in range(items)])
    with pytest.raises(BulkResponseError) as info:
        item_outcomes(answer, expected)
    assert str(info.value) == f"the bulk response has {items} item(s) for {expected} document(s)"


def test_the_documented_answer_for_the_wrong_number_of_documents() -> None:
    with pytest.raises(BulkResponseError, match=r"has 2 item\(s\) for 1 document\(s\)"):
        item_outcomes(MIXED, 1)


@pytest.mark.parametrize(
    "entry",
    [
        b'{"index":{"status":201},"create":{"status":409}}',
        b"{}",
    ],
    ids=["two-actions", "no-action"],
)
def test_an_item_that_does_not_hold_exactly_one_action(entry: bytes) -> None:
    answer = response(item("index", 201), entry)
    with pytest.raises(BulkResponseError, match=r"^a bulk response item must hold exactly one action$"):
        item_outcomes(answer, 2)


def test_bulk_response_error_is_a_value_error() -> None:
    assert issubclass(BulkResponseError, ValueError)


def test_the_decoder_error_is_not_chained() -> None:
    """The message says it all; the msgspec error is not repeated as the cause."""
    with pytest.raises(BulkResponseError) as info:
        item_outcomes(b"nope", 1)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_secrets_an_item_echoes_are_masked_in_its_reason() -> None:
    secret = 'Pass"wört-2024'
    answer = response(item("index", 400, {"type": f"bad_{secret}", "reason": f"user with {secret} refused"}))
    assert item_outcomes(answer, 1, (secret,)) == [ItemOutcome(400, "bad_*****", "user with ***** refused")]
