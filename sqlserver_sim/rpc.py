"""Parsing of request payloads: ALL_HEADERS, SQL batch text, RPC calls and their parameter values."""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass, field
from decimal import Decimal

from sqlserver_sim.packets import ProtocolError
from sqlserver_sim.tokens import decode_datetime2

# Well-known procedure ids (NameLenProcID = 0xFFFF)
PROC_IDS = {
    1: "sp_cursor", 2: "sp_cursoropen", 3: "sp_cursorprepare", 4: "sp_cursorexecute",
    5: "sp_cursorprepexec", 6: "sp_cursorunprepare", 7: "sp_cursorfetch", 8: "sp_cursoroption",
    9: "sp_cursorclose", 10: "sp_executesql", 11: "sp_prepare", 12: "sp_execute",
    13: "sp_prepexec", 14: "sp_prepexecrpc", 15: "sp_unprepare",
}

_FIXED_LENGTHS = {0x1F: 0, 0x30: 1, 0x32: 1, 0x34: 2, 0x38: 4, 0x3A: 4, 0x3B: 4, 0x7A: 4,
                  0x3C: 8, 0x3D: 8, 0x3E: 8, 0x7F: 8}
_BYTELEN_TYPES = {0x24, 0x26, 0x68, 0x6D, 0x6E, 0x6F, 0x6A, 0x6C, 0x37, 0x3F}
_SCALED_TYPES = {0x29, 0x2A, 0x2B}  # time, datetime2, datetimeoffset
_DATE = 0x28
_USHORT_CHAR_TYPES = {0xA7, 0xAF, 0xE7, 0xEF}
_USHORT_BINARY_TYPES = {0xA5, 0xAD}
_LONG_TYPES = {0x22, 0x23, 0x63}  # image, text, ntext
_XML = 0xF1
_UNICODE = {0xE7, 0xEF, 0x63}


@dataclass(frozen=True)
class TypeInfo:
    code: int
    length: int = 0
    scale: int = 0
    plp: bool = False


@dataclass
class RpcCall:
    name: str  # "sp_executesql" for well-known ids
    flags: int
    params: list[tuple[str, object]] = field(default_factory=list)


class Cursor:
    def __init__(self, data: bytes, position: int = 0) -> None:
        self.data = data
        self.position = position

    def take(self, count: int) -> bytes:
        if self.position + count > len(self.data):
            raise ProtocolError("request ends inside a value")
        chunk = self.data[self.position:self.position + count]
        self.position += count
        return chunk

    def unpack(self, fmt: str) -> tuple[int, ...]:
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, self.take(size))

    def byte(self) -> int:
        return self.take(1)[0]

    def b_varchar(self) -> str:
        return self.take(self.byte() * 2).decode("utf-16-le")

    @property
    def at_end(self) -> bool:
        return self.position >= len(self.data)


def skip_all_headers(payload: bytes) -> int:
    """Offset of the data after ALL_HEADERS ([MS-TDS] 2.2.5.3); 0 when there are none."""
    if len(payload) < 4:
        return 0
    total = struct.unpack_from("<I", payload, 0)[0]
    if total < 4 or total > len(payload):
        return 0
    return total


def batch_text(payload: bytes) -> str:
    return payload[skip_all_headers(payload):].decode("utf-16-le", errors="replace")


def parse_rpc(payload: bytes) -> list[RpcCall]:
    cursor = Cursor(payload, skip_all_headers(payload))
    calls: list[RpcCall] = []
    while not cursor.at_end:
        (name_length,) = cursor.unpack("<H")
        if name_length == 0xFFFF:
            (proc_id,) = cursor.unpack("<H")
            name = PROC_IDS.get(proc_id, f"#{proc_id}")
        else:
            name = cursor.take(name_length * 2).decode("utf-16-le")
        (flags,) = cursor.unpack("<H")
        call = RpcCall(name, flags)
        calls.append(call)
        while not cursor.at_end:
            if cursor.data[cursor.position] in (0xFF, 0xFE):
                cursor.position += 1
                break
            param_name = cursor.b_varchar()
            cursor.byte()  # status flags
            type_info = read_type_info(cursor)
            call.params.append((param_name, read_value(cursor, type_info)))
    return calls


def read_type_info(cursor: Cursor) -> TypeInfo:
    code = cursor.byte()
    if code in _FIXED_LENGTHS:
        return TypeInfo(code, _FIXED_LENGTHS[code])
    if code in _BYTELEN_TYPES:
        length = cursor.byte()
        if code in (0x6A, 0x6C, 0x37, 0x3F):
            _precision, scale = cursor.take(2)
            return TypeInfo(code, length, scale)
        return TypeInfo(code, length)
    if code in _SCALED_TYPES:
        return TypeInfo(code, 0, cursor.byte())
    if code == _DATE:
        return TypeInfo(code, 3)
    if code in _USHORT_CHAR_TYPES or code in _USHORT_BINARY_TYPES:
        (length,) = cursor.unpack("<H")
        if code in _USHORT_CHAR_TYPES:
            cursor.take(5)
        return TypeInfo(code, length, plp=length == 0xFFFF)
    if code in _LONG_TYPES:
        (length,) = cursor.unpack("<i")
        if code != 0x22:
            cursor.take(5)
        return TypeInfo(code, length)
    if code == _XML:
        if cursor.byte():
            cursor.b_varchar()
            cursor.b_varchar()
            cursor.take(cursor.unpack("<H")[0] * 2)
        return TypeInfo(code, plp=True)
    raise ProtocolError(f"unsupported parameter type 0x{code:02X}")


def read_value(cursor: Cursor, info: TypeInfo) -> object:
    code = info.code
    if info.plp:
        data = _read_plp(cursor)
    elif code in _FIXED_LENGTHS:
        data = cursor.take(info.length)
    elif code in _USHORT_CHAR_TYPES or code in _USHORT_BINARY_TYPES:
        (length,) = cursor.unpack("<H")
        data = None if length == 0xFFFF else cursor.take(length)
    elif code in _LONG_TYPES:
        (length,) = cursor.unpack("<i")
        data = None if length < 0 else cursor.take(length)
    else:
        length = cursor.byte()
        data = None if length == 0 else cursor.take(length)
    if data is None or code == 0x1F:
        return None
    return _convert(code, info, data)


def _read_plp(cursor: Cursor) -> bytes | None:
    (total,) = cursor.unpack("<Q")
    if total == 0xFFFFFFFFFFFFFFFF:
        return None
    chunks: list[bytes] = []
    while True:
        (length,) = cursor.unpack("<I")
        if length == 0:
            return b"".join(chunks)
        chunks.append(cursor.take(length))


def _convert(code: int, info: TypeInfo, data: bytes) -> object:
    if code in _UNICODE:
        return data.decode("utf-16-le", errors="replace")
    if code in (0xA7, 0xAF, 0x23, _XML):
        return data.decode("utf-16-le" if code == _XML else "latin-1", errors="replace")
    if code in (0x30, 0x34, 0x38, 0x7F, 0x26):
        return int.from_bytes(data, "little", signed=len(data) > 1)
    if code in (0x32, 0x68):
        return bool(data[0])
    if code in (0x3B, 0x3E, 0x6D):
        return struct.unpack("<f" if len(data) == 4 else "<d", data)[0]
    if code in (0x6A, 0x6C, 0x37, 0x3F):
        magnitude = int.from_bytes(data[1:], "little")
        return Decimal(magnitude if data[0] else -magnitude).scaleb(-info.scale)
    if code == 0x2A:
        return decode_datetime2(data, info.scale)
    if code == _DATE:
        return dt.date.fromordinal(int.from_bytes(data, "little") + 1)
    return data


@dataclass(frozen=True)
class TransactionRequest:
    request_type: int
    begin_new: bool  # COMMIT/ROLLBACK with fBeginXact


TM_BEGIN_XACT = 5
TM_COMMIT_XACT = 7
TM_ROLLBACK_XACT = 8


def parse_transaction_request(payload: bytes) -> TransactionRequest:
    cursor = Cursor(payload, skip_all_headers(payload))
    (request_type,) = cursor.unpack("<H")
    begin_new = False
    if request_type in (TM_COMMIT_XACT, TM_ROLLBACK_XACT) and not cursor.at_end:
        cursor.b_varchar()
        if not cursor.at_end:
            begin_new = bool(cursor.byte() & 0x01)
    return TransactionRequest(request_type, begin_new)
