"""How a failed connection to an endpoint or a token endpoint is told to an operator."""

from __future__ import annotations

import httpx

from sessionexport.export.auth import describe_transport_error


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


def test_other_connection_failures_say_so() -> None:
    assert describe_transport_error(httpx.ConnectError("[Errno 111] Connection refused")) == (
        "connection failed ([Errno 111] Connection refused)"
    )


def test_a_broken_connection_says_when_it_broke() -> None:
    assert (
        describe_transport_error(httpx.ReadError("")) == "the connection broke while waiting for the answer"
    )
    assert describe_transport_error(httpx.WriteError("[Errno 32] Broken pipe")) == (
        "the connection broke while the body was being sent ([Errno 32] Broken pipe)"
    )
    closed = httpx.RemoteProtocolError("Server disconnected without sending a response.")
    assert describe_transport_error(closed) == (
        "the endpoint broke the HTTP exchange (Server disconnected without sending a response.)"
    )
