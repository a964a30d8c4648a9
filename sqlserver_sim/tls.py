"""TLS for simulated servers: a generated self-signed certificate and encrypted channels.

TDS 7.x ([MS-TDS] 3.2.5.2/3.3.5.3): after PRELOGIN the TLS handshake travels as the payload of
PRELOGIN (0x12) packets; afterwards TLS records go straight over the socket, carrying TDS packets.
A ``tls`` server answers ENCRYPT_ON to clients asking for encryption and ENCRYPT_REQ to the others
(like "Force Encryption"), so the whole session is encrypted. TDS 8.0 (Driver 18 ``Encrypt=strict``):
TLS from the first byte (ALPN ``tds/8.0``), PRELOGIN and everything else inside it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sqlserver_sim.packets import DEFAULT_PACKET_SIZE, PRELOGIN, ProtocolError, encode_packets, read_message

CERTIFICATE_NAME = "sqlserver-sim.crt"
KEY_NAME = "sqlserver-sim.key"


def write_self_signed(certificate_path: Path, key_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    alternative_names = [x509.DNSName("localhost")] + [
        x509.IPAddress(ipaddress.ip_address(f"127.0.0.{i}")) for i in range(1, 9)]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    certificate_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


class CertificateStore:
    """The simulator's certificate, generated on first use in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.certificate_path = directory / CERTIFICATE_NAME
        self.key_path = directory / KEY_NAME
        self._contexts: tuple[ssl.SSLContext, ssl.SSLContext] | None = None

    def contexts(self) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        """(TDS 7.x context, TDS 8.0 strict context)."""
        if self._contexts is None:
            write_self_signed(self.certificate_path, self.key_path)
            tds7 = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            # TLS 1.3 sends tickets after the handshake, outside the PRELOGIN wrapping clients expect.
            tds7.maximum_version = ssl.TLSVersion.TLSv1_2
            tds7.load_cert_chain(self.certificate_path, self.key_path)
            strict = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            strict.maximum_version = ssl.TLSVersion.TLSv1_2  # Driver 18 strict stalled on our TLS 1.3
            strict.load_cert_chain(self.certificate_path, self.key_path)
            strict.set_alpn_protocols(["tds/8.0"])
            self._contexts = (tds7, strict)
        return self._contexts


class TlsChannel:
    """TLS over an established stream pair, driven through memory BIOs.

    ``reader`` yields decrypted bytes; the object itself offers the StreamWriter methods a session uses.
    """

    def __init__(self, context: ssl.SSLContext, raw_reader: asyncio.StreamReader,
                 raw_writer: asyncio.StreamWriter) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self.raw_reader = raw_reader
        self.raw_writer = raw_writer
        self.reader = asyncio.StreamReader()
        self._pump: asyncio.Task[None] | None = None

    @property
    def transport(self) -> asyncio.WriteTransport:
        return self.raw_writer.transport

    async def handshake_in_prelogin_packets(self) -> None:
        """TDS 7.x: handshake records wrapped in PRELOGIN packets, both ways."""
        while True:
            message = await read_message(self.raw_reader)
            if message is None or message.type != PRELOGIN:
                raise ProtocolError("TLS handshake expected inside PRELOGIN packets")
            self._incoming.write(message.payload)
            finished = self._step_handshake()
            pending = self._outgoing.read()
            if pending:
                self.raw_writer.write(encode_packets(PRELOGIN, pending, DEFAULT_PACKET_SIZE))
                await self.raw_writer.drain()
            if finished:
                self._start_pump()
                return

    async def handshake_raw(self, first_bytes: bytes) -> None:
        """TDS 8.0: plain TLS from the first byte (already read: ``first_bytes``)."""
        self._incoming.write(first_bytes)
        while not self._step_handshake():
            await self._flush()
            data = await self.raw_reader.read(65536)
            if not data:
                raise ConnectionError("closed during the TLS handshake")
            self._incoming.write(data)
        await self._flush()
        self._start_pump()

    def _step_handshake(self) -> bool:
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            return False
        return True

    def _start_pump(self) -> None:
        self._pump = asyncio.create_task(self._decrypt_forever())

    async def _decrypt_forever(self) -> None:
        try:
            while True:
                data = await self.raw_reader.read(65536)
                if not data:
                    break
                self._incoming.write(data)
                while True:
                    try:
                        chunk = self._tls.read(65536)
                    except ssl.SSLWantReadError:
                        break
                    if not chunk:
                        break
                    self.reader.feed_data(chunk)
                await self._flush()
        except (ssl.SSLError, ConnectionError, OSError) as exc:
            self.reader.set_exception(ConnectionError(str(exc)))
            return
        self.reader.feed_eof()

    async def _flush(self) -> None:
        pending = self._outgoing.read()
        if pending:
            self.raw_writer.write(pending)
            await self.raw_writer.drain()

    def write(self, data: bytes) -> None:
        self._tls.write(data)
        self.raw_writer.write(self._outgoing.read())

    async def drain(self) -> None:
        await self.raw_writer.drain()
