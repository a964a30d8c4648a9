"""The "connect" stall: a listener whose TCP connect() never completes.

A socket listening with a tiny backlog, filled by connections of our own and never accepted from:
once its accept queue is full, Linux drops every further SYN (counted as ListenOverflows), so a
client's connect() stays in SYN_SENT, retransmitting, until the client gives up: a timeout, not a
refusal and not an accepted connection. Linux only (the queue length is read with TCP_INFO).
"""

from __future__ import annotations

import asyncio
import socket
import struct

#: Enough to fill a backlog of 1 (the kernel queues backlog + 1 connections).
_MAX_FILLERS = 4
_FILL_TIMEOUT_S = 5.0
#: struct tcp_info: 8 bytes of u8 fields, then u32 rto, ato, snd_mss, rcv_mss, unacked, sacked.
#: For a listener, unacked is the accept queue length and sacked its limit.
_TCP_INFO_QUEUE = struct.Struct("=II")
_TCP_INFO_QUEUE_OFFSET = 24


def accept_queue(listener: socket.socket) -> tuple[int, int]:
    """(connections waiting to be accepted, the backlog limit) of a listening TCP socket."""
    info = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    waiting, limit = _TCP_INFO_QUEUE.unpack_from(info, _TCP_INFO_QUEUE_OFFSET)
    return waiting, limit


class StuckListener:
    """Listening sockets on (host, port) whose accept queues are full: connect() to them hangs."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._sockets: list[socket.socket] = []

    async def open(self) -> None:
        """Listen and fill the queues; OSError when the port is taken or a queue cannot be filled."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
        try:
            for family, kind, protocol, _name, address in dict.fromkeys(infos):
                listener = socket.socket(family, kind, protocol)
                self._sockets.append(listener)
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                listener.bind(address)
                listener.listen(1)  # backlog 0 needs SYN cookies on to let even the filler in
                await self._fill(listener)
        except BaseException:
            self.close()
            raise

    async def _fill(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        address = listener.getsockname()
        if address[0] in ("0.0.0.0", "::"):
            address = ("127.0.0.1" if listener.family == socket.AF_INET else "::1", *address[1:])
        for _ in range(_MAX_FILLERS):
            waiting, limit = accept_queue(listener)
            if waiting > limit:
                return
            filler = socket.socket(listener.family, socket.SOCK_STREAM)
            self._sockets.append(filler)
            filler.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(filler, address), _FILL_TIMEOUT_S)
            except TimeoutError as exc:
                raise OSError(f"cannot fill the accept queue of {address}") from exc
        waiting, limit = accept_queue(listener)
        if waiting <= limit:
            raise OSError(f"cannot fill the accept queue of {address} ({waiting} of {limit})")

    def close(self) -> None:
        """Close the listeners (the kernel resets the queued fillers) and the fillers."""
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
