"""A file written whole or not at all: to a temporary name beside it, fsynced, then given its name, and its folder
fsynced so the name survives a crash too. A full or read-only disk leaves no file, no half-written one and no
temporary one."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_whole(path: Path, data: bytes, *, mode: int = 0o666, replace: bool = True) -> None:
    """``data`` at ``path``. With ``replace`` false the name is linked instead of renamed: a file already there is
    never replaced (``FileExistsError``), so two processes creating it at once agree on one. ``mode`` is as for
    ``os.open`` (the umask applies). Raises ``OSError``."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
