"""The receiver's self-signed certificate: made once, reused, and able to vouch only for its own names."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from sessionexport.receiver.tls import Certificate, self_signed


def test_made_once_then_reused_with_the_same_fingerprint(tmp_path: Path) -> None:
    first = self_signed(tmp_path)
    again = self_signed(tmp_path)
    assert first.generated and not again.generated
    assert first.fingerprint == again.fingerprint and len(first.fingerprint.split(":")) == 32
    assert oct(first.key_path.stat().st_mode & 0o777) == "0o600"


def test_it_may_only_vouch_for_its_own_names(tmp_path: Path) -> None:
    cert = x509.load_pem_x509_certificate(self_signed(tmp_path, ("receiver.test",)).cert_path.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    constraints = cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    permitted = constraints.value.permitted_subtrees or []
    assert {n.value for n in permitted if isinstance(n, x509.DNSName)} == set(
        sans.get_values_for_type(x509.DNSName)
    )
    assert "receiver.test" in sans.get_values_for_type(x509.DNSName)
    assert {str(n.value) for n in permitted if isinstance(n, x509.IPAddress)} == {"127.0.0.1/32", "::1/128"}


def test_two_receivers_can_be_trusted_from_one_bundle(tmp_path: Path) -> None:
    certs = [self_signed(tmp_path / name) for name in ("one", "two")]
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(b"".join(c.cert_path.read_bytes() for c in certs))
    for cert in certs:
        assert _handshake(cert, bundle) == cert.fingerprint


def _handshake(cert: Certificate, bundle: Path) -> str:
    """The fingerprint of the certificate a loopback TLS server with ``cert`` shows a client that
    trusts ``bundle`` (the handshake fails unless the bundle vouches for it)."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert.cert_path, cert.key_path)
    client_context = ssl.create_default_context(cafile=str(bundle))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            with server_context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)

        thread = threading.Thread(target=serve)
        thread.start()
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            client_context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            der = tls.getpeercert(binary_form=True)
            tls.sendall(b"x")
        thread.join(timeout=10)
    assert der is not None
    shown = x509.load_der_x509_certificate(der).fingerprint(hashes.SHA256())
    return ":".join(f"{b:02X}" for b in shown)
