"""The supervisor's log output: never waiting for the log's reader, with no thread of its own.

A pipe nobody reads (a stopped ``tail``, a hung process manager) would block the parent's loop in
``write()``, and with it the children's pipes, their heartbeats and SIGTERM. So a line is written only as far
as the output takes it now: the parent asks ``poll()`` whether the descriptor is writable and writes at most
``PIPE_BUF`` bytes at a time (a pipe with room for that never blocks). What it cannot take waits in a buffer
of ``BUFFER_BYTES``, written at the loop's next turn; beyond that, lines are dropped and counted, and one
``log.dropped`` line says how many where the gap is. No thread: the parent forks its children, and a thread
at fork time is what ``fork`` must not meet (DESIGN.md). A log file renamed or deleted (logrotate without
``copytruncate``) is reopened at its path before the next write; opened without waiting (a FIFO with no reader
is an error at start). While the path cannot be reopened and the file open was deleted (its folder removed), or
a FIFO replaced has no reader yet, the lines are held as for a slow reader, until the path opens again.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import select
import sys
import time
from typing import TextIO

#: Lines kept while the reader is slow: about 10,000 lines of 400 bytes.
BUFFER_BYTES = 4 * 1024 * 1024
#: How long a stop waits for the lines held to be written: the reader may be gone for good.
FLUSH_TIMEOUT = 2.0
DROPPED_EVENT = "log.dropped"
_CHUNK = select.PIPE_BUF
#: A write refused for want of room: the lines are kept for the next try, as for a slow reader.
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EAGAIN})


class LogFile:
    """Where lines go: standard error, a stream given by the caller, or a file reopened when replaced."""

    def __init__(self, path: str | None, stream: TextIO | None = None) -> None:
        self.path = path
        self.owned = stream is None and path is not None
        self.stream: TextIO = stream or (self._open(path) if path is not None else sys.stderr)
        self._identity = self._stat_identity()

    @staticmethod
    def _open(path: str) -> TextIO:
        """Opens without waiting: ``open()`` of a FIFO with no reader would wait for one (SIGTERM with it)."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o666)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                raise OSError(errno.ENXIO, "a FIFO with no reader (start its reader first)", path) from None
            raise
        return os.fdopen(fd, "w", encoding="utf-8", buffering=1)

    def _stat_identity(self) -> tuple[int, int] | None:
        if not self.owned or self.path is None:
            return None
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return stat.st_dev, stat.st_ino

    def _fd(self) -> int | None:
        try:
            return self.stream.fileno()
        except (OSError, ValueError, io.UnsupportedOperation):
            return None  # an in-memory stream: it takes everything at once

    def ready(self, timeout: float) -> bool:
        """Whether ``write_some`` can write now without blocking (waiting up to ``timeout`` seconds), to a file
        someone can read: not while the path names no file that opens and the file open was deleted."""
        if self.owned and not self._reopen_if_replaced():
            time.sleep(min(timeout, 0.05))  # a wait at stop tries again until its end
            return False
        fd = self._fd()
        if fd is None:
            return True
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return bool(poller.poll(timeout * 1000))

    def write_some(self, data: bytes) -> int:
        """Writes up to ``PIPE_BUF`` bytes of ``data``; returns how many were written."""
        fd = self._fd()
        if fd is None:
            self.stream.write(data.decode("utf-8", "replace"))
            self.stream.flush()
            return len(data)
        self.stream.flush()  # anything Python itself wrote to the stream goes first
        return os.write(fd, data[:_CHUNK])

    def _reopen_if_replaced(self) -> bool:
        """Reopens the path if it names another file than the one open, or none; returns whether lines written
        now reach a file that has a name: the reopened one, or the one open while it has a name left."""
        identity = self._stat_identity()
        if identity is not None and identity == self._identity:
            return True
        assert self.path is not None
        try:
            stream = self._open(self.path)
        except OSError:
            return self._still_named()  # better a rotated file than no log; a deleted one is no log at all
        self.stream.close()
        self.stream = stream
        self._identity = self._stat_identity()
        return True

    def _still_named(self) -> bool:
        try:
            return os.fstat(self.stream.fileno()).st_nlink > 0
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        if self.owned:
            self.stream.close()


class NonBlockingLogHandler(logging.Handler):
    """Formats and writes in the caller's thread, never blocking it (see the module's docstring). In a forked
    child (which routes its records to the parent) the inherited copy does nothing: the lines it holds are the
    parent's."""

    def __init__(self, target: LogFile, capacity: int = BUFFER_BYTES) -> None:
        super().__init__()
        self.target = target
        self.capacity = capacity
        self._owner_pid = os.getpid()
        self._pending = bytearray()
        self._dropped = 0
        self._announced = 0  # dropped lines counted by the notices held in _pending (the last ends at _notice_end)
        self._notices = 0
        self._notice_end = 0
        self._mid_line = False  # the output ends with part of a line (a short write on a disk that filled up)
        self._cut = False  # ... whose rest was lost
        self._gave_up = False

    def emit(self, record: logging.LogRecord) -> None:
        if os.getpid() != self._owner_pid:
            return
        try:
            line = _encoded(self.format(record))
        except Exception:
            self.handleError(record)
            return
        if self._dropped:
            self._report_dropped()
        if self._dropped or len(self._pending) + len(line) > self.capacity:
            self._dropped += 1
        else:
            self._pending += line
        self.write_pending()

    def _report_dropped(self) -> None:
        notice = _encoded(self.format(dropped_record(self._dropped)))
        if len(self._pending) + len(notice) <= self.capacity:
            self._pending += notice
            self._announced += self._dropped
            self._notices += 1
            self._notice_end = len(self._pending)
            self._dropped = 0

    def write_pending(self, wait: float = 0.0) -> None:
        """Write what the output takes, waiting for it up to ``wait`` seconds."""
        if os.getpid() != self._owner_pid:
            return
        deadline = time.monotonic() + wait
        while self._pending or self._dropped:
            if not self._pending:
                self._report_dropped()
                if not self._pending:
                    return
            if not self.target.ready(max(0.0, deadline - time.monotonic())):
                if time.monotonic() >= deadline:
                    return
                continue
            if self._cut and not self._end_cut_line():
                return
            try:
                written = self.target.write_some(bytes(self._pending[:_CHUNK]))
            except OSError as exc:
                if exc.errno not in _FULL:  # a closed or broken output: what it holds is lost, and counted
                    self._lose_pending()
                return  # a full disk: held (up to ``capacity``) until it takes them again
            except ValueError:
                self._lose_pending()
                return
            if written:
                self._mid_line = self._pending[written - 1] != ord("\n")
            del self._pending[:written]
            self._notice_end -= written
            if self._notice_end <= 0:
                self._announced = self._notices = self._notice_end = 0

    def _lose_pending(self) -> None:
        """The lines held are dropped and counted (a line cut short by the failed write among them)."""
        self._dropped += self._pending.count(b"\n") - self._notices + self._announced
        self._announced = self._notices = self._notice_end = 0
        self._pending.clear()
        self._cut = self._mid_line

    def _end_cut_line(self) -> bool:
        """The output ends with half a line (the rest was lost): end it, so the next line is not glued to it."""
        try:
            if self.target.write_some(b"\n") != 1:
                return False
        except (OSError, ValueError):
            return False
        self._cut = self._mid_line = False
        return True

    def flush(self) -> None:
        """Waits up to ``FLUSH_TIMEOUT`` for the lines held (once: ``logging.shutdown`` flushes, then closes)."""
        if not self._gave_up:
            self.write_pending(wait=FLUSH_TIMEOUT)
            self._gave_up = bool(self._pending)

    def close(self) -> None:
        if os.getpid() == self._owner_pid:
            self.flush()
            self.target.close()
        super().close()


def _encoded(line: str) -> bytes:
    return (line + "\n").encode("utf-8", "backslashreplace")


def dropped_record(count: int) -> logging.LogRecord:
    record = logging.LogRecord(
        "supervisor", logging.WARNING, __file__, 0,
        "%d log lines were dropped: the log's output did not take them (a reader that did not keep up, a full "
        "disk, a deleted log file that could not be reopened)", (count,), None,
    )  # fmt: skip
    record.event = DROPPED_EVENT
    record.dropped = count
    return record


def write_pending_logs() -> None:
    """At each turn of the parent's loop: lines held while the reader was slow."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, NonBlockingLogHandler):
            handler.write_pending()
