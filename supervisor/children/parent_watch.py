"""Whether the supervisor that forked this child still runs it.

A parent that is gone is seen at once (``getppid``). A parent that is stopped (SIGSTOP, a debugger) or stuck in
the kernel (a frozen file system) is not gone, but it renews no lease: once its leases run out another instance
takes its tenants and starts children of its own, and both would collect. So a child whose parent has not run for
long enough that its lease may be about to run out stops itself, before that moment: the lease was renewed at the
parent's last poll, at most ``poll_interval`` before the parent stopped running."""

from __future__ import annotations

import logging
import os
import time

from supervisor.config import Settings
from supervisor.lease_term import shared_term
from supervisor.logs import log_event

log = logging.getLogger("supervisor.child")

#: Process states of a parent that does not run: stopped, traced, in uninterruptible sleep.
NOT_RUNNING = frozenset("TtD")
#: The child stops this long before the earliest moment its lease could run out (it wakes at least every second,
#: and may start a collection up to half a second early).
FENCE_MARGIN = 2.0
#: The parent's state is read at most this often (the main loop may ask at every turn).
LOOK_EVERY = 0.5


def fence_after(settings: Settings) -> float:
    """How long the parent may not run before the child stops: the shortest lease term less one poll."""
    return max(0.0, shared_term(settings.lease_duration) - settings.poll_interval - FENCE_MARGIN)


class ParentWatch:
    def __init__(self, parent_pid: int, settings: Settings, tenant: str) -> None:
        self._pid = parent_pid
        self._fence_after = fence_after(settings)
        self._tenant = tenant
        self._not_running_since: float | None = None
        self._looked_at = -LOOK_EVERY
        self._fenced = False

    def runs_us(self) -> bool:
        """False once the parent is gone, or has not run for ``fence_after`` seconds (logged once)."""
        if os.getppid() != self._pid or self._fenced:
            return False
        now = time.monotonic()
        if now - self._looked_at < LOOK_EVERY:
            return True
        self._looked_at = now
        state = _process_state(self._pid)
        if state is None or state not in NOT_RUNNING:
            self._not_running_since = None
            return True
        if self._not_running_since is None:
            self._not_running_since = now
        stalled = now - self._not_running_since
        if stalled < self._fence_after:
            return True
        self._fenced = True
        log_event(
            log, logging.WARNING, "tenant.fenced", "the supervisor (pid %d) has not run for %.0f s (state %s): its "
            "lease on this tenant may run out and another instance take the tenant over; stopping", self._pid,
            stalled, state, tenant=self._tenant,
        )  # fmt: skip
        return False


def _process_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0].decode("ascii", "replace") if fields else None
