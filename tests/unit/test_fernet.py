"""supervisor.fernet against cryptography's Fernet (the reference, which the simulator's TLS still needs): tokens
go both ways, and every way a token or a key can be wrong is refused, the OpenSSL error queue left empty."""

from __future__ import annotations

import base64
import ctypes
import hashlib
import hmac
import struct

import pytest
from cryptography.fernet import Fernet as Reference
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given
from hypothesis import strategies as st

from supervisor.fernet import Fernet, InvalidToken, generate_key, libcrypto

KEY = base64.urlsafe_b64encode(bytes(range(32)))  # fixed: test ids hold it, and every xdist worker collects the same


@given(st.binary(max_size=100))
def test_tokens_go_both_ways_with_the_reference(message: bytes) -> None:
    assert Reference(KEY).decrypt(Fernet(KEY).encrypt(message)) == message
    assert Fernet(KEY).decrypt(Reference(KEY).encrypt(message)) == message


def test_a_reference_key_works_and_a_token_is_fresh_each_time() -> None:
    key = Reference.generate_key()
    first, second = Fernet(key).encrypt(b"pw"), Fernet(key).encrypt(b"pw")
    assert first != second  # a new IV (and timestamp) per token
    assert Reference(key).decrypt(first) == Reference(key).decrypt(second) == b"pw"


def test_a_token_of_another_key_is_refused() -> None:
    with pytest.raises(InvalidToken):
        Fernet(generate_key()).decrypt(Reference(KEY).encrypt(b"pw"))


def test_every_altered_byte_and_every_truncation_is_refused() -> None:
    raw = base64.urlsafe_b64decode(Reference(KEY).encrypt(b"a password of some length"))
    for index in range(len(raw)):
        altered = bytearray(raw)
        altered[index] ^= 0x01
        with pytest.raises(InvalidToken):
            Fernet(KEY).decrypt(base64.urlsafe_b64encode(bytes(altered)))
    for length in range(len(raw)):
        with pytest.raises(InvalidToken):
            Fernet(KEY).decrypt(base64.urlsafe_b64encode(raw[:length]))


def signed(body: bytes, key: bytes = KEY) -> bytes:
    """``body`` with a valid HMAC under ``key``: reaches the checks after the HMAC's."""
    mac = hmac.new(base64.urlsafe_b64decode(key)[:16], body, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(body + mac)


def unpadded_block(plain: bytes, key: bytes = KEY) -> bytes:
    """One AES-CBC block of ``plain`` (16 bytes) under ``key``'s encryption half and a zero IV, no padding added."""
    encryptor = Cipher(algorithms.AES(base64.urlsafe_b64decode(key)[16:]), modes.CBC(bytes(16))).encryptor()
    return encryptor.update(plain) + encryptor.finalize()


def test_checks_behind_a_valid_hmac() -> None:
    header = struct.pack(">Q", 0) + bytes(16)
    cases = {
        "another version": b"\x81" + header + unpadded_block(bytes([16]) * 16),
        "no ciphertext": b"\x80" + header,
        "ciphertext not whole blocks": b"\x80" + header + bytes(17),
        "bad padding": b"\x80" + header + unpadded_block(bytes(16)),  # ends in 0x00: no PKCS#7 padding
    }
    assert Fernet(KEY).decrypt(signed(b"\x80" + header + unpadded_block(bytes([16]) * 16))) == b""  # the control
    for name, body in cases.items():
        assert base64.urlsafe_b64decode(signed(body))[-32:]  # well formed otherwise
        with pytest.raises(InvalidToken):
            Fernet(KEY).decrypt(signed(body))
        assert _peek_error() == 0, name  # left nothing for the ssl module or the drivers on this thread


def _peek_error() -> int:
    peek = ctypes.CDLL(libcrypto().library_name).ERR_peek_error
    peek.restype = ctypes.c_ulong
    return int(peek())


@pytest.mark.parametrize("token", [b"", b"not base64 at all!", "\u00e9".encode(), b"gA" * 3])
def test_what_is_no_token_is_refused(token: bytes) -> None:
    with pytest.raises(InvalidToken):
        Fernet(KEY).decrypt(token)


@pytest.mark.parametrize("key", [b"", b"short", KEY[:-4], KEY + b"AAAA", b"\xff" + KEY, KEY[:10] + b" " + KEY[10:],
                                 base64.urlsafe_b64encode(bytes(31)), base64.urlsafe_b64encode(bytes(33))])
def test_what_is_no_key_is_refused(key: bytes) -> None:
    with pytest.raises(ValueError, match="32 url-safe base64-encoded bytes"):
        Fernet(key)
