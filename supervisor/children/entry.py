"""The tenant child process's entry point: process set-up around the tenant runtime.

``child_main(spec, conn)`` is the ``multiprocessing.Process`` target the parent starts (with the
``fork`` context). It makes the child die with its parent, routes logging to the parent through
``conn``, turns SIGTERM into a stop request, runs ``TenantRuntime`` and exits with one of the
``supervisor.ipc.CHILD_EXIT_*`` codes.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
from multiprocessing.connection import Connection

from setproctitle import setproctitle

from supervisor.children.parent_watch import ParentWatch
from supervisor.errors import CONFIG, INTERNAL, ConfigError
from supervisor.ipc import (
    CHILD_EXIT_CONFIG,
    CHILD_EXIT_CRASH,
    CHILD_EXIT_ORPHANED,
    HEARTBEAT,
    ChildSpec,
    Heartbeat,
    PipeLogHandler,
)
from supervisor.logs import quiet_libraries

log = logging.getLogger("supervisor.child")
_PR_SET_PDEATHSIG = 1


def child_main(spec: ChildSpec, conn: Connection) -> None:
    parent_pid = _parent_pid()
    setproctitle(f"collector-supervisor: tenant {spec.slug}")
    stop = threading.Event()
    _install_signal_handlers(stop)
    _die_with_parent()
    _offer_to_the_oom_killer()
    if os.getppid() != parent_pid:
        sys.exit(CHILD_EXIT_ORPHANED)
    handler = _route_logging_to_parent(conn, spec.settings.logging.level)

    def send_heartbeat(beat: Heartbeat) -> None:
        handler.send((HEARTBEAT, beat))

    parent_alive = ParentWatch(parent_pid, spec.settings, spec.slug).runs_us

    from supervisor.children.runtime import TenantRuntime

    try:
        code = TenantRuntime(spec, stop, send_heartbeat, parent_alive).run()
    except ConfigError as exc:
        log.error("tenant configuration unusable: %s", exc, extra=_context(spec, "child.config_error", CONFIG))
        code = CHILD_EXIT_CONFIG
    except Exception:
        log.exception("child crashed", extra=_context(spec, "child.crashed", INTERNAL))
        code = CHILD_EXIT_CRASH
    finally:
        logging.shutdown()
    sys.exit(code)


def _parent_pid() -> int:
    """The pid of the process that forked this one, as it was before the fork. ``os.getppid()`` read now may
    already be 1 (or a subreaper's pid) if the parent died meanwhile: the orphan would then never notice."""
    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None and parent.pid is not None else os.getppid()


def _context(spec: ChildSpec, event: str, error_class: str) -> dict[str, str]:
    return {"event": event, "tenant": spec.slug, "error_class": error_class}


def _install_signal_handlers(stop: threading.Event) -> None:
    signal.set_wakeup_fd(-1)  # inherited from the parent's loop; must not be written by the child
    signal.signal(signal.SIGTERM, lambda _signo, _frame: stop.set())
    signal.signal(signal.SIGQUIT, lambda _signo, _frame: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent owns it
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP})


def _die_with_parent() -> None:
    """Linux: the kernel sends SIGTERM to this child when the parent dies, even by SIGKILL."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the runtime's parent_alive() check covers it


#: Added to this child's out-of-memory score: the kernel's OOM killer takes a tenant child (the parent restarts it,
#: the other tenants go on) before the parent (every tenant at once) or the host's other programs (a database).
OOM_SCORE_ADJ = 500


def _offer_to_the_oom_killer() -> None:
    """Only ever raised (which needs no privilege), never lowered below what the service manager set."""
    try:
        with open("/proc/self/oom_score_adj", "r+", encoding="ascii") as adj:
            current = int(adj.read().strip() or 0)
            if current < OOM_SCORE_ADJ:
                adj.seek(0)
                adj.write(str(OOM_SCORE_ADJ))
    except (OSError, ValueError):
        pass  # not Linux, or /proc not mounted: the kernel's default choice stands


def _route_logging_to_parent(conn: Connection, level: str) -> PipeLogHandler:
    handler = PipeLogHandler(conn)
    root = logging.getLogger()
    for inherited in list(root.handlers):
        root.removeHandler(inherited)
    root.addHandler(handler)
    root.setLevel(level)
    quiet_libraries(level)
    return handler
