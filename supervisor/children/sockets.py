"""Finding and shutting down this process's TCP sockets to one server: how a collection's deadline
makes a stuck driver call return.

Neither driver's query timeout nor ``SQLCancel`` ends a call while the server does not acknowledge
the ATTENTION: both wait for the acknowledgement (FreeTDS 8 s, Driver 18 12-20 s at a 5 s timeout).
``shutdown(SHUT_RDWR)`` on the connection's socket makes the driver's blocked ``recv``/``poll``
return at once (EOF), and on a socket still in SYN_SENT it aborts the connect; the driver then fails
the call with a communication-link error and the collection thread closes the connection itself.
The descriptor is never closed here (the driver still owns it: closing it could hand its number to
another thread's new socket).

Linux only: the sockets are this process's descriptors in ``/proc/self/fd`` whose peer is the server's
address and port (a connecting one, which has no peer yet, is looked up in ``/proc/self/net/tcp{,6}``).
Every socket of this process to that address and port is shut down: a second server of the same tenant
on the same address and port loses its connection too and reconnects at its next collection.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import struct
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

#: TCP states as /proc/net/tcp writes them (include/net/tcp_states.h).
SYN_SENT = "02"
ESTABLISHED = "01"


@dataclass(frozen=True)
class PeerSocket:
    fd: int
    state: str  # two hex digits, as in /proc/net/tcp


def resolve(host: str, port: int) -> list[str]:
    """The addresses a driver may connect to for ``host`` (an IP literal needs no lookup)."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return sorted({str(info[4][0]) for info in infos})


def sockets_to(addresses: Iterable[str], port: int) -> list[PeerSocket]:
    """This process's TCP sockets whose remote end is one of ``addresses`` at ``port``.

    Each socket descriptor of this process is asked for its peer (``getpeername``) and TCP state
    (``TCP_INFO``): a few microseconds each. A socket still connecting has no peer yet; only then is the
    namespace's whole socket table (``/proc/self/net/tcp``, thousands of lines on a busy host, 15 ms of
    kernel time for 6,000) read to tell where it connects to."""
    wanted = {(ip, port) for ip in (_normal(address) for address in addresses) if ip is not None}
    if not wanted:
        return []
    found: list[PeerSocket] = []
    connecting: dict[str, int] = {}  # socket inode -> fd
    for name in _listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if not link.startswith("socket:["):
            continue
        peer = _peer(int(name))
        if peer is None:
            continue
        state, remote = peer
        if state == SYN_SENT:
            connecting[link[8:-1]] = int(name)
        elif remote in wanted:
            found.append(PeerSocket(int(name), state))
    if connecting:
        found += [PeerSocket(connecting[inode], SYN_SENT) for inode in _connecting_to(wanted, set(connecting))]
    return found


def dns_sockets(fds: Iterable[int]) -> list[PeerSocket]:
    """The UDP sockets among descriptors ``fds``: a thread waiting on one is in name resolution (the resolver's)."""
    found = []
    for fd in fds:
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            continue
        try:
            if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_DGRAM:
                found.append(PeerSocket(fd, "UDP"))
        finally:
            sock.detach()
    return found


def tcp_sockets(fds: Iterable[int]) -> list[PeerSocket]:
    """The TCP sockets among descriptors ``fds`` (a pipe, a UDP resolver socket or a closed number is left out)."""
    return [PeerSocket(fd, peer[0]) for fd in fds if (peer := _peer(fd)) is not None]


def _peer(fd: int) -> tuple[str, tuple[str, int] | None] | None:
    """(TCP state, normalised peer) of a TCP socket descriptor; None for any other kind of socket."""
    with _borrowed(fd) as sock:
        if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
            return None
        try:
            state = f"{sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]:02X}"
        except OSError:
            return None
        try:
            host, peer_port = sock.getpeername()[:2]
        except OSError:
            return state, None  # not connected (yet)
        ip = _normal(host)
        return state, None if ip is None else (ip, peer_port)


def _connecting_to(wanted: set[tuple[str, int]], inodes: set[str]) -> list[str]:
    """Which of the connecting sockets ``inodes`` go to a ``wanted`` peer, from the kernel's socket table."""
    forms = {form for ip, port in wanted for form in _proc_forms(ip, port)}
    matched = []
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(table, encoding="ascii") as lines:
                next(lines, None)
                for line in lines:
                    fields = line.split()
                    if len(fields) > 9 and fields[9] in inodes and fields[2] in forms:
                        matched.append(fields[9])
        except OSError:
            continue
    return matched


def _normal(address: str) -> str | None:
    """An IP address as one string whatever its spelling (IPv4-mapped IPv6 as IPv4)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def shut_down(sockets: Iterable[PeerSocket]) -> int:
    """``shutdown(SHUT_RDWR)`` each socket without closing its descriptor; returns how many took it."""
    done = 0
    for peer in sockets:
        with _borrowed(peer.fd) as sock, contextlib.suppress(OSError):
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
                done += 1
    return done


@contextlib.contextmanager
def _borrowed(fd: int) -> Iterator[socket.socket | None]:
    """A socket object over descriptor ``fd`` (None if it is none), detached afterwards: the descriptor stays
    its owner's (the driver's), never closed here."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        yield None
        return
    try:
        yield sock
    finally:
        sock.detach()


#: ``tcpi_bytes_received`` in Linux's ``struct tcp_info`` (a u64, since 4.1).
_BYTES_RECEIVED_AT = 128


def bytes_received(sockets: Iterable[PeerSocket]) -> int:
    """What the sockets received in all (TCP_INFO), whoever has read it since: the driver's buffers included."""
    total = 0
    for peer in sockets:
        with _borrowed(peer.fd) as sock, contextlib.suppress(OSError):
            info = b"" if sock is None else sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _BYTES_RECEIVED_AT + 8)
            if len(info) >= _BYTES_RECEIVED_AT + 8:
                total += struct.unpack_from("=Q", info, _BYTES_RECEIVED_AT)[0]
    return total


def _proc_forms(address: str, port: int) -> list[str]:
    """``address:port`` as /proc/net/tcp{,6} print it (each 32-bit word in host byte order, hex)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return []
    suffix = f":{port:04X}"
    if isinstance(ip, ipaddress.IPv4Address):
        mapped = ipaddress.IPv6Address(f"::ffff:{ip}")
        return [_words(ip.packed) + suffix, _words(mapped.packed) + suffix]
    forms = [_words(ip.packed) + suffix]
    if ip.ipv4_mapped is not None:
        forms.append(_words(ip.ipv4_mapped.packed) + suffix)
    return forms


def _words(packed: bytes) -> str:
    return "".join(f"{int.from_bytes(packed[i : i + 4], sys.byteorder):08X}" for i in range(0, len(packed), 4))


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []
