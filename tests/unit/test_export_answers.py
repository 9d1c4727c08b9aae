import orjson
import pytest

from sessionexport.export.answers import REASON_CHARS, answer_reason, http_error

ES_400 = orjson.dumps(
    {
        "error": {
            "root_cause": [{"type": "illegal_argument_exception", "reason": "unknown parameter [_type]"}],
            "type": "illegal_argument_exception",
            "reason": "Action/metadata line [1] contains an unknown parameter [_type]",
        },
        "status": 400,
    }
)


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (
            ES_400,
            "illegal_argument_exception: Action/metadata line [1] contains an unknown parameter [_type]",
        ),
        (b'{"error":"invalid_client","error_description":"bad secret"}', "invalid_client (bad secret)"),
        (b'{"error":"invalid_scope"}', "invalid_scope"),
        (b'{"message":"quota exceeded","code":7}', "quota exceeded"),
        (b"<html><head><title>502 Bad Gateway</title></head><body>...", "502 Bad Gateway"),
        (b"<html><body>no title</body></html>", None),
        (b"  too busy, come back later\nstack trace...", "too busy, come back later"),
        (b"", None),
        (b"[1, 2]", None),
        (b'{"status": 500}', None),
    ],
)
def test_the_reason_an_answer_gives(answer: bytes, reason: str | None) -> None:
    assert answer_reason(answer) == reason


def test_a_reason_is_one_short_line_without_control_characters() -> None:
    reason = answer_reason(orjson.dumps({"message": "a\x1b[31m\r\nb" + "x" * 500}))
    assert reason is not None
    assert reason.startswith("a [31m b") and len(reason) == REASON_CHARS and reason.endswith("…")


def test_a_long_answer_is_looked_at_only_in_its_start() -> None:
    assert answer_reason(b"first line\n" + b"y" * 10_000_000) == "first line"


def test_bytes_that_are_not_utf8_do_not_fail() -> None:
    assert answer_reason(b"bad \xff byte") == "bad \ufffd byte"


def test_http_error_names_the_status_and_the_reason() -> None:
    assert http_error(503, b"") == "HTTP 503"
    assert http_error(429, b'{"message":"slow down"}') == "HTTP 429: slow down"


@pytest.mark.parametrize(
    "answer",
    [
        b'{"message":"wrong password Geheim-\\"P\\u00e4sswort&2024"}',
        b"<html><title>wrong password Geheim-&quot;P&auml;sswort&amp;2024</title></html>",
        'wrong password Geheim-"Pässwort&2024'.encode(),
    ],
)
def test_a_secret_in_a_reason_is_masked_however_the_answer_escaped_it(answer: bytes) -> None:
    secret = 'Geheim-"Pässwort&2024'
    assert http_error(401, answer, (secret,)) == "HTTP 401: wrong password *****"
