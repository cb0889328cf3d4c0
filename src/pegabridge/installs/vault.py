"""The credential vault: endpoint passwords and OAuth 2.0 client secrets, encrypted.

The key comes from ``PEGABRIDGE_SECRET_KEY`` or, for the embedded default, from a key
file created once under the var folder, readable by its owner only. Secrets are
encrypted with Fernet (AES-128-CBC with an HMAC-SHA256 tag) and never logged.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from pegabridge.config import Settings

KEY_FILE_NAME = "secret.key"


class VaultError(RuntimeError):
    """A secret cannot be read back: the key changed or the stored value is damaged."""


class Vault:
    """Encrypts and decrypts secrets with the installation's master key."""

    def __init__(self, master_key: bytes) -> None:
        self._master_key = master_key
        self._fernet = Fernet(base64.urlsafe_b64encode(self.derive(b"vault")))

    def derive(self, purpose: bytes) -> bytes:
        """A 32-byte key for one purpose (vault, tracking tokens, sessions)."""
        return hashlib.blake2b(self._master_key, key=purpose, digest_size=32).digest()

    def encrypt(self, secret: str) -> str:
        """The stored form of ``secret``; ``""`` stays ``""``."""
        if not secret:
            return ""
        return self._fernet.encrypt(secret.encode()).decode("ascii")

    def decrypt(self, stored: str) -> str:
        """The secret behind a stored value."""
        if not stored:
            return ""
        try:
            return self._fernet.decrypt(stored.encode("ascii")).decode()
        except (InvalidToken, ValueError) as exc:
            raise VaultError(
                "a stored password or client secret cannot be decrypted: "
                "PEGABRIDGE_SECRET_KEY or the key file changed since it was saved; "
                "enter it again"
            ) from exc


def load_master_key(settings: Settings) -> bytes:
    """The master key: from the settings, else from (or into) the key file."""
    if settings.secret_key:
        return settings.secret_key.encode()

    path = settings.var_dir / KEY_FILE_NAME
    if path.exists():
        return path.read_bytes().strip()
    return _create_key_file(path)


def _create_key_file(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    key = base64.urlsafe_b64encode(os.urandom(32))
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_bytes().strip()
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key + b"\n")
    return key


def vault_for(settings: Settings) -> Vault:
    """The vault of this process's settings."""
    return Vault(load_master_key(settings))
