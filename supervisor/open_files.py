"""The process's limit of open files, raised to what the system allows.

Every kept connection holds a socket, so a tenant with more servers than the soft ``RLIMIT_NOFILE`` (1,024 by
default under systemd and most shells) runs out of descriptors: connects fail, and so does anything else the
child opens. The soft limit is raised to the hard one at start (as Go's runtime does for every program), and
children inherit it; a tenant beyond even that gets its connect failures as those servers' errors."""

from __future__ import annotations

import contextlib
import os
import resource


def raise_open_files_limit() -> None:
    """Soft ``RLIMIT_NOFILE`` up to the hard limit (``supervisor.started`` tells the one in force)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):  # an infinite hard limit above the kernel's nr_open
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def open_fds() -> set[int]:
    """This process's open file descriptors (Linux), without the one the listing itself used."""
    listed = {int(name) for name in os.listdir("/proc/self/fd")}
    still_open = set()
    for fd in listed:
        with contextlib.suppress(OSError):
            os.fstat(fd)
            still_open.add(fd)
    return still_open
