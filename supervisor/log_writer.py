"""The supervisor's log output: lines written by a thread of their own, from a bounded queue.

Nothing that logs ever waits for the log's reader. A pipe nobody reads (a stopped ``tail``, a hung
process manager) would otherwise block the parent's loop in ``write()``, and with it the children's pipes,
their heartbeats and SIGTERM. When the queue is full, lines are dropped and counted, and one ``log.dropped``
line says how many once the reader keeps up again. A log file renamed or deleted (logrotate without
``copytruncate``) is reopened at its path before the next line.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from typing import TextIO

#: Lines held while the reader is slow (a few MB at most): about a minute of a busy fleet at INFO.
QUEUE_LINES = 10_000
#: How long a stop waits for held lines to be written: the reader may be gone for good.
FLUSH_TIMEOUT = 2.0
DROPPED_EVENT = "log.dropped"


class LogFile:
    """Where lines go: standard error, a stream given by the caller, or a file reopened when replaced."""

    def __init__(self, path: str | None, stream: TextIO | None = None) -> None:
        self.path = path
        self.owned = stream is None and path is not None
        self.stream: TextIO = stream or (self._open(path) if path is not None else sys.stderr)
        self._identity = self._stat_identity()

    @staticmethod
    def _open(path: str) -> TextIO:
        return open(path, "a", encoding="utf-8", buffering=1)

    def _stat_identity(self) -> tuple[int, int] | None:
        if not self.owned or self.path is None:
            return None
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return stat.st_dev, stat.st_ino

    def write(self, line: str) -> None:
        if self.owned:
            self._reopen_if_replaced()
        self.stream.write(line)
        self.stream.flush()

    def _reopen_if_replaced(self) -> None:
        identity = self._stat_identity()
        if identity is not None and identity == self._identity:
            return
        assert self.path is not None
        try:
            stream = self._open(self.path)
        except OSError:
            return  # keep writing where we were: better a rotated file than no log
        self.stream.close()
        self.stream = stream
        self._identity = self._stat_identity()

    def close(self) -> None:
        if self.owned:
            self.stream.close()


class QueuedLogHandler(logging.Handler):
    """Formats in the caller's thread, writes in its own. A forked child (which routes its records to the
    parent) inherits a copy without the writer thread: the lines it holds, the parent's, are never written
    twice, and closing it does not wait."""

    def __init__(self, target: LogFile, capacity: int = QUEUE_LINES) -> None:
        super().__init__()
        self.target = target
        self._lines: queue.Queue[str | None] = queue.Queue(capacity)
        self._dropped = 0
        self._dropped_lock = threading.Lock()
        self._gave_up = False
        self._writer = threading.Thread(target=self._write_lines, name="log-writer", daemon=True)
        self._writer.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        try:
            self._lines.put_nowait(line)
        except queue.Full:
            with self._dropped_lock:
                self._dropped += 1

    def _write_lines(self) -> None:
        while True:
            line = self._lines.get()
            try:
                if line is None:
                    return
                self._write(line)
                self._report_dropped()
            finally:
                self._lines.task_done()

    def _write(self, line: str) -> None:
        try:
            self.target.write(line)
        except (OSError, ValueError):
            with self._dropped_lock:  # a closed or broken output: counted like a full queue
                self._dropped += 1

    def _report_dropped(self) -> None:
        with self._dropped_lock:
            dropped, self._dropped = self._dropped, 0
        if dropped:
            self._write(self.format(dropped_record(dropped)) + "\n")

    def flush(self) -> None:
        """Waits (up to ``FLUSH_TIMEOUT``, once: the reader may be gone for good) until the lines held so far
        are written."""
        if self._writer.is_alive() and not self._gave_up:
            self._gave_up = not self._drained_within(FLUSH_TIMEOUT)

    def _drained_within(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._lines.all_tasks_done:
            while self._lines.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lines.all_tasks_done.wait(left)
        return True

    def close(self) -> None:
        if self._writer.is_alive():
            self.flush()
            if not self._gave_up:
                self._lines.put(None)  # drained: there is room
                self._writer.join(FLUSH_TIMEOUT)
                self.target.close()
        super().close()


def dropped_record(count: int) -> logging.LogRecord:
    record = logging.LogRecord(
        "supervisor", logging.WARNING, __file__, 0,
        "%d log lines were dropped: the log's reader did not keep up", (count,), None,
    )  # fmt: skip
    record.event = DROPPED_EVENT
    record.dropped = count
    return record
