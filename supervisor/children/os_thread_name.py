"""The kernel's name of the calling thread (``/proc/<pid>/task/<tid>/comm``), so ``top -H``, ``ps -L`` and
per-thread CPU counters tell a child's collection threads from its writer. Linux only; elsewhere a no-op."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys

_PR_SET_NAME = 15
_MAX_BYTES = 15  # the kernel keeps 16 bytes, the last one NUL


def name_os_thread(name: str) -> None:
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_NAME, name.encode("ascii", "replace")[:_MAX_BYTES], 0, 0, 0)
