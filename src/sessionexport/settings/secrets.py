"""Secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) with key rotation via MultiFernet.

Keys come from ``SESSIONEXPORT_SECRET_KEY`` (comma-separated, newest first) or, when that is not
set, from ``secret.key`` in the data directory, created on first use with mode 0600.

Rotation: generate a key (``sessionexport secrets new-key``), put it first in
``SESSIONEXPORT_SECRET_KEY`` followed by the old key(s), restart, run ``sessionexport secrets
rotate`` (re-encrypts every stored secret with the first key), then drop the old key(s).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sessionexport.folders import make_private_dir

KEY_FILE = "secret.key"
PREFIX = "fernet:"
MASK = "*****"


class SecretKeyError(Exception):
    """A key is malformed, or a stored secret cannot be decrypted with the configured keys."""


class SecretBox:
    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise SecretKeyError("at least one secret key is required")
        try:
            self._fernet = MultiFernet([Fernet(key) for key in keys])
        except ValueError as exc:
            raise SecretKeyError(
                f"invalid secret key ({exc}); create one with `sessionexport secrets new-key`"
            ) from None
        self._newest = keys[0]

    def derive_key(self, purpose: str) -> bytes:
        """A key for another use (signing UI cookies), derived from the newest key: every process
        with the same keys derives the same one, and it reveals nothing about the secrets' key."""
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode())
        return hkdf.derive(self._newest)

    def encrypt(self, plaintext: str) -> str:
        return PREFIX + self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, stored: str) -> str:
        if not is_encrypted(stored):
            raise SecretKeyError("stored secret is not encrypted")
        try:
            return self._fernet.decrypt(stored.removeprefix(PREFIX).encode()).decode()
        except InvalidToken:
            raise SecretKeyError("a stored secret cannot be decrypted with the configured keys") from None

    def rotate(self, stored: str) -> str:
        """The same secret, encrypted with the newest key."""
        try:
            return PREFIX + self._fernet.rotate(stored.removeprefix(PREFIX).encode()).decode()
        except InvalidToken:
            raise SecretKeyError("a stored secret cannot be decrypted with the configured keys") from None


def is_encrypted(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def new_key() -> str:
    return Fernet.generate_key().decode()


def create_private_file(path: Path, data: bytes) -> bool:
    """Write ``data`` to a new file readable by its owner only from the start (never by others,
    even for a moment); False when the file exists already."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return True


def check_keys(keys: str) -> None:
    """ValueError unless ``keys`` (comma-separated, as SESSIONEXPORT_SECRET_KEY holds them) are Fernet
    keys; none at all (an empty value) means the key file, as ``load_secret_box`` takes it."""
    if not keys:
        return
    try:
        SecretBox([k.strip().encode() for k in keys.split(",") if k.strip()])
    except SecretKeyError as exc:
        raise ValueError(str(exc)) from None


def load_secret_box(data_dir: Path, env_keys: str | None, *, create: bool = True) -> SecretBox:
    """Keys from the environment value when given, else from the data directory's key file (made
    when there is none, with ``create``)."""
    if env_keys:
        return SecretBox([k.strip().encode() for k in env_keys.split(",") if k.strip()])
    path = data_dir / KEY_FILE
    if not create and not path.exists():
        raise SecretKeyError(f"no secret key: give SESSIONEXPORT_SECRET_KEY, as the server has it, or {path}")
    try:
        if not path.exists():
            make_private_dir(data_dir)
            create_private_file(path, (new_key() + "\n").encode())  # False: another process made it first
        text = path.read_text()
    except OSError as exc:  # a data directory that cannot be made, a key file that cannot be read
        raise SecretKeyError(f"cannot keep the secret key at {path}: {exc.strerror or exc}") from None
    try:
        return SecretBox([line.strip().encode() for line in text.splitlines() if line.strip()])
    except SecretKeyError as exc:
        raise SecretKeyError(f"{path}: {exc}") from None
