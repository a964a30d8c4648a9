"""The supervisor's graceful stop: every child asked to stop within ``shutdown_timeout``, killed after it (or at
once on a second stop signal), their messages relayed to the end, then the stop recorded in the system DB."""

from __future__ import annotations

import logging
import signal
import time
from typing import TYPE_CHECKING

from supervisor.errors import STORAGE
from supervisor.logs import log_event
from supervisor.parent.handle import Due, StopReason
from supervisor.storage.engine import describe_db_error

if TYPE_CHECKING:
    from supervisor.parent.loop import Supervisor

log = logging.getLogger("supervisor.parent")


def shut_down(sup: Supervisor, tick_seconds: float) -> None:
    flags, settings = sup.flags, sup.settings
    signal_name = signal.Signals(flags.last_stop_signal).name if flags.last_stop_signal else "request"
    log_event(
        log, logging.INFO, "supervisor.stopping", "supervisor stopping on %s: stopping %d children",
        signal_name, len(sup.alive()), instance=sup.identity.id,
    )  # fmt: skip
    now = time.monotonic()
    for handle in sup.handles.values():
        if not handle.request_stop(StopReason.SHUTDOWN, now, settings.shutdown_timeout):
            handle.cancel_backoff()
            handle.stop_by(now + settings.shutdown_timeout)  # already stopping: the same deadline
    escalated = False
    while alive := sup.alive():
        now = time.monotonic()
        if flags.stop_requests > 1 and not escalated:
            escalated = True
            for handle in alive:
                sup.kill(handle, "second stop signal")
        for handle in alive:
            if handle.transition(now, wanted=False) is Due.KILL:
                sup.kill(handle, f"did not stop within {settings.shutdown_timeout:g}s")
        deadlines = [d - now for d in (h.next_deadline() for h in alive) if d is not None]
        sup.wait_and_dispatch(max(0.0, min([tick_seconds, *deadlines])))
    failure = sup.system_db.record_stop(sup.handles.values())
    if failure is not None:
        error = describe_db_error(failure)
        log_event(
            log, logging.WARNING, "supervisor.stop_unrecorded",
            "could not record the stop in the system DB (leases expire on their own): %s", error,
            error=error, error_class=STORAGE,
        )  # fmt: skip
    sup.endpoint.close()
    log_event(log, logging.INFO, "supervisor.stopped", "supervisor stopped", instance=sup.identity.id)
