"""The receiver's self-signed certificate: made once, reused, and able to vouch only for its own names."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sessionexport.receiver.tls import Certificate, operator_certificate, self_signed


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


def test_it_names_the_address_it_listens_on_and_is_made_again_for_one_it_does_not(tmp_path: Path) -> None:
    """A sender given the printed https://127.0.0.2:PORT and --ca-bundle must get through."""
    first = self_signed(tmp_path, ("127.0.0.2",))
    assert _handshake(first, first.cert_path, "127.0.0.2") == first.fingerprint
    kept = self_signed(tmp_path, ("127.0.0.2",))
    assert not kept.generated and kept.fingerprint == first.fingerprint
    assert not self_signed(tmp_path, ("::",)).generated  # everywhere: no one name to add
    moved = self_signed(tmp_path, ("receiver.test",))
    assert moved.generated and moved.why == "the one there does not name receiver.test"
    assert _handshake(moved, moved.cert_path, "receiver.test") == moved.fingerprint


def test_an_encrypted_key_is_refused_saying_so_without_a_prompt(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = self_signed(tmp_path)
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    with pytest.raises(ValueError, match="encrypted with a passphrase"):
        operator_certificate(cert.cert_path, encrypted)


def _handshake(cert: Certificate, bundle: Path, server_name: str = "localhost") -> str:
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
            client_context.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
            tls.sendall(b"x")
        thread.join(timeout=10)
    assert der is not None
    shown = x509.load_der_x509_certificate(der).fingerprint(hashes.SHA256())
    return ":".join(f"{b:02X}" for b in shown)


def test_a_key_made_again_is_its_owners_alone_and_one_apart_from_its_certificate_is_replaced(
    tmp_path: Path,
) -> None:
    """A key file someone made readable keeps no mode into the key that replaces it; a key that
    is not the certificate's (a start stopped between the two files) is not served."""
    first = self_signed(tmp_path)
    first.key_path.chmod(0o644)
    moved = self_signed(tmp_path, ("receiver.test",))
    assert moved.generated and oct(moved.key_path.stat().st_mode & 0o777) == "0o600"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["receiver-cert.pem", "receiver-key.pem"]
    stranger = ec.generate_private_key(ec.SECP256R1())
    moved.key_path.write_bytes(
        stranger.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    again = self_signed(tmp_path, ("receiver.test",))
    assert again.generated and again.why == "the key there is not the certificate's"
    assert _handshake(again, again.cert_path, "receiver.test") == again.fingerprint


def test_a_certificate_that_cannot_be_read_or_a_key_with_a_passphrase_is_made_again(tmp_path: Path) -> None:
    """Neither is served: the one would not load, the other would have the server prompt for
    its passphrase (or fail without a terminal)."""
    first = self_signed(tmp_path)
    first.cert_path.write_text("cut short")
    again = self_signed(tmp_path)
    assert again.generated and again.why == "the one there cannot be read"
    key = serialization.load_pem_private_key(again.key_path.read_bytes(), password=None)
    again.key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"a passphrase"),
        )
    )
    third = self_signed(tmp_path)
    assert third.generated and third.why == "the key there has a passphrase"
    assert _handshake(third, third.cert_path) == third.fingerprint
