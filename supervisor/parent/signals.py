"""Signal handling for the parent: handlers only set flags; a wake-up pipe interrupts the main loop.

SIGTERM/SIGINT/SIGQUIT request a graceful stop (a second one escalates to an immediate kill), SIGHUP asks
for a configuration reload; SIGUSR1, SIGUSR2 and SIGALRM are ignored (by default each killed the parent
without a word, its children's last records lost and their rows left ``running``). Nothing is logged or done
inside a handler: the main loop sees the wake-up fd become readable and acts on the flags.
"""

from __future__ import annotations

import os
import signal
import time
from types import FrameType

HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)
IGNORED = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM)
#: The same stop signal this soon after the first is that stop delivered twice, not a second one (which kills).
DUPLICATE_WITHIN = 0.25


class SignalFlags:
    def __init__(self) -> None:
        self.stop_requests = 0
        self.reload_requested = False
        self.last_stop_signal: int | None = None
        self._last_stop_at = 0.0
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        os.set_inheritable(self._read_fd, False)
        os.set_inheritable(self._write_fd, False)

    @property
    def wakeup_fd(self) -> int:
        """Readable when a signal arrived; wait on it together with the children."""
        return self._read_fd

    @property
    def fds(self) -> tuple[int, int]:
        return self._read_fd, self._write_fd

    def install(self) -> None:
        """Install handlers, then unblock the signals that ``block_signals`` held back."""
        signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGQUIT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)

    def drain(self) -> None:
        try:
            while os.read(self._read_fd, 512):
                pass
        except BlockingIOError:
            pass

    def take_reload(self) -> bool:
        requested, self.reload_requested = self.reload_requested, False
        return requested

    def _on_stop(self, signo: int, _frame: FrameType | None) -> None:
        now = time.monotonic()
        if self.stop_requests and signo == self.last_stop_signal and now - self._last_stop_at < DUPLICATE_WITHIN:
            return  # the same stop sent twice: to the process and to its group (GNU timeout, a process manager)
        self.stop_requests += 1
        self.last_stop_signal = signo
        self._last_stop_at = now

    def _on_reload(self, _signo: int, _frame: FrameType | None) -> None:
        self.reload_requested = True


def block_signals() -> None:
    """Hold TERM/INT/QUIT/HUP while the supervisor builds itself; ``SignalFlags.install`` releases them."""
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
    for signo in IGNORED:
        signal.signal(signo, signal.SIG_IGN)
