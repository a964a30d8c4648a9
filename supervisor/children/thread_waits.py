"""Which file descriptors one thread of this process is blocked on, read from ``/proc/self/task/TID/syscall``.

A collection's deadline shuts down the sockets of its session (``sockets``). Found by the server's address, they
miss a connection the driver opened elsewhere: Driver 18 follows a TDS routing answer (an Azure gateway's
redirect) to another host and port, and a stall there held the collection thread for ever. The thread's own
blocked system call names the socket whatever its peer: the descriptor of ``read``/``recvfrom``/``connect``/...,
or the descriptors of ``poll``/``ppoll``/``select``/``pselect6`` (read from the thread's arguments in
``/proc/self/mem``) or of ``epoll_wait`` (the epoll descriptor's targets in ``/proc/self/fdinfo``).

Linux x86_64 and aarch64; elsewhere, or for a thread not in a system call, nothing is found.
"""

from __future__ import annotations

import os
import platform
import struct

#: System calls whose first argument is the descriptor waited on.
_FD_FIRST = {
    "x86_64": {0, 1, 42, 44, 45, 46, 47, 299, 307},  # read write connect sendto recvfrom sendmsg recvmsg (m)
    "aarch64": {63, 64, 203, 206, 207, 211, 212, 243, 269},
}
_POLL = {"x86_64": {7, 271}, "aarch64": {73}}  # poll, ppoll: (struct pollfd *fds, nfds)
_SELECT = {"x86_64": {23, 270}, "aarch64": {72}}  # select, pselect6: (nfds, readfds, writefds, exceptfds)
_EPOLL = {"x86_64": {232, 281, 441}, "aarch64": {22, 441}}  # epoll_wait, epoll_pwait(2): (epfd, ...)
#: A driver waits on one or two sockets; more descriptors than this in one call is no driver's wait.
MAX_FDS = 64
_POLLFD = struct.Struct("=ihh")
_ARCH = platform.machine()


def blocked_fds(thread_id: int) -> list[int]:
    """The descriptors thread ``thread_id`` (a native thread id of this process) is blocked on now; [] when it
    runs, is not in a system call of the kinds above, or ``/proc`` cannot tell."""
    call = _syscall(thread_id)
    if call is None:
        return []
    number, args = call
    try:
        if number in _FD_FIRST.get(_ARCH, ()):
            return [args[0]]
        if number in _POLL.get(_ARCH, ()):
            return _poll_fds(args[0], args[1])
        if number in _SELECT.get(_ARCH, ()):
            return _select_fds(args[0], args[1:4])
        if number in _EPOLL.get(_ARCH, ()):
            return _epoll_targets(args[0])
    except (OSError, ValueError, struct.error):
        return []
    return []


def still_blocked(thread_id: int, fds: list[int]) -> bool:
    """Whether the thread is still in a call on these descriptors (they were not closed and reused meanwhile)."""
    return bool(fds) and blocked_fds(thread_id) == fds


def _syscall(thread_id: int) -> tuple[int, list[int]] | None:
    try:
        with open(f"/proc/self/task/{thread_id}/syscall", encoding="ascii") as file:
            fields = file.read().split()
    except (OSError, UnicodeDecodeError):
        return None
    if len(fields) < 7 or not fields[0].isdigit():  # "running", or "-1 sp pc" outside a system call
        return None
    try:
        return int(fields[0]), [int(field, 16) for field in fields[1:7]]
    except ValueError:
        return None


def _read_memory(address: int, size: int) -> bytes:
    fd = os.open("/proc/self/mem", os.O_RDONLY)
    try:
        return os.pread(fd, size, address)
    finally:
        os.close(fd)


def _poll_fds(address: int, count: int) -> list[int]:
    if not 0 < count <= MAX_FDS:
        return []
    data = _read_memory(address, count * _POLLFD.size)
    return [fd for fd, _, _ in _POLLFD.iter_unpack(data[: len(data) - len(data) % _POLLFD.size]) if fd >= 0]


def _select_fds(nfds: int, sets: list[int]) -> list[int]:
    if not 0 < nfds <= 65536:
        return []
    size = (nfds + 7) // 8
    fds: set[int] = set()
    for address in sets:
        if address:
            bits = int.from_bytes(_read_memory(address, size), "little")
            fds.update(fd for fd in range(nfds) if bits >> fd & 1)
    return sorted(fds) if len(fds) <= MAX_FDS else []


def _epoll_targets(epoll_fd: int) -> list[int]:
    with open(f"/proc/self/fdinfo/{epoll_fd}", encoding="ascii") as file:
        fds = [int(line.split()[1]) for line in file if line.startswith("tfd:")]
    return fds if len(fds) <= MAX_FDS else []
