"""How a failed connection to an endpoint or a token endpoint is told to an operator."""

from __future__ import annotations

import ssl

import httpx
import pytest

from sessionexport.export.auth import (
    BasicCredentials,
    OAuth2Credentials,
    TokenError,
    usable_token,
)
from sessionexport.export.config import BasicAuth, OAuth2
from sessionexport.export.exchange import describe_transport_error
from sessionexport.export.masking import masked, masked_answer
from sessionexport.model.validation import decode_any


def test_a_certificate_failure_is_named_without_the_interpreter_source_line() -> None:
    exc = httpx.ConnectError(
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate (_ssl.c:1006)"
    )
    assert describe_transport_error(exc) == "TLS certificate verification failed (self-signed certificate)"


def test_a_certificate_failure_keeps_openssl_s_reason_whole() -> None:
    exc = httpx.ConnectError(
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
        "Hostname mismatch, certificate is not valid for 'example.org'. (_ssl.c:1006)"
    )
    assert describe_transport_error(exc) == (
        "TLS certificate verification failed (Hostname mismatch, certificate is not valid for 'example.org'.)"
    )


def test_tls_failing_after_the_handshake_is_named_so() -> None:
    """An ssl.SSLError that httpx leaves unwrapped (see exchange.TRANSPORT_ERRORS)."""
    wants = ssl.SSLError(
        1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required (_ssl.c:2580)"
    )
    assert describe_transport_error(wants) == (
        "TLS failed: the endpoint requires a client certificate, which exports do not send"
        " ([SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required)"
    )
    garbled = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:2580)")
    assert describe_transport_error(garbled) == (
        "TLS failed after the handshake ([SSL: WRONG_VERSION_NUMBER] wrong version number)"
    )


def test_a_proxy_refusing_the_tunnel_is_named() -> None:
    assert describe_transport_error(httpx.ProxyError("502 Bad Gateway")) == (
        "the proxy refused the tunnel to the endpoint (502 Bad Gateway)"
    )


def test_a_connection_closed_in_the_handshake_says_so() -> None:
    """httpx's text is empty then (an old TLS version only, or no TLS on that port)."""
    assert describe_transport_error(httpx.ConnectError("")) == (
        "connection failed (closed by the endpoint before TLS was set up)"
    )


def test_other_connection_failures_say_so() -> None:
    assert describe_transport_error(httpx.ConnectError("[Errno 111] Connection refused")) == (
        "connection failed ([Errno 111] Connection refused)"
    )


def test_a_broken_connection_says_when_it_broke() -> None:
    assert (
        describe_transport_error(httpx.ReadError(""))
        == "the connection broke while the answer was awaited or read"
    )
    assert describe_transport_error(httpx.WriteError("[Errno 32] Broken pipe")) == (
        "the connection broke while the body was being sent ([Errno 32] Broken pipe)"
    )
    closed = httpx.RemoteProtocolError("Server disconnected without sending a response.")
    assert describe_transport_error(closed) == (
        "the endpoint broke the HTTP exchange (Server disconnected without sending a response.)"
    )


async def test_the_credentials_name_every_form_they_travel_in_and_those_are_masked() -> None:
    basic = BasicCredentials(BasicAuth("user", "pa ss+word"))
    header = (await basic.headers())["Authorization"].removeprefix("Basic ")
    echoed = f"denied: Basic {header}; form password=pa+ss%2Bword; raw pa ss+word"
    assert masked(echoed, basic.secrets()) == "denied: Basic *****; form password=*****; raw *****"
    oauth = OAuth2Credentials(OAuth2("https://t.example/token", "client", "s3cr3t/value", None), None, 1)  # type: ignore[arg-type]
    echoed = "invalid client_secret=s3cr3t%2Fvalue (s3cr3t/value)"
    assert masked(echoed, oauth.secrets()) == "invalid client_secret=***** (*****)"


@pytest.mark.parametrize(
    ("echoed", "why"),
    [
        ("bad credentials bob%3Ahunter%202%40x!", "percent-encoded as a URL writes a space"),
        ("bad credentials hunter%202%40x!", "encodeURIComponent leaves ! as it is"),
        ("bad credentials hunter+2%40x%21", "form-encoded"),
        ("bad credentials hunter 2@x!", "as it is"),
    ],
)
def test_a_password_echoed_percent_encoded_is_masked(echoed: str, why: str) -> None:
    basic = BasicCredentials(BasicAuth("bob", "hunter 2@x!"))
    shown = masked(echoed, basic.secrets())
    assert "hunter" not in shown and shown.endswith("*****"), why


@pytest.mark.parametrize(
    "echoed",
    [
        "O&#039;Brien&quot;pw&amp;&lt;1&gt;",  # PHP's htmlspecialchars (ENT_QUOTES)
        "O'Brien&quot;pw&amp;&lt;1&gt;",  # Java's escapeHtml4: the apostrophe left as it is
        "O&#x27;Brien&#x22;pw&#38;&#60;1&#62;",  # hex and decimal mixed
        "O%27Brien%22pw%26%3c1%3E",  # percent-encoded, hex of both cases mixed
        'O\u0027Brien"pw\u0026\u003c1\u003e',  # JSON as some encoders write it
    ],
)
def test_a_secret_is_masked_whichever_spelling_each_of_its_characters_takes(echoed: str) -> None:
    secret = "O'Brien\"pw&<1>"
    assert masked(f"Invalid credentials for password {echoed}.", (secret,)) == (
        "Invalid credentials for password *****."
    )
    assert masked_answer(f"denied {echoed}".encode(), (secret,)) == b"denied *****"


def test_ordinary_text_is_not_masked_for_looking_like_a_secret_spelled_otherwise() -> None:
    text = "password p4ss-wOrd? no: pass-word, P4SS%2DWORD"
    assert masked(text, ("p4ss-word",)) == text  # the letters themselves are never respelled


def test_a_secret_echoed_percent_encoded_in_lower_case_hex_is_masked() -> None:
    assert (
        masked("invalid client_secret=s3cr3t%2fv%2bl%3d", ("s3cr3t/v+l=",)) == "invalid client_secret=*****"
    )


def test_a_secret_echoed_html_escaped_in_a_text_answer_is_masked() -> None:
    secret = "p&ss<w>\"o'rd"
    forms = (
        "p&amp;ss&lt;w&gt;&quot;o&#x27;rd",  # Python's html.escape
        "p&amp;ss&lt;w&gt;&#34;o&#39;rd",  # markupsafe (Jinja2), Go's html.EscapeString
        "p&amp;ss&lt;w&gt;&quot;o&apos;rd",
        "p&amp;ss&lt;w&gt;\"o'rd",  # quotes left as they are
    )
    for escaped in forms:
        assert masked(f"refused {escaped} here", (secret,)) == "refused ***** here"
        assert masked_answer(f"refused {escaped}".encode(), (secret,)) == b"refused *****"


def test_the_encoded_forms_of_a_secret_too_short_to_mask_are_not_masked_either() -> None:
    assert masked("a%20b and a b", ("a b",)) == "a%20b and a b"


def test_secrets_too_short_to_mask_leave_the_text_readable() -> None:
    assert masked("a bad answer", ("a", "bad")) == "a bad answer"


def test_a_secret_quoted_escaped_in_a_message_is_masked_too() -> None:
    secret = "tok\nsecret\u00e9"
    said = f'Illegal header value {("Bearer " + secret).encode()!r}; json {{"t": "tok\\nsecret\\u00e9"}}'
    shown = masked(said, (secret,))
    assert "secret" not in shown
    assert shown == 'Illegal header value b\'Bearer *****\'; json {"t": "*****"}'


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (b'{"access_token":"t","expires_in":1e400}', "an expires_in that is not seconds: inf"),
        (b'{"access_token":"t","token_type":null,"expires_in":"60"}', None),  # null type: not said
        (b'{"access_token":"t\\u00e9"}', "no Authorization header can carry"),
        (b'{"access_token":""}', "no Authorization header can carry"),
    ],
)
def test_token_answers_are_read_as_the_exporter_uses_them(answer: bytes, said: str | None) -> None:
    if said is None:
        assert usable_token(decode_any(answer))["expires_in"] == 60
        return
    with pytest.raises(TokenError, match=said):
        usable_token(decode_any(answer))
