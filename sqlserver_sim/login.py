"""PRELOGIN ([MS-TDS] 2.2.6.5) and LOGIN7 ([MS-TDS] 2.2.6.4) messages."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sqlserver_sim.packets import ProtocolError

# PRELOGIN option tokens
PL_VERSION = 0x00
PL_ENCRYPTION = 0x01
PL_INSTOPT = 0x02
PL_THREADID = 0x03
PL_MARS = 0x04
PL_FEDAUTHREQUIRED = 0x06
PL_TERMINATOR = 0xFF

# ENCRYPTION option values
ENCRYPT_OFF = 0x00
ENCRYPT_ON = 0x01
ENCRYPT_NOT_SUP = 0x02
ENCRYPT_REQ = 0x03

_LOGIN_FIXED = struct.Struct("<IIIIIIBBBBiI")
_LOGIN_FIELDS = ("host_name", "user_name", "password", "app_name", "server_name", "extension",
                 "library_name", "language", "database")
_OPTION_FLAGS3_EXTENSION = 0x10


def parse_prelogin(payload: bytes) -> dict[int, bytes]:
    """Return the options of a client PRELOGIN message, keyed by option token."""
    options: dict[int, bytes] = {}
    position = 0
    while position < len(payload) and payload[position] != PL_TERMINATOR:
        if position + 5 > len(payload):
            raise ProtocolError("truncated PRELOGIN option table")
        token, offset, length = struct.unpack_from(">BHH", payload, position)
        options[token] = payload[offset:offset + length]
        position += 5
    return options


def build_prelogin_response(version: tuple[int, int, int], encryption: int,
                            fedauth_required: int | None = None) -> bytes:
    """``fedauth_required``: the FEDAUTHREQUIRED option's value (only when the client sent the option)."""
    major, minor, build = version
    values = [
        (PL_VERSION, bytes((major & 0xFF, minor & 0xFF)) + struct.pack(">HH", build & 0xFFFF, 0)),
        (PL_ENCRYPTION, bytes((encryption,))),
        (PL_INSTOPT, b"\x00"),
        (PL_THREADID, b""),
        (PL_MARS, b"\x00"),
    ]
    if fedauth_required is not None:
        values.append((PL_FEDAUTHREQUIRED, bytes((fedauth_required,))))
    table = bytearray()
    data = bytearray()
    offset = len(values) * 5 + 1
    for token, value in values:
        table += struct.pack(">BHH", token, offset + len(data), len(value))
        data += value
    return bytes(table) + bytes((PL_TERMINATOR,)) + bytes(data)


def decode_password(data: bytes) -> str:
    """Undo the LOGIN7 password scrambling: XOR each byte with 0xA5, then swap its nibbles."""
    plain = bytes(_swap_nibbles(b ^ 0xA5) for b in data)
    return plain.decode("utf-16-le")


def encode_password(password: str) -> bytes:
    """The client side of :func:`decode_password` (used by tests)."""
    data = password.encode("utf-16-le")
    return bytes(_swap_nibbles(b) ^ 0xA5 for b in data)


def _swap_nibbles(value: int) -> int:
    return ((value << 4) & 0xF0) | (value >> 4)


@dataclass(frozen=True)
class Login7:
    tds_version: int
    packet_size: int
    host_name: str
    user_name: str
    password: str
    app_name: str
    server_name: str
    library_name: str
    language: str
    database: str
    features: tuple[int, ...]
    #: FeatureExt id -> its data (FEDAUTH carries the access token).
    feature_data: tuple[tuple[int, bytes], ...] = ()

    def feature(self, feature_id: int) -> bytes | None:
        return next((data for fid, data in self.feature_data if fid == feature_id), None)


def parse_login7(payload: bytes) -> Login7:
    if len(payload) < 94:
        raise ProtocolError("LOGIN7 shorter than its fixed part")
    (_length, tds_version, packet_size, _client_version, _pid, _connection_id, _flags1, _flags2,
     _type_flags, flags3, _timezone, _lcid) = _LOGIN_FIXED.unpack_from(payload, 0)
    texts: dict[str, str] = {}
    raw: dict[str, bytes] = {}
    for index, name in enumerate(_LOGIN_FIELDS):
        offset, length = struct.unpack_from("<HH", payload, 36 + index * 4)
        if name == "extension":
            raw[name] = payload[offset:offset + length]
            continue
        data = payload[offset:offset + length * 2]
        raw[name] = data
        if name != "password":
            texts[name] = data.decode("utf-16-le", errors="replace")
    features: tuple[tuple[int, bytes], ...] = ()
    if flags3 & _OPTION_FLAGS3_EXTENSION and len(raw["extension"]) >= 4:
        features = _features(payload, struct.unpack("<I", raw["extension"][:4])[0])
    return Login7(
        tds_version=tds_version,
        packet_size=packet_size,
        password=decode_password(raw["password"]),
        features=tuple(feature for feature, _data in features),
        feature_data=features,
        **texts,
    )


def _features(payload: bytes, offset: int) -> tuple[tuple[int, bytes], ...]:
    found: list[tuple[int, bytes]] = []
    while offset < len(payload) and payload[offset] != 0xFF:
        if offset + 5 > len(payload):
            break
        feature, length = struct.unpack_from("<BI", payload, offset)
        found.append((feature, payload[offset + 5:offset + 5 + length]))
        offset += 5 + length
    return tuple(found)
