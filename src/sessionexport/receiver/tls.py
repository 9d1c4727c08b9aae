"""TLS certificates of the HTTP servers: the operator's own (checked before serving), or, for the
receiver, a self-signed one kept in the data directory.

The self-signed certificate is made once and reused on later starts, so a sender that was told to
trust it (``--ca-bundle``) keeps trusting it. It names localhost, the loopback addresses, the
machine's host name and the address the receiver listens on; a later start on an address it does
not name makes a new one (senders could not reach that address through the old one).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sessionexport.folders import make_private_dir

CERT_FILE, KEY_FILE = "receiver-cert.pem", "receiver-key.pem"
VALID_DAYS = 825


@dataclass(frozen=True, slots=True)
class Certificate:
    cert_path: Path
    key_path: Path
    fingerprint: str  # SHA-256, colon-separated hex, as browsers and openssl show it
    generated: bool
    why: str = ""  # why it was made: "" on a first start


def self_signed(data_dir: Path, extra_names: tuple[str, ...] = ()) -> Certificate:
    """The data directory's certificate, made when there is none, when it (nearly) expired, or
    when it does not name one of ``extra_names`` (the host the receiver listens on)."""
    cert_path, key_path = data_dir / CERT_FILE, data_dir / KEY_FILE
    wanted = tuple(n for n in extra_names if n and not _everywhere(n))
    why = ""
    if cert_path.exists() and key_path.exists():
        cert = _loaded(cert_path)
        if cert is None:
            why = "the one there cannot be read"
        elif _expired(cert):
            why = "the one there expires within a day"
        elif unusable := _unusable_key(cert_path, key_path):
            why = unusable
        elif missing := [n for n in wanted if not _names(cert, n)]:
            why = f"the one there does not name {', '.join(missing)}"
        else:
            return Certificate(cert_path, key_path, fingerprint(cert_path), generated=False)
    make_private_dir(data_dir)
    _write_self_signed(cert_path, key_path, ("localhost", socket.gethostname(), *wanted))
    return Certificate(cert_path, key_path, fingerprint(cert_path), generated=True, why=why)


def operator_certificate(cert_path: Path, key_path: Path) -> str:
    """The fingerprint of an operator's certificate, once it is known to load with its key;
    ValueError saying why not (a server would otherwise fail in uvicorn's traceback)."""
    try:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_path, key_path, password=_no_passphrase)
    except (ssl.SSLError, ValueError, _EncryptedKey) as exc:
        raise ValueError(str(exc)) from None
    return fingerprint(cert_path)


class _EncryptedKey(Exception):
    def __str__(self) -> str:
        return (
            "the key is encrypted with a passphrase; give a key without one (openssl pkey -in KEY -out PLAIN)"
        )


def _no_passphrase() -> str:
    # Asked for only when the key is encrypted: without this, OpenSSL prompts on the terminal.
    raise _EncryptedKey


def fingerprint(cert_path: Path) -> str:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def _expired(cert: x509.Certificate) -> bool:
    return cert.not_valid_after_utc <= dt.datetime.now(dt.UTC) + dt.timedelta(days=1)


def _names(cert: x509.Certificate, name: str) -> bool:
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    if (address := _address(name)) is not None:
        return address in sans.get_values_for_type(x509.IPAddress)
    return name.lower() in (n.lower() for n in sans.get_values_for_type(x509.DNSName))


def _everywhere(name: str) -> bool:
    """0.0.0.0 or ::, listening on every address: no one name to add for it."""
    return (address := _address(name)) is not None and address.is_unspecified


def _address(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return None


def _only_these_names(sans: list[x509.GeneralName]) -> x509.NameConstraints:
    permitted: list[x509.GeneralName] = []
    for name in sans:
        if isinstance(name, x509.IPAddress):
            address = name.value
            permitted.append(x509.IPAddress(ipaddress.ip_network(f"{address}/{address.max_prefixlen}")))
        else:
            permitted.append(name)
    return x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None)


def _write_self_signed(cert_path: Path, key_path: Path, names: tuple[str, ...]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    key_id = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    # A name of its own: senders look a trusted certificate up by its name, so receivers that
    # shared one could not all be trusted from one --ca-bundle.
    name = f"sessionexport receiver {key_id.digest[:6].hex()}"
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    addresses = dict.fromkeys([ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")])
    addresses |= dict.fromkeys(a for n in names if (a := _address(n)) is not None)
    sans: list[x509.GeneralName] = [
        x509.DNSName(n) for n in dict.fromkeys(names) if n and _address(n) is None
    ]
    sans += [x509.IPAddress(a) for a in addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(key_id, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(key_id), critical=False)
        # Trusted as a CA by senders (--ca-bundle), it may only vouch for its own names.
        .add_extension(_only_these_names(sans), critical=True)
        # CA:TRUE so that the file itself can be given to senders as the CA to trust.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Each file written beside its place, then moved there: never half written, and the key new,
    # so readable by its owner only (an existing file keeps the mode it has, whatever it is).
    _replace(key_path, key_pem, 0o600)
    _replace(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _replace(path: Path, data: bytes, mode: int) -> None:
    new = path.with_name(f".{path.name}.new")
    new.unlink(missing_ok=True)  # an interrupted start's
    fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(new, path)


def _loaded(cert_path: Path) -> x509.Certificate | None:
    """The certificate, or None for a file that holds none (cut short, overwritten)."""
    try:
        return x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError:
        return None


def _unusable_key(cert_path: Path, key_path: Path) -> str:
    """Why the key cannot serve with the certificate, or "": a start stopped between writing the
    two leaves them apart; a key given a passphrase would have the server prompt for it."""
    try:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_path, key_path, password=_no_passphrase)
    except _EncryptedKey:
        return "the key there has a passphrase"
    except (ssl.SSLError, ValueError):
        return "the key there is not the certificate's"
    return ""
