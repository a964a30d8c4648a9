"""A minimal blocking TDS client over a raw socket, to see exactly what the simulator answers and when.

Also: finding this process's own sockets to a port, so that a test can unblock a driver call stuck on
a stalled server by shutting the driver's socket down; and the server ends of connections to ``HOST``:port,
to see a session left open. Only those on ``HOST`` count: other programs on this machine (the benchmarks)
listen on the same port numbers on other loopback addresses (127.77.x.y).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import ssl
import struct
from pathlib import Path

from sqlserver_sim import login, packets, tokens

HOST = "127.0.0.1"
_LOGIN_FIXED = struct.Struct("<IIIIIIBBBBiI")
_TCP_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
_TCP_LISTEN = "0A"
_TCP_TIME_WAIT = "06"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_HOST_ADDRESS = ipaddress.ip_address(HOST)


def prelogin_payload(encryption: int = login.ENCRYPT_NOT_SUP) -> bytes:
    values = [(login.PL_VERSION, bytes(6)), (login.PL_ENCRYPTION, bytes((encryption,)))]
    table, data = bytearray(), bytearray()
    offset = len(values) * 5 + 1
    for token, value in values:
        table += struct.pack(">BHH", token, offset + len(data), len(value))
        data += value
    return bytes(table) + b"\xff" + bytes(data)


def login7_payload(user: str, password: str) -> bytes:
    texts = {"host_name": "raw", "user_name": user, "password": password, "app_name": "rawtds",
             "server_name": HOST, "extension": "", "library_name": "rawtds", "language": "", "database": ""}
    offset, pairs, data = 94, bytearray(), bytearray()
    for name, text in texts.items():
        encoded = login.encode_password(text) if name == "password" else text.encode("utf-16-le")
        pairs += struct.pack("<HH", offset + len(data), len(text))
        data += encoded
    fixed = _LOGIN_FIXED.pack(94 + len(data), 0x74000004, 4096, 0, os.getpid(), 0, 0, 0, 0, 0, 0, 0x409)
    tail = bytes(6) + struct.pack("<HHHHHHI", 0, 0, 0, 0, 0, 0, 0)  # ClientID, SSPI, AtchDBFile, ChangePassword
    return fixed + pairs + tail + data


def all_headers() -> bytes:
    transaction = struct.pack("<IHQI", 18, 2, 0, 1)
    return struct.pack("<I", 4 + len(transaction)) + transaction


def rpc_payload(procedure: str) -> bytes:
    name = procedure.encode("utf-16-le")
    return all_headers() + struct.pack("<H", len(procedure)) + name + struct.pack("<H", 0)


def batch_payload(text: str) -> bytes:
    return all_headers() + text.encode("utf-16-le")


class RawClient:
    """One TDS connection; every read has a timeout, so that silence is something a test can see."""

    def __init__(self, port: int, host: str = HOST, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.port = port

    def send(self, packet_type: int, payload: bytes) -> None:
        self.sock.sendall(packets.encode_packets(packet_type, payload, 4096))

    def attention(self) -> None:
        self.sock.sendall(packets.HEADER.pack(packets.ATTENTION, packets.STATUS_EOM, 8, 0, 1, 0))

    def read_message(self, timeout: float = 5.0) -> tuple[int, bytes]:
        """(type, payload) of the next whole message; TimeoutError when it does not come in time."""
        self.sock.settimeout(timeout)
        parts, first_type = [], None
        while True:
            packet_type, status, length = packets.decode_header(self._exactly(packets.HEADER_SIZE))
            first_type = packet_type if first_type is None else first_type
            parts.append(self._exactly(length - packets.HEADER_SIZE))
            if status & packets.STATUS_EOM:
                return first_type, b"".join(parts)

    def read_available(self, quiet: float = 0.5) -> bytes:
        """Everything that arrives until nothing has come for ``quiet`` seconds (b"" if nothing did)."""
        self.sock.settimeout(quiet)
        data = bytearray()
        while True:
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return bytes(data)
            if not chunk:
                raise ConnectionError(f"server closed after {len(data)} bytes")
            data += chunk

    def _exactly(self, count: int) -> bytes:
        data = bytearray()
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError("server closed the connection")
            data += chunk
        return bytes(data)

    def prelogin(self, encryption: int = login.ENCRYPT_NOT_SUP) -> dict[int, bytes]:
        self.send(packets.PRELOGIN, prelogin_payload(encryption))
        packet_type, payload = self.read_message()
        assert packet_type == packets.TABULAR_RESULT
        return login.parse_prelogin(payload)

    def login(self, user: str, password: str) -> bytes:
        """PRELOGIN (no encryption) and LOGIN7; the login reply's tokens (LOGINACK checked)."""
        self.prelogin()
        self.send(packets.LOGIN7, login7_payload(user, password))
        _type, payload = self.read_message()
        assert bytes((tokens.LOGINACK,)) in payload, payload[:64]
        return payload

    def client_hello(self) -> bytes:
        """A TLS ClientHello (what a TDS 7.x client sends, wrapped in PRELOGIN packets, after ENCRYPT_ON)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing)
        with contextlib.suppress(ssl.SSLWantReadError):
            tls.do_handshake()
        return outgoing.read()

    @property
    def local_port(self) -> int:
        return int(self.sock.getsockname()[1])

    def close(self) -> None:
        self.sock.close()


def unframe(data: bytes) -> tuple[bytes, list[int]]:
    """The payload carried by a run of whole TDS packets, and each packet's status byte."""
    payload, statuses, position = bytearray(), [], 0
    while position < len(data):
        _type, status, length = packets.decode_header(data[position:position + packets.HEADER_SIZE])
        assert position + length <= len(data), "a packet cut short"
        payload += data[position + packets.HEADER_SIZE:position + length]
        statuses.append(status)
        position += length
    return bytes(payload), statuses


def is_attention_ack(payload: bytes) -> bool:
    """A message ending with a DONE token whose status has the ATTN bit."""
    return (len(payload) >= 13 and payload[-13] == tokens.DONE
            and bool(struct.unpack_from("<H", payload, len(payload) - 12)[0] & tokens.DONE_ATTN))


def server_side_open(server_port: int, client_port: int) -> bool:
    """Whether the server's end of the connection (server_port <- client_port) still exists, not
    closed by the server (e.g. in CLOSE_WAIT after the client left: a leaked session)."""
    for host, local, remote, state, _inode in _tcp_entries():
        if host == _HOST_ADDRESS and local == server_port and remote == client_port and state != _TCP_TIME_WAIT:
            return True
    return False


def server_side_connections(server_port: int) -> int:
    """How many connections accepted on ``server_port`` the server has not closed yet."""
    return sum(1 for host, local, _remote, state, _inode in _tcp_entries()
               if host == _HOST_ADDRESS and local == server_port and state not in (_TCP_LISTEN, _TCP_TIME_WAIT))


def own_sockets_to(port: int) -> list[int]:
    """File descriptors of this process's TCP sockets whose peer port is ``port``."""
    inodes = {inode for _host, _local, remote, _state, inode in _tcp_entries() if remote == port}
    found = []
    for entry in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(entry)
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            found.append(int(entry.name))
    return found


def shut_down_own_sockets_to(port: int) -> int:
    """shutdown(SHUT_RDWR) every socket of this process to ``port`` (a driver blocked on it wakes up
    with an error); the driver keeps its descriptors. How many were shut down."""
    count = 0
    for fd in own_sockets_to(port):
        try:
            duplicate = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        with duplicate:
            try:
                duplicate.shutdown(socket.SHUT_RDWR)
                count += 1
            except OSError:
                pass
    return count


def _tcp_entries() -> list[tuple[IPAddress, int, int, str, str]]:
    """(local address, local port, remote port, state, inode) of every TCP socket of this network namespace."""
    entries = []
    for table in _TCP_TABLES:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            address, port = local.rsplit(":", 1)
            entries.append((_address(address), int(port, 16), int(remote.rsplit(":", 1)[1], 16), state, inode))
    return entries


def _address(hex_address: str) -> IPAddress:
    """An address as /proc/net/tcp* shows it: 32-bit words in host (little-endian) byte order; an
    IPv4-mapped IPv6 address as its IPv4 address."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    if len(words) == 4:
        return ipaddress.IPv4Address(words)
    address = ipaddress.IPv6Address(words)
    return address.ipv4_mapped or address
