"""Encrypts server passwords at rest with a Fernet key (CONTRACT §3 ``secret_key_file``).

The key comes from ``COLLECTOR_SECRET_KEY`` if set, else from the key file, which is created with
mode 0600 on first use.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from cryptography.fernet import Fernet, InvalidToken

from supervisor.errors import CollectorError, ConfigError

SECRET_KEY_ENV = "COLLECTOR_SECRET_KEY"


class SecretBox:
    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except ValueError:
            raise ConfigError("secret key is not a valid Fernet key (32 url-safe base64-encoded bytes)") from None

    @classmethod
    def load(cls, key_file: str, *, create: bool = True) -> SecretBox:
        from_env = os.environ.get(SECRET_KEY_ENV)
        if from_env:
            return cls(from_env.strip().encode())
        path = Path(key_file)
        if path.exists():
            return cls(path.read_bytes().strip())
        if not create:
            raise CollectorError(f"secret key file not found: {path}")
        return cls(_create_key_file(path))

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, ValueError):
            raise CollectorError(
                "cannot decrypt a stored password: the secret key differs from the one it was stored with"
            ) from None


def _create_key_file(path: Path) -> bytes:
    key = Fernet.generate_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as handle:
        handle.write(key + b"\n")
    return key


#: Passwords a DeferredSecretBox keeps decrypted (old tokens go when a password changes often).
MAX_REMEMBERED = 100_000


class PasswordDecryptor(Protocol):
    def decrypt(self, token: str) -> str: ...


class DeferredSecretBox:
    """Loads the key on first use: a tenant whose servers have no password needs no key file.

    Remembers what it decrypted: a child reads its server list every few seconds, and decrypting every
    password each time was half the cost of that read."""

    def __init__(self, key_file: str) -> None:
        self._key_file = key_file
        self._box: SecretBox | None = None
        self._decrypted: dict[str, str] = {}

    def decrypt(self, token: str) -> str:
        plain = self._decrypted.get(token)
        if plain is None:
            if self._box is None:
                self._box = SecretBox.load(self._key_file, create=False)
            plain = self._box.decrypt(token)
            if len(self._decrypted) >= MAX_REMEMBERED:
                self._decrypted.clear()
            self._decrypted[token] = plain
        return plain
