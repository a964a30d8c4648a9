"""Finding and shutting down this process's TCP sockets to one server: how a collection's deadline
makes a stuck driver call return.

Neither driver's query timeout nor ``SQLCancel`` ends a call while the server does not acknowledge
the ATTENTION: both wait for the acknowledgement (FreeTDS 8 s, Driver 18 12-20 s at a 5 s timeout).
``shutdown(SHUT_RDWR)`` on the connection's socket makes the driver's blocked ``recv``/``poll``
return at once (EOF), and on a socket still in SYN_SENT it aborts the connect; the driver then fails
the call with a communication-link error and the collection thread closes the connection itself.
The descriptor is never closed here (the driver still owns it: closing it could hand its number to
another thread's new socket).

Linux only: the sockets are found in ``/proc/self/net/tcp{,6}`` (by remote address and port) and
matched to descriptors through ``/proc/self/fd``. Every socket of this process to that address and
port is shut down: a second server of the same tenant on the same address and port loses its
connection too and reconnects at its next collection.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import sys
from collections.abc import Iterable
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
    """This process's TCP sockets whose remote end is one of ``addresses`` at ``port``."""
    wanted = {form for address in addresses for form in _proc_forms(address, port)}
    if not wanted:
        return []
    states: dict[str, str] = {}  # socket inode -> state
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with contextlib.suppress(OSError), open(table, encoding="ascii") as lines:
            next(lines, None)
            for line in lines:
                fields = line.split()
                if len(fields) > 9 and fields[2] in wanted:
                    states[fields[9]] = fields[3]
    if not states:
        return []
    found = []
    for name in _listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in states:
            found.append(PeerSocket(int(name), states[link[8:-1]]))
    return found


def shut_down(sockets: Iterable[PeerSocket]) -> int:
    """``shutdown(SHUT_RDWR)`` each socket without closing its descriptor; returns how many took it."""
    done = 0
    for peer in sockets:
        try:
            sock = socket.socket(fileno=peer.fd)
        except OSError:
            continue
        try:
            sock.shutdown(socket.SHUT_RDWR)
            done += 1
        except OSError:
            pass
        finally:
            sock.detach()  # the descriptor stays the driver's
    return done


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
