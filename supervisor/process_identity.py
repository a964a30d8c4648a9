"""A process's identity on its machine, robust to wall-clock steps and to hosts that share a hostname.

``key(pid)`` is ``BOOT/PIDNS/TICKS``: the kernel's boot id (random at every boot of every machine, so cloned VMs
differ), the inode of the PID namespace (containers that share a kernel but not their PIDs differ), and the
process's start time in clock ticks since boot (``/proc/PID/stat``; a wall-clock step does not move it, unlike a
start time in wall-clock seconds). Two keys with the same ``BOOT/PIDNS`` are of processes that can see each
other's PIDs; the same key is the same process, a reused PID has other ticks.
"""

from __future__ import annotations

import os


def namespace() -> str | None:
    """``BOOT/PIDNS`` of this process; None where ``/proc`` cannot tell."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as file:
            boot = file.read().strip()
        pid_ns = os.readlink("/proc/self/ns/pid")  # pid:[4026531836]
    except (OSError, UnicodeDecodeError):
        return None
    return f"{boot}/{pid_ns.removeprefix('pid:[').removesuffix(']')}" if boot else None


def start_ticks(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot; None when there is no such process (or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as file:
            stat = file.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) ": state is field 3, starttime field 22
    if len(fields) < 20 or fields[0] in ("Z", "X") or not fields[19].isdigit():
        return None
    return int(fields[19])


def key(pid: int | None) -> str | None:
    """The identity of the running process ``pid`` as seen from here; None if it does not run or ``/proc`` cannot
    tell."""
    if pid is None:
        return None
    space, ticks = namespace(), start_ticks(pid)
    return None if space is None or ticks is None else f"{space}/{ticks}"


def same_process_runs(stored_key: str, pid: int) -> bool | None:
    """Whether the process a stored ``key`` names still runs: None when it is of another machine, boot or PID
    namespace (this process cannot see it: its heartbeat must tell), else whether ``pid`` has the same start."""
    space, _, ticks = stored_key.rpartition("/")
    if not space or space != namespace():
        return None
    return str(start_ticks(pid)) == ticks
