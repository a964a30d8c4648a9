"""Password encryption at rest: key file creation, the environment override, deferred loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.errors import CollectorError, ConfigError
from supervisor.secret_box import SECRET_KEY_ENV, DeferredSecretBox, SecretBox


def test_key_file_is_created_0600_and_round_trips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_KEY_ENV, raising=False)
    key_file = tmp_path / "var" / "secret.key"
    token = SecretBox.load(str(key_file)).encrypt("pa;ss}")
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert "pa;ss}" not in token
    assert SecretBox.load(str(key_file), create=False).decrypt(token) == "pa;ss}"


def test_a_different_key_cannot_decrypt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_KEY_ENV, raising=False)
    token = SecretBox.load(str(tmp_path / "a.key")).encrypt("x")
    with pytest.raises(CollectorError, match="secret key differs"):
        SecretBox.load(str(tmp_path / "b.key")).decrypt(token)


def test_invalid_key_from_environment_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_KEY_ENV, "not-a-key")
    with pytest.raises(ConfigError, match="not a valid Fernet key"):
        SecretBox.load(str(tmp_path / "unused.key"))


def test_deferred_box_needs_the_key_only_when_a_password_is_decrypted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_KEY_ENV, raising=False)
    missing = DeferredSecretBox(str(tmp_path / "missing.key"))  # building it reads nothing
    with pytest.raises(CollectorError, match=r"secret key file .* is missing"):
        missing.decrypt("token")
    assert not (tmp_path / "missing.key").exists()

    token = SecretBox.load(str(tmp_path / "present.key")).encrypt("pw")
    assert DeferredSecretBox(str(tmp_path / "present.key")).decrypt(token) == "pw"


def test_no_libcrypto_is_a_config_error_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from supervisor import fernet

    monkeypatch.setattr(fernet, "_loaded", None)
    monkeypatch.setattr(fernet, "LIBCRYPTO_NAMES", ("libcrypto-that-is-not-there.so.9",))
    monkeypatch.setattr(fernet.ctypes.util, "find_library", lambda name: None)
    monkeypatch.delenv(SECRET_KEY_ENV, raising=False)
    with pytest.raises(ConfigError, match=r"cannot encrypt or decrypt passwords: cannot load OpenSSL's libcrypto \("
                       r"libcrypto-that-is-not-there.so.9: cannot open"):
        SecretBox.load(str(tmp_path / "k.key"))
