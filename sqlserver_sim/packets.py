"""TDS packet framing ([MS-TDS] 2.2.3): 8-byte headers, messages split into packets."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

HEADER = struct.Struct(">BBHHBB")
HEADER_SIZE = HEADER.size

# Packet types
SQL_BATCH = 0x01
RPC = 0x03
TABULAR_RESULT = 0x04
ATTENTION = 0x06
TRANSACTION_MANAGER = 0x0E
LOGIN7 = 0x10
PRELOGIN = 0x12

# Status bits
STATUS_EOM = 0x01
STATUS_RESET_CONNECTION = 0x08

DEFAULT_PACKET_SIZE = 4096
MIN_PACKET_SIZE = 512
MAX_PACKET_SIZE = 32767
#: Refuse messages larger than this (a client sending garbage must not exhaust memory).
MAX_MESSAGE_SIZE = 64 * 1024 * 1024


class ProtocolError(Exception):
    """The peer sent something that is not TDS."""


@dataclass(frozen=True)
class Message:
    type: int
    payload: bytes
    status: int = STATUS_EOM


def encode_packets(packet_type: int, payload: bytes, packet_size: int, *, final: bool = True,
                   spid: int = 0, first_packet_id: int = 1) -> bytes:
    """Split ``payload`` into packets; the last one carries EOM when ``final``."""
    chunk = packet_size - HEADER_SIZE
    out = bytearray()
    packet_id = first_packet_id
    offset = 0
    while True:
        piece = payload[offset:offset + chunk]
        offset += len(piece)
        last = offset >= len(payload)
        status = STATUS_EOM if (last and final) else 0
        out += HEADER.pack(packet_type, status, len(piece) + HEADER_SIZE, spid, packet_id & 0xFF, 0)
        out += piece
        packet_id += 1
        if last:
            return bytes(out)


def decode_header(header: bytes) -> tuple[int, int, int]:
    """Return (type, status, length) of a packet header."""
    packet_type, status, length, _spid, _packet_id, _window = HEADER.unpack(header)
    if length < HEADER_SIZE:
        raise ProtocolError(f"packet length {length} shorter than its header")
    return packet_type, status, length


async def read_message(reader: asyncio.StreamReader, prefix: bytes = b"") -> Message | None:
    """Read packets up to the one with EOM; None on a clean end of stream before a message.

    ``prefix``: bytes of the first header already taken off the stream.
    """
    parts: list[bytes] = []
    size = 0
    first_type: int | None = None
    while True:
        try:
            header = prefix + await reader.readexactly(HEADER_SIZE - len(prefix))
            prefix = b""
        except asyncio.IncompleteReadError as exc:
            if not exc.partial and first_type is None:
                return None
            raise ProtocolError("connection closed inside a packet") from exc
        packet_type, status, length = decode_header(header)
        if first_type is None:
            first_type = packet_type
        body = await reader.readexactly(length - HEADER_SIZE)
        size += len(body)
        if size > MAX_MESSAGE_SIZE:
            raise ProtocolError("message too large")
        parts.append(body)
        if status & STATUS_EOM:
            return Message(first_type, b"".join(parts), status)


def parse_messages(buffer: bytearray) -> list[Message]:
    """Take complete messages off the front of ``buffer`` (used where a byte stream arrives in pieces)."""
    messages: list[Message] = []
    while True:
        parts: list[bytes] = []
        offset = 0
        first_type: int | None = None
        complete = False
        while len(buffer) - offset >= HEADER_SIZE:
            packet_type, status, length = decode_header(bytes(buffer[offset:offset + HEADER_SIZE]))
            if len(buffer) - offset < length:
                break
            if first_type is None:
                first_type = packet_type
            parts.append(bytes(buffer[offset + HEADER_SIZE:offset + length]))
            offset += length
            if status & STATUS_EOM:
                complete = True
                break
        if not complete or first_type is None:
            return messages
        del buffer[:offset]
        messages.append(Message(first_type, b"".join(parts)))
