"""``serve --tls-cert --tls-key``: the API and the UI over HTTPS (a real server process, a test CA's
certificate); the options refused when they cannot work; plain HTTP off loopback warned about."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import trustme

from sessionexport.export.exchange import ssl_context
from tests.e2e.test_cli_and_server import CLI, create_token, free_port, run
from tests.support.processes import wait_healthy
from tests.support.receiver import Tls


def test_serve_over_https_with_the_operators_certificate(tmp_path: Path) -> None:
    tls = Tls.create(tmp_path)
    ca_file, cert_file, key_file = tls.ca_file, tls.cert, tls.key
    token = create_token(tmp_path, "sessions.read")
    port = free_port()
    env = {**os.environ, "SESSIONEXPORT_TLS_CERT": str(cert_file), "SESSIONEXPORT_TLS_KEY": str(key_file)}
    command = [*CLI, "serve", "--port", str(port), "--data-dir", str(tmp_path), "--no-exporters"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"https://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, verify=ssl_context(ca_file)) as client:
            wait_healthy(client, proc)
            sessions = client.get("/api/v2/usersessions", headers={"Authorization": f"Api-Token {token}"})
            assert sessions.status_code == 200
            login = client.get("/ui/login")
            assert login.status_code == 200
            cookies = login.headers.get_list("set-cookie")
            assert cookies and all("secure" in c.lower() for c in cookies)  # sent over HTTPS only
        with httpx.Client() as plain:  # the port speaks TLS only
            try:
                plain.get(f"http://127.0.0.1:{port}/health", timeout=3)
            except httpx.HTTPError:
                pass
            else:
                raise AssertionError("plain HTTP was answered")
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert f"listening on https://127.0.0.1:{port}" in output
    assert "TLS certificate" in output and "SHA-256" in output


@pytest.mark.parametrize("command", ["serve", "receive"])
def test_tls_options_that_cannot_work_are_refused_before_serving(tmp_path: Path, command: str) -> None:
    ca = trustme.CA()
    first, second = ca.issue_cert("127.0.0.1"), ca.issue_cert("127.0.0.1")
    cert_file, other_key = tmp_path / "cert.pem", tmp_path / "other-key.pem"
    first.cert_chain_pems[0].write_to_path(str(cert_file))
    second.private_key_pem.write_to_path(str(other_key))
    alone = run(command, "--data-dir", str(tmp_path), "--tls-cert", str(cert_file))
    assert alone.returncode == 2 and "--tls-cert and --tls-key go together" in alone.stderr
    mismatched = run(
        command, "--data-dir", str(tmp_path), "--tls-cert", str(cert_file), "--tls-key", str(other_key)
    )
    assert mismatched.returncode == 2, mismatched.stderr
    assert "cannot use --tls-cert with --tls-key" in mismatched.stderr
    assert "KEY_VALUES_MISMATCH" in mismatched.stderr  # OpenSSL's reason, shown whole
    assert "Traceback" not in mismatched.stderr


def test_plain_http_off_loopback_is_warned_about(tmp_path: Path) -> None:
    port = free_port()
    command = [*CLI, "serve", "--host", "0.0.0.0", "--port", str(port), "--data-dir", str(tmp_path)]  # noqa: S104
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert "warning: plain HTTP on 0.0.0.0: API tokens and UI logins cross the network in clear" in output
