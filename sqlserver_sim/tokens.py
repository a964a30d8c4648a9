"""Encoding of TDS tokens ([MS-TDS] 2.2.7) and of column types / values in result sets."""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property

# Token types
COLMETADATA = 0x81
ERROR = 0xAA
INFO = 0xAB
RETURNVALUE = 0xAC
LOGINACK = 0xAD
ROW = 0xD1
ENVCHANGE = 0xE3
DONE = 0xFD
DONEPROC = 0xFE
DONEINPROC = 0xFF
RETURNSTATUS = 0x79

# DONE status bits
DONE_FINAL = 0x00
DONE_MORE = 0x01
DONE_ERROR = 0x02
DONE_COUNT = 0x10
DONE_ATTN = 0x20

# DONE CurCmd values SQL Server uses
CMD_SELECT = 0xC1
CMD_EXECUTE = 0xE0
CMD_NONE = 0x00

# ENVCHANGE types
ENV_DATABASE = 1
ENV_LANGUAGE = 2
ENV_PACKET_SIZE = 4
ENV_COLLATION = 7
ENV_BEGIN_TRAN = 8
ENV_COMMIT_TRAN = 9
ENV_ROLLBACK_TRAN = 10

#: SQL_Latin1_General_CP1_CI_AS
COLLATION = bytes.fromhex("0904d00034")

_DATE_EPOCH = dt.date(1, 1, 1).toordinal()
_TICKS_PER_SECOND = 10_000_000


def b_varchar(text: str) -> bytes:
    data = text.encode("utf-16-le")
    return bytes((len(data) // 2,)) + data


def us_varchar(text: str) -> bytes:
    data = text.encode("utf-16-le")
    return struct.pack("<H", len(data) // 2) + data


def b_varbyte(data: bytes) -> bytes:
    return bytes((len(data),)) + data


def encode_datetime2(value: dt.datetime, scale: int = 7) -> bytes:
    """datetime2(scale) without its length byte: time in 10**-scale s units, then days since 0001-01-01."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    seconds = value.hour * 3600 + value.minute * 60 + value.second
    ticks = (seconds * _TICKS_PER_SECOND + value.microsecond * 10) // 10 ** (7 - scale)
    time_bytes = ticks.to_bytes(_time_length(scale), "little")
    days = value.toordinal() - _DATE_EPOCH
    return time_bytes + days.to_bytes(3, "little")


def decode_datetime2(data: bytes, scale: int = 7) -> dt.datetime:
    time_length = _time_length(scale)
    ticks = int.from_bytes(data[:time_length], "little") * 10 ** (7 - scale)
    days = int.from_bytes(data[time_length:time_length + 3], "little")
    day = dt.datetime.fromordinal(days + _DATE_EPOCH)
    return day + dt.timedelta(microseconds=ticks // 10)


def _time_length(scale: int) -> int:
    return 3 if scale <= 2 else 4 if scale <= 4 else 5


class Kind(Enum):
    """Column types the simulator can return."""

    TINYINT = 1
    SMALLINT = 2
    INT = 4
    BIGINT = 8
    BIT = 0x68
    FLOAT = 0x6D
    NVARCHAR = 0xE7
    DATETIME2 = 0x2A


_INT_FORMATS = {Kind.TINYINT: "<B", Kind.SMALLINT: "<h", Kind.INT: "<i", Kind.BIGINT: "<q"}
_PLP_NULL = b"\xff" * 8


@dataclass(frozen=True)
class ColumnDef:
    name: str
    kind: Kind
    nullable: bool = True
    length: int = 0  # NVARCHAR: characters; 0 means nvarchar(max)

    @cached_property
    def type_info(self) -> bytes:
        if self.kind in _INT_FORMATS:
            return bytes((0x26, self.kind.value))
        if self.kind is Kind.BIT:
            return b"\x68\x01"
        if self.kind is Kind.FLOAT:
            return b"\x6d\x08"
        if self.kind is Kind.DATETIME2:
            return b"\x2a\x07"
        max_bytes = 0xFFFF if self.is_plp else self.length * 2
        return b"\xe7" + struct.pack("<H", max_bytes) + COLLATION

    @property
    def is_plp(self) -> bool:
        return self.kind is Kind.NVARCHAR and not 0 < self.length <= 4000

    def encode_value(self, value: object) -> bytes:
        kind = self.kind
        if kind is Kind.NVARCHAR:
            if value is None:
                return _PLP_NULL if self.is_plp else b"\xff\xff"
            data = str(value).encode("utf-16-le")
            if self.is_plp:
                chunk = struct.pack("<I", len(data)) + data if data else b""
                return struct.pack("<Q", len(data)) + chunk + b"\x00\x00\x00\x00"
            return struct.pack("<H", len(data)) + data
        if value is None:
            return b"\x00"
        if kind in _INT_FORMATS:
            return bytes((kind.value,)) + struct.pack(_INT_FORMATS[kind], value)
        if kind is Kind.BIT:
            return b"\x01" + (b"\x01" if value else b"\x00")
        if kind is Kind.FLOAT:
            return b"\x08" + struct.pack("<d", value)
        if not isinstance(value, dt.datetime):
            raise TypeError(f"{self.name}: datetime2 needs a datetime, got {value!r}")
        return b"\x08" + encode_datetime2(value)


def colmetadata(columns: Sequence[ColumnDef]) -> bytes:
    out = bytearray((COLMETADATA,))
    out += struct.pack("<H", len(columns))
    for column in columns:
        flags = 0x01 if column.nullable else 0x00
        out += struct.pack("<IH", 0, flags) + column.type_info + b_varchar(column.name)
    return bytes(out)


def row(columns: Sequence[ColumnDef], values: Sequence[object]) -> bytes:
    return bytes((ROW,)) + b"".join(c.encode_value(v) for c, v in zip(columns, values, strict=True))


def done(status: int = DONE_FINAL, cur_cmd: int = CMD_NONE, row_count: int = 0, token: int = DONE) -> bytes:
    return struct.pack("<BHHQ", token, status, cur_cmd, row_count)


def message(token: int, number: int, text: str, severity: int, *, state: int = 1, server: str = "",
            procedure: str = "", line: int = 1) -> bytes:
    body = (struct.pack("<iBB", number, state, severity) + us_varchar(text) + b_varchar(server)
            + b_varchar(procedure) + struct.pack("<i", line))
    return struct.pack("<BH", token, len(body)) + body


def error(number: int, text: str, severity: int = 16, **kwargs: object) -> bytes:
    return message(ERROR, number, text, severity, **kwargs)  # type: ignore[arg-type]


def info(number: int, text: str, severity: int = 0, **kwargs: object) -> bytes:
    return message(INFO, number, text, severity, **kwargs)  # type: ignore[arg-type]


def envchange_text(env_type: int, new: str, old: str = "") -> bytes:
    body = bytes((env_type,)) + b_varchar(new) + b_varchar(old)
    return struct.pack("<BH", ENVCHANGE, len(body)) + body


def envchange_bytes(env_type: int, new: bytes, old: bytes = b"") -> bytes:
    body = bytes((env_type,)) + b_varbyte(new) + b_varbyte(old)
    return struct.pack("<BH", ENVCHANGE, len(body)) + body


def loginack(program: str, version: tuple[int, int, int]) -> bytes:
    major, minor, build = version
    body = (b"\x01" + b"\x74\x00\x00\x04" + b_varchar(program)
            + bytes((major & 0xFF, minor & 0xFF)) + struct.pack(">H", build & 0xFFFF))
    return struct.pack("<BH", LOGINACK, len(body)) + body


def returnstatus(value: int = 0) -> bytes:
    return struct.pack("<Bi", RETURNSTATUS, value)


def returnvalue_int(ordinal: int, name: str, value: int | None) -> bytes:
    column = ColumnDef(name, Kind.INT)
    return (struct.pack("<BH", RETURNVALUE, ordinal) + b_varchar(name) + b"\x01"
            + struct.pack("<IH", 0, 0x01) + column.type_info + column.encode_value(value))


@dataclass
class ResultTable:
    """One result set: its columns and rows."""

    columns: Sequence[ColumnDef]
    rows: Sequence[Sequence[object]] = field(default_factory=list)

    def encode(self) -> bytes:
        return colmetadata(self.columns) + b"".join(row(self.columns, r) for r in self.rows)
