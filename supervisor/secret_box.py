"""Encrypts server passwords at rest with a Fernet key (README "Configuration", ``secret_key_file``).

The key comes from ``COLLECTOR_SECRET_KEY`` if set, else from the key file, which is created with
mode 0600 on first use — and only then: a key file that is missing while passwords are stored is an error
(``KeyFileMissing``), never a reason to make a new key the stored passwords were not encrypted with.
Every way the key can be unusable is a ``ConfigError`` naming the file (or the variable), so the CLI
exits 2 with one line and a child reports the servers whose password it cannot decrypt.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from supervisor.errors import ConfigError
from supervisor.fernet import Fernet, InvalidToken, LibcryptoMissing, generate_key, libcrypto, token_bytes
from supervisor.logs import register_secret
from supervisor.whole_file import write_whole

SECRET_KEY_ENV = "COLLECTOR_SECRET_KEY"
KEY_DIFFERS = "cannot decrypt: the secret key differs from the one the passwords were encrypted with"


class KeyFileMissing(ConfigError):
    """No key in the environment and no key file, where one was expected."""


class SecretBox:
    def __init__(self, key: bytes, *, source: str = SECRET_KEY_ENV) -> None:
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError):
            raise ConfigError(f"invalid {source}: not a valid Fernet key (32 url-safe base64-encoded bytes)") from None
        try:
            libcrypto()
        except LibcryptoMissing as exc:
            raise ConfigError(f"cannot encrypt or decrypt passwords: {exc}") from None
        register_secret(key.decode("ascii"))  # valid Fernet keys are ASCII

    @classmethod
    def load(cls, key_file: str, *, create: bool = True) -> SecretBox:
        from_env = os.environ.get(SECRET_KEY_ENV)
        if from_env:
            return cls(_env_bytes(from_env))
        path = Path(key_file)
        source = f"collector.secret_key_file = {str(path)!r}"
        key = _read_key_file(path, source)
        if key is None:
            if not create:
                raise KeyFileMissing(
                    f"the secret key file {path} is missing: restore it (or set {SECRET_KEY_ENV}); "
                    "the stored passwords cannot be decrypted without it"
                )
            key = _create_key_file(path, source)
        return cls(key, source=source)

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        if not _looks_like_token(token):
            raise ConfigError("cannot decrypt: the stored value is not an encrypted password (a Fernet token)")
        try:
            plain = self._fernet.decrypt(token.encode("ascii"))
        except InvalidToken:
            raise ConfigError(KEY_DIFFERS) from None
        try:
            return plain.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError("cannot decrypt: the decrypted password is not UTF-8 text") from None


def _env_bytes(value: str) -> bytes:
    try:
        return value.strip().encode("ascii")
    except UnicodeEncodeError:
        raise ConfigError(f"invalid {SECRET_KEY_ENV}: not a valid Fernet key (non-ASCII characters)") from None


def _looks_like_token(token: object) -> bool:
    if not isinstance(token, str):
        return False
    try:
        return token_bytes(token.encode("ascii")) is not None
    except UnicodeEncodeError:
        return False


def _read_key_file(path: Path, source: str) -> bytes | None:
    """The key file's content; None if there is no file."""
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise ConfigError(f"invalid {source}: is a directory, not a key file") from None
    except OSError as exc:
        raise ConfigError(f"invalid {source}: cannot read it: {exc.strerror or exc}") from None


def _create_key_file(path: Path, source: str) -> bytes:
    """A new key, written whole or not at all (``write_whole``): a full disk used to leave an empty key file that
    every later command refused. Linked, not renamed, to its name: a key another process created meanwhile is
    never replaced (its passwords would become undecryptable); that key is used instead."""
    key = generate_key()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_whole(path, key + b"\n", mode=0o600, replace=False)
    except FileExistsError:
        existing = _read_key_file(path, source)  # another process created it meanwhile
        if existing is None:
            raise ConfigError(f"invalid {source}: cannot create it") from None
        return existing
    except OSError as exc:
        raise ConfigError(f"invalid {source}: cannot create it: {exc.strerror or exc}") from None
    return key


#: Passwords a DeferredSecretBox keeps decrypted (old tokens go when a password changes often).
MAX_REMEMBERED = 100_000


class PasswordDecryptor(Protocol):
    def decrypt(self, token: str) -> str: ...


class DeferredSecretBox:
    """Loads the key on first use: a tenant whose servers have no password needs no key file. Never creates
    a key. Raises ``ConfigError`` naming the cause (key missing, unreadable or different, not a token).

    Remembers what it decrypted: a child reads its server list every few seconds, and decrypting every
    password each time was half the cost of that read. A key that failed (or did not decrypt a token) is
    loaded again once the key file or the variable changes, so restoring the right key needs no restart."""

    def __init__(self, key_file: str) -> None:
        self._key_file = key_file
        self._box: SecretBox | None = None
        self._error: ConfigError | None = None
        self._source: object = None
        self._decrypted: dict[str, str] = {}

    def decrypt(self, token: str) -> str:
        plain = self._decrypted.get(token)
        if plain is None:
            box = self._current_box()
            plain = box.decrypt(token)
            if len(self._decrypted) >= MAX_REMEMBERED:
                self._decrypted.clear()
            self._decrypted[token] = plain
        return plain

    def _current_box(self) -> SecretBox:
        source = self._source_signature()
        if source != self._source or (self._box is None and self._error is None):
            self._source = source
            try:
                self._box, self._error = SecretBox.load(self._key_file, create=False), None
            except ConfigError as exc:
                self._box, self._error = None, exc
        if self._box is None:
            assert self._error is not None
            raise type(self._error)(str(self._error))  # a fresh one: re-raising the same would grow its traceback
        return self._box

    def _source_signature(self) -> object:
        from_env = os.environ.get(SECRET_KEY_ENV)
        if from_env:
            return ("env", from_env)
        try:
            stat = os.stat(self._key_file)
        except OSError as exc:
            return ("file", exc.errno)
        return ("file", stat.st_ino, stat.st_size, stat.st_mtime_ns)
