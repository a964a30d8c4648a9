"""One TDS session: PRELOGIN, TLS, LOGIN7, then requests until the client goes, with the faults of its server."""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
from typing import TYPE_CHECKING, Protocol

from sqlserver_sim import auth
from sqlserver_sim import login as prelogin_login
from sqlserver_sim.faults import QUERY_STALLS
from sqlserver_sim.fleet import ServerSpec
from sqlserver_sim.packets import (
    ATTENTION,
    DEFAULT_PACKET_SIZE,
    LOGIN7,
    MAX_PACKET_SIZE,
    MIN_PACKET_SIZE,
    PRELOGIN,
    TABULAR_RESULT,
    Message,
    ProtocolError,
    encode_packets,
    read_message,
)
from sqlserver_sim.requests import RequestHandler, Response
from sqlserver_sim.statements import SessionState
from sqlserver_sim.tls import TlsChannel
from sqlserver_sim.tokens import (
    COLLATION,
    DONE_ATTN,
    DONE_ERROR,
    ENV_COLLATION,
    ENV_DATABASE,
    ENV_LANGUAGE,
    ENV_PACKET_SIZE,
    done,
    envchange_bytes,
    envchange_text,
    error,
    info,
    loginack,
)

if TYPE_CHECKING:
    from sqlserver_sim.server import SimulatedServer

log = logging.getLogger(__name__)

_CLOSED = (ConnectionError, ProtocolError, asyncio.IncompleteReadError, ssl.SSLError, OSError)
_spids = itertools.count(51)

_TLS_RECORD_HANDSHAKE = b"\x16"
_DONE_SIZE = len(done())


class ByteWriter(Protocol):
    """What a session writes to: an asyncio.StreamWriter or a TlsChannel."""

    @property
    def transport(self) -> asyncio.WriteTransport: ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...


class Session:
    """One client connection to a simulated server."""

    def __init__(self, server: SimulatedServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer: ByteWriter = writer
        self.packet_size = DEFAULT_PACKET_SIZE
        self.spid = next(_spids) % 30000 + 51
        self._work: asyncio.Task[None] | None = None
        self.encrypted = False
        #: The session hit its server's stall: it answers nothing more, ATTENTION included.
        self.stalled = False
        #: FEDAUTHREQUIRED in this session's PRELOGIN answer (None: the client did not ask).
        self.prelogin_fedauth: int | None = None

    @property
    def spec(self) -> ServerSpec:
        return self.server.spec

    async def run(self) -> None:
        try:
            if self.spec.faults.blackhole:
                await self._swallow()
                return
            first = await self.reader.readexactly(1)
            if first == _TLS_RECORD_HANDSHAKE and self._tls_contexts() is not None:
                if self._stalls_in("tls"):  # TDS 8.0 strict: the ClientHello is never answered
                    await self._stall()
                    return
                await self._start_tls(strict=True, first_bytes=first)
                first = b""
            user = await self._login(first)
            if user is not None:
                await self._serve(user)
        except _CLOSED:
            pass
        finally:
            self.close()

    def close(self) -> None:
        if self._work is not None:
            self._work.cancel()
        transport = self.writer.transport
        if not transport.is_closing():
            transport.abort()

    async def _swallow(self) -> None:
        while await self.reader.read(65536):
            pass

    def _stalls_in(self, phase: str) -> bool:
        return self.spec.faults.stall == phase

    async def _stall(self) -> None:
        """Answer nothing more (read and drop what comes, ATTENTION included) until the client closes."""
        self.stalled = True
        await self._swallow()

    def _send(self, payload: bytes, *, final: bool = True) -> None:
        self.writer.write(encode_packets(TABULAR_RESULT, payload, self.packet_size, final=final,
                                         spid=self.spid))

    # Login

    def _tls_contexts(self) -> tuple[ssl.SSLContext, ssl.SSLContext] | None:
        store = self.server.certificates
        return store.contexts() if store is not None and self.spec.tls else None

    async def _start_tls(self, *, strict: bool, first_bytes: bytes = b"") -> None:
        contexts = self._tls_contexts()
        assert contexts is not None and isinstance(self.writer, asyncio.StreamWriter)
        channel = TlsChannel(contexts[1] if strict else contexts[0], self.reader, self.writer)
        if strict:
            await channel.handshake_raw(first_bytes)
        else:
            await channel.handshake_in_prelogin_packets()
        self.reader, self.writer = channel.reader, channel
        self.encrypted = True

    async def _login(self, prefix: bytes) -> str | None:
        message = await read_message(self.reader, prefix)
        if message is None:
            return None
        if self._stalls_in("prelogin"):
            await self._stall()
            return None
        if message.type == PRELOGIN:
            message = await self._prelogin(message)
            if message is None:
                return None
        if message.type != LOGIN7:
            raise ProtocolError(f"expected LOGIN7, got 0x{message.type:02X}")
        if self._stalls_in("login"):
            await self._stall()
            return None
        request = prelogin_login.parse_login7(message.payload)
        spec = self.spec
        if spec.faults.slow_login_ms:
            await asyncio.sleep(spec.faults.slow_login_ms / 1000)
            spec = self.spec
        refused = auth.refusal(spec, request, prelogin_fedauth=self.prelogin_fedauth)
        if refused is not None:
            self._send(refused[0] + done(DONE_ERROR))
            await self.writer.drain()
            return None
        if request.packet_size:
            self.packet_size = min(MAX_PACKET_SIZE, max(MIN_PACKET_SIZE, request.packet_size))
        database = request.database or "master"
        reply = (
            envchange_text(ENV_DATABASE, database, "master")
            + info(5701, f"Changed database context to '{database}'.", state=2)
            + envchange_bytes(ENV_COLLATION, COLLATION)
            + envchange_text(ENV_LANGUAGE, "us_english")
            + info(5703, "Changed language setting to us_english.", state=1)
            + loginack("Microsoft SQL Server", spec.version_tuple)
            + auth.feature_acks(request)
            + envchange_text(ENV_PACKET_SIZE, str(self.packet_size), str(self.packet_size))
            + done()
        )
        self._send(reply)
        await self.writer.drain()
        self.database = database
        return auth.principal(request)

    async def _prelogin(self, message: Message) -> Message | None:
        options = prelogin_login.parse_prelogin(message.payload)
        client = (options.get(prelogin_login.PL_ENCRYPTION) or b"\x02")[0]
        if self.encrypted or self._tls_contexts() is None:
            answer = prelogin_login.ENCRYPT_NOT_SUP
        elif client in (prelogin_login.ENCRYPT_ON, prelogin_login.ENCRYPT_REQ):
            answer = prelogin_login.ENCRYPT_ON
        else:
            answer = prelogin_login.ENCRYPT_REQ  # "Force Encryption": clients that can, encrypt everything
        if prelogin_login.PL_FEDAUTHREQUIRED in options:
            self.prelogin_fedauth = auth.fedauth_required(self.spec)
        self._send(prelogin_login.build_prelogin_response(self.spec.version_tuple, answer, self.prelogin_fedauth))
        await self.writer.drain()
        if answer != prelogin_login.ENCRYPT_NOT_SUP:
            if self._stalls_in("tls"):  # the ClientHello (in a PRELOGIN packet) is never answered
                await self._stall()
                return None
            await self._start_tls(strict=False)
        return await read_message(self.reader)

    # Requests

    async def _serve(self, user: str) -> None:
        state = SessionState(self.spec, user, self.spid, database=getattr(self, "database", "master"))
        handler = RequestHandler(self.server.instance, state)
        queue: asyncio.Queue[Message | None] = asyncio.Queue()
        reading = asyncio.create_task(self._read_requests(queue))
        try:
            while True:
                message = await queue.get()
                if message is None:
                    return
                if self.stalled:
                    continue
                if message.type == ATTENTION:
                    if not self._ignores_attention():
                        self._send(done(DONE_ATTN))
                        await self.writer.drain()
                    continue
                self._work = asyncio.create_task(self._answer(handler, message))
                await asyncio.wait({self._work})
                work, self._work = self._work, None
                if not work.cancelled() and work.exception() is not None:
                    raise work.exception()  # type: ignore[misc]
        finally:
            reading.cancel()

    async def _read_requests(self, queue: asyncio.Queue[Message | None]) -> None:
        """Keep reading while a request runs, so that an ATTENTION can stop it."""
        try:
            while True:
                message = await read_message(self.reader)
                if message is None:
                    break
                if message.type == ATTENTION and self._work is not None and not self._ignores_attention():
                    self._work.cancel()
                queue.put_nowait(message)
        except _CLOSED:
            pass
        finally:
            if self._work is not None:
                self._work.cancel()
            queue.put_nowait(None)

    def _ignores_attention(self) -> bool:
        return self.stalled or self.spec.faults.ignore_attention

    async def _answer(self, handler: RequestHandler, message: Message) -> None:
        try:
            response = handler.handle(message)
        except Exception as exc:  # a request the simulator cannot parse must not kill the session
            log.warning("%s: cannot answer a 0x%02X request: %r", self.spec.name, message.type, exc)
            response = Response(error(50000, f"sqlserver-sim cannot answer this request: {exc!r}", 16)
                                + done(DONE_ERROR))
        faults = self.spec.faults
        stall = faults.stall if response.collection and faults.stall in QUERY_STALLS else None
        if stall is not None:
            self.stalled = True  # from here on (slow_query_ms included) ATTENTION is ignored
        if response.collection and faults.slow_query_ms:
            await asyncio.sleep(faults.slow_query_ms / 1000)
        if stall is not None:
            await self._stall_in_response(response, stall)
            return
        if response.collection and faults.disconnect_mid_result:
            self._send(response.payload[: len(response.payload) // 2], final=False)
            await self.writer.drain()
            self.close()
            return
        self._send(response.payload)
        await self.writer.drain()

    async def _stall_in_response(self, response: Response, stall: str) -> None:
        """Send the part of the response the stall lets through, then nothing until the session ends."""
        if stall == "mid_result":
            part = response.payload[:response.first_set_end or len(response.payload) // 2]
        elif stall == "before_done":
            part = response.payload[:-_DONE_SIZE]  # every response ends with its DONE / DONEPROC
        else:
            part = b""
        if part:
            self._send(part, final=False)
            await self.writer.drain()
        await asyncio.get_running_loop().create_future()  # cancelled when the session closes
