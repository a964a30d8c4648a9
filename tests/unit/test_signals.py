"""SignalFlags with real signals sent to this process: flags set, the wake-up fd readable, nothing else done."""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Callable, Iterator

import pytest

from supervisor.parent.signals import DUPLICATE_WITHIN, HANDLED, SignalFlags


@pytest.fixture
def flags() -> Iterator[SignalFlags]:
    """Installed flags; afterwards the previous handlers, wake-up fd and signal mask come back."""
    previous = {signo: signal.getsignal(signo) for signo in HANDLED}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    old_wakeup = signal.set_wakeup_fd(-1)
    flags = SignalFlags()
    flags.install()
    try:
        yield flags
    finally:
        signal.set_wakeup_fd(old_wakeup)
        for signo, handler in previous.items():
            signal.signal(signo, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for fd in flags.fds:
            os.close(fd)


def readable(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def until(condition: Callable[[], object], timeout: float = 2.0) -> None:
    """The Python-level handler runs between bytecodes of the main thread: give it the moment it needs."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the signal handler did not run"
        time.sleep(0.001)


def test_nothing_is_pending_before_a_signal(flags: SignalFlags) -> None:
    assert flags.stop_requests == 0 and not flags.reload_requested and flags.last_stop_signal is None
    assert not readable(flags.wakeup_fd, 0)


def test_sighup_asks_for_a_reload_once(flags: SignalFlags) -> None:
    os.kill(os.getpid(), signal.SIGHUP)
    until(lambda: flags.reload_requested)
    assert readable(flags.wakeup_fd, 1.0)
    assert flags.stop_requests == 0
    assert flags.take_reload()
    assert not flags.take_reload() and not flags.reload_requested


@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGINT])
def test_term_and_int_request_a_stop(flags: SignalFlags, signo: signal.Signals) -> None:
    os.kill(os.getpid(), signo)
    until(lambda: flags.stop_requests == 1)
    assert flags.last_stop_signal == signo
    assert readable(flags.wakeup_fd, 1.0)
    assert not flags.reload_requested


def test_a_second_stop_signal_counts(flags: SignalFlags) -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    until(lambda: flags.stop_requests == 1)
    time.sleep(DUPLICATE_WITHIN)
    os.kill(os.getpid(), signal.SIGINT)
    until(lambda: flags.stop_requests == 2)
    assert flags.last_stop_signal == signal.SIGINT


def test_the_same_stop_delivered_twice_is_one_stop(flags: SignalFlags) -> None:
    """GNU ``timeout`` (and a process manager stopping a group) signals the process and then its group: the
    parent gets two TERMs within microseconds. Taken as a second stop, they killed the children mid-write."""
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGTERM)
    until(lambda: flags.stop_requests >= 1)
    time.sleep(0.05)
    assert flags.stop_requests == 1
    os.kill(os.getpid(), signal.SIGINT)  # another signal at once: a deliberate second stop
    until(lambda: flags.stop_requests == 2)


def test_drain_empties_the_wakeup_fd(flags: SignalFlags) -> None:
    for _ in range(3):
        os.kill(os.getpid(), signal.SIGHUP)
    until(lambda: flags.reload_requested)
    assert readable(flags.wakeup_fd, 1.0)
    flags.drain()
    assert not readable(flags.wakeup_fd, 0)
    flags.drain()  # nothing to read: returns at once
    assert flags.take_reload()  # draining wakes the loop up, it does not consume the request
    os.kill(os.getpid(), signal.SIGTERM)
    assert readable(flags.wakeup_fd, 1.0)  # the next signal wakes it again


def test_the_pipe_is_non_blocking_and_not_inherited(flags: SignalFlags) -> None:
    for fd in flags.fds:
        assert not os.get_blocking(fd) and not os.get_inheritable(fd)
    assert flags.wakeup_fd == flags.fds[0]
