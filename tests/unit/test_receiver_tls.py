"""The receiver's self-signed certificate: made once, reused, and able to vouch only for its own names."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from sessionexport.receiver.tls import self_signed


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
