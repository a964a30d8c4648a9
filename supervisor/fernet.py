"""Fernet tokens (AES-128-CBC and HMAC-SHA256, the Fernet spec) on the OpenSSL libcrypto this process already has.

Token: ``0x80 | timestamp (8 bytes, big-endian) | IV (16) | ciphertext | HMAC (32)``, url-safe base64; key: 32
url-safe base64 bytes, the first 16 signing, the last 16 encrypting. Tokens are interchangeable with those of
``cryptography.fernet`` (which the tests check both ways). The HMAC is checked, in constant time, before any
decryption. AES comes from libcrypto through ctypes, and the HMAC from ``hmac``/``hashlib`` (the same
libcrypto): importing ``cryptography`` for this cost every process its own OpenSSL and Rust code.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import ctypes.util
import hashlib
import hmac
import os
import struct
import threading
import time
from typing import Any

VERSION = 0x80
KEY_BYTES = 32
BLOCK = 16
_IV_AT = 1 + 8  # after the version and the timestamp
_HEADER = _IV_AT + BLOCK
_MAC = 32
LIBCRYPTO_NAMES = ("libcrypto.so.3",)


class InvalidToken(Exception):
    """Not a token made with this key: wrong key, altered or truncated, or not a Fernet token at all."""


class LibcryptoMissing(RuntimeError):
    """OpenSSL's libcrypto could not be loaded."""


def generate_key() -> bytes:
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES))


class Fernet:
    def __init__(self, key: bytes) -> None:
        try:
            raw = base64.b64decode(key, altchars=b"-_", validate=True)  # strict: a stray byte is no key
        except (binascii.Error, ValueError, TypeError):
            raise ValueError("a Fernet key is 32 url-safe base64-encoded bytes") from None
        if len(raw) != KEY_BYTES:
            raise ValueError("a Fernet key is 32 url-safe base64-encoded bytes")
        self._signing_key, self._encryption_key = raw[:16], raw[16:]

    def encrypt(self, data: bytes) -> bytes:
        iv = os.urandom(BLOCK)
        ciphertext = _aes_128_cbc(self._encryption_key, iv, data, encrypt=True)
        if ciphertext is None:
            raise RuntimeError("libcrypto could not encrypt")
        signed = bytes([VERSION]) + struct.pack(">Q", int(time.time())) + iv + ciphertext
        return base64.urlsafe_b64encode(signed + self._mac(signed))

    def decrypt(self, token: bytes) -> bytes:
        data = token_bytes(token)
        if data is None:
            raise InvalidToken
        if not hmac.compare_digest(self._mac(data[:-_MAC]), data[-_MAC:]):
            raise InvalidToken
        plain = _aes_128_cbc(self._encryption_key, data[_IV_AT:_HEADER], data[_HEADER:-_MAC], encrypt=False)
        if plain is None:  # no ciphertext, or bad padding under a valid HMAC: not made by a Fernet encoder
            raise InvalidToken
        return plain

    def _mac(self, signed: bytes) -> bytes:
        return hmac.new(self._signing_key, signed, hashlib.sha256).digest()


def token_bytes(token: bytes) -> bytes | None:
    """The decoded token if it has a token's shape (version, whole blocks, room for the header and the HMAC);
    None for what is no Fernet token whatever the key."""
    try:
        data = base64.urlsafe_b64decode(token)
    except (binascii.Error, ValueError, TypeError):
        return None
    if len(data) < _HEADER + _MAC or data[0] != VERSION or (len(data) - _HEADER - _MAC) % BLOCK:
        return None
    return data


class _Libcrypto:
    """The few EVP functions AES-CBC needs, looked up once."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.library_name: str = lib._name
        c_void_p, c_int, c_char_p = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
        int_p = ctypes.POINTER(c_int)
        self.ctx_new = _function(lib, "EVP_CIPHER_CTX_new", c_void_p, [])
        self.ctx_free = _function(lib, "EVP_CIPHER_CTX_free", None, [c_void_p])
        self.aes_128_cbc = _function(lib, "EVP_aes_128_cbc", c_void_p, [])
        self.init = _function(lib, "EVP_CipherInit_ex", c_int,
                              [c_void_p, c_void_p, c_void_p, c_char_p, c_char_p, c_int])
        self.update = _function(lib, "EVP_CipherUpdate", c_int, [c_void_p, c_void_p, int_p, c_char_p, c_int])
        self.final = _function(lib, "EVP_CipherFinal_ex", c_int, [c_void_p, c_void_p, int_p])
        self.clear_errors = _function(lib, "ERR_clear_error", None, [])


def _function(lib: ctypes.CDLL, name: str, restype: object, argtypes: list[object]) -> Any:
    function = getattr(lib, name)
    function.restype, function.argtypes = restype, argtypes
    return function


_lock = threading.Lock()
_loaded: _Libcrypto | None = None


def libcrypto() -> _Libcrypto:
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = _Libcrypto(_open_libcrypto())
        return _loaded


def _open_libcrypto() -> ctypes.CDLL:
    errors = []
    for name in (*LIBCRYPTO_NAMES, ctypes.util.find_library("crypto")):
        if not name:
            continue
        try:
            return ctypes.CDLL(name)
        except OSError as exc:
            errors.append(str(exc))
    raise LibcryptoMissing("cannot load OpenSSL's libcrypto (" + "; ".join(errors or ["not found"]) + ")")


def _aes_128_cbc(key: bytes, iv: bytes, data: bytes, *, encrypt: bool) -> bytes | None:
    """PKCS#7-padded AES-128-CBC of ``data``; None where libcrypto refuses (e.g. bad padding when decrypting)."""
    lib = libcrypto()
    ctx = lib.ctx_new()
    if not ctx:
        raise MemoryError("EVP_CIPHER_CTX_new")
    try:
        out = ctypes.create_string_buffer(len(data) + BLOCK)
        tail = ctypes.create_string_buffer(BLOCK)
        written, tail_written = ctypes.c_int(0), ctypes.c_int(0)
        if (lib.init(ctx, lib.aes_128_cbc(), None, key, iv, 1 if encrypt else 0) != 1
                or lib.update(ctx, out, ctypes.byref(written), data, len(data)) != 1
                or lib.final(ctx, tail, ctypes.byref(tail_written)) != 1):
            lib.clear_errors()  # the thread's OpenSSL error queue is shared with the ssl module and the drivers
            return None
        return out.raw[: written.value] + tail.raw[: tail_written.value]
    finally:
        lib.ctx_free(ctx)
