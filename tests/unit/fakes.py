"""Hand-written stand-ins for the OS side of a child: a multiprocessing context, its processes and pipes.

They record what the handle did to them (started, joined, closed, signals) and let a test decide when a
"process" exits and with which code. The pipe ends are real ``os.pipe`` descriptors, so what the handle
computes from the open descriptors (which ones the child must close) is computed on real ones.
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Callable, Sequence
from typing import Any

#: Above Linux's pid_max (4194304): a fake pid can never name a real process.
FIRST_FAKE_PID = 5_000_001


class FakeConnection:
    """One end of a ``multiprocessing`` pipe, holding a real descriptor so it shows in /proc/self/fd."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.closed = False

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
            self.closed = True


class FakeProcess:
    """A ``multiprocessing`` process that never runs: the test makes it exit with ``exit(code)``."""

    def __init__(
        self,
        pid: int,
        target: Callable[..., Any],
        args: Sequence[Any],
        name: str,
        start_error: BaseException | None = None,
        daemon: bool = False,
    ) -> None:
        self.pid: int | None = None
        self.daemon = daemon
        self._pid = pid
        self.target = target
        self.args = tuple(args)
        self.name = name
        self.sentinel = pid  # what the loop waits on; the handle never reads it
        self.exitcode: int | None = None
        self.started = self.joined = self.closed = False
        self._start_error = start_error

    def start(self) -> None:
        if self._start_error is not None:
            raise self._start_error
        self.started = True
        self.pid = self._pid

    def exit(self, code: int) -> None:
        """What the OS does when the child ends: a code (negative: killed by that signal)."""
        assert self.started, "a process that never started cannot exit"
        self.exitcode = code

    def join(self, timeout: float | None = None) -> None:
        # The handle joins only after the sentinel said the child is gone: joining a live one would hang.
        assert self.exitcode is not None, "join() on a child that has not exited would block"
        self.joined = True

    def close(self) -> None:
        assert self.joined, "close() before join() raises ValueError on a real process"
        self.closed = True


class FakeContext:
    """Stands in for ``multiprocessing.get_context("fork")``: ``Pipe`` and ``Process`` only."""

    def __init__(self, pid: int | None = None) -> None:
        self.processes: list[FakeProcess] = []
        self.pipes: list[tuple[FakeConnection, FakeConnection]] = []
        self.next_start_error: BaseException | None = None
        self._pids = itertools.repeat(pid) if pid is not None else itertools.count(FIRST_FAKE_PID)

    def Pipe(self, duplex: bool = True) -> tuple[FakeConnection, FakeConnection]:
        assert not duplex, "the child's pipe is one-way: child writes, parent reads"
        read_fd, write_fd = os.pipe()
        pair = (FakeConnection(read_fd), FakeConnection(write_fd))
        self.pipes.append(pair)
        return pair

    def Process(self, target: Callable[..., Any], args: Sequence[Any], name: str, daemon: bool = False) -> FakeProcess:
        error, self.next_start_error = self.next_start_error, None
        process = FakeProcess(next(self._pids), target, args, name, start_error=error, daemon=daemon)
        self.processes.append(process)
        return process

    def close_all(self) -> None:
        for reader, writer in self.pipes:
            reader.close()
            writer.close()


class SignalRecorder:
    """Replaces ``os.kill``: remembers (pid, signal); ``gone`` makes it raise like a vanished pid."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, int]] = []
        self.gone = False

    def __call__(self, pid: int, signo: int) -> None:
        self.sent.append((pid, signo))
        if self.gone:
            raise ProcessLookupError(pid)


class EdgeRandom(random.Random):
    """``uniform`` always returns one end of the range: the lowest or the highest a draw can be."""

    def __init__(self, high: bool) -> None:
        super().__init__(0)
        self.high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self.high else a
