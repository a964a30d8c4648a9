"""One tenant's child process and its state machine (modelled on supervisord's).

    STOPPED ──start──▶ STARTING ──first heartbeat + STARTSECS──▶ RUNNING
    STARTING/RUNNING ──request_stop──▶ STOPPING ──exit──▶ STOPPED
    STARTING/RUNNING ──unexpected exit──▶ EXITED ──▶ BACKOFF ──delay──▶ STARTING

The handle only tracks one process; the supervisor decides what follows an exit.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import ForkContext
from multiprocessing.process import BaseProcess

from supervisor.backoff import HEALTHY_RUN_SECONDS, config_error_backoff, crash_backoff
from supervisor.clock import utcnow
from supervisor.ipc import CHILD_EXIT_CONFIG, ChildSpec, Heartbeat
from supervisor.tenants import Tenant

#: A child counts as RUNNING once it has sent a heartbeat and stayed up this long.
STARTSECS = 1.0

ChildTarget = Callable[[ChildSpec, Connection, Sequence[Connection], Sequence[int]], None]


class ChildState(enum.StrEnum):
    STOPPED = "STOPPED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    EXITED = "EXITED"


class StopReason(enum.StrEnum):
    NOT_WANTED = "tenant no longer active here"
    SHUTDOWN = "supervisor stopping"
    NO_HEARTBEAT = "no heartbeat"
    RSS_LIMIT = "memory limit"
    LEASE_EXPIRING = "lease not renewed"


@dataclass(frozen=True)
class ChildExit:
    pid: int | None
    code: int | None
    uptime: float
    requested: StopReason | None
    killed: bool

    @property
    def description(self) -> str:
        if self.code is not None and self.code < 0:
            return f"killed by {signal.Signals(-self.code).name}"
        return f"exit code {self.code}"


class ChildHandle:
    def __init__(self, tenant: Tenant) -> None:
        self.tenant = tenant
        self.state = ChildState.STOPPED
        self.process: BaseProcess | None = None
        self.conn: Connection | None = None
        self.restarts = 0
        self.starts = 0
        self.started_at: float | None = None  # monotonic
        self.started_wall: dt.datetime | None = None
        self.last_heartbeat_at: float | None = None  # monotonic, when the parent received it
        self.last_heartbeat: Heartbeat | None = None
        self.retry_at: float | None = None
        self.stop_reason: StopReason | None = None
        self.kill_at: float | None = None
        self.killed = False
        self.last_exit_code: int | None = None
        self.last_exit_wall: dt.datetime | None = None
        self.last_error: str | None = None
        self.rss_mb: float | None = None
        self.crash_backoff = crash_backoff()
        self.config_backoff = config_error_backoff()

    @property
    def slug(self) -> str:
        return self.tenant.slug

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def alive(self) -> bool:
        """A process exists that has not been reaped yet."""
        return self.process is not None

    def start(
        self,
        context: ForkContext,
        spec: ChildSpec,
        target: ChildTarget,
        sibling_conns: Sequence[Connection],
        inherited_fds: Sequence[int],
    ) -> None:
        reader, writer = context.Pipe(duplex=False)
        # Everything open now but the child's own pipe end and stdio is the parent's: siblings' pipes and
        # sentinels, the parent-liveness pipes multiprocessing keeps per child, log files. The fork's own
        # sentinel pipes are created after this snapshot, so the child keeps them.
        parent_fds = sorted(set(inherited_fds) | (open_fds() - {0, 1, 2, writer.fileno()}))
        process = context.Process(
            target=target,
            args=(spec, writer, [*sibling_conns, reader], parent_fds),
            name=f"tenant-{spec.slug}",
        )
        process.start()
        writer.close()  # the child holds the only write end: its death gives the parent EOF
        if self.starts:
            self.restarts += 1
        self.starts += 1
        self.process, self.conn = process, reader
        self.state = ChildState.STARTING
        self.started_at, self.started_wall = time.monotonic(), utcnow()
        self.last_heartbeat_at = self.last_heartbeat = None
        self.retry_at = self.stop_reason = self.kill_at = None
        self.killed = False
        self.rss_mb = None

    def on_heartbeat(self, beat: Heartbeat, now: float) -> None:
        self.last_heartbeat, self.last_heartbeat_at = beat, now

    def promote_if_started(self, now: float) -> bool:
        """STARTING → RUNNING after the first heartbeat and STARTSECS; True when it happened."""
        if self.state is not ChildState.STARTING or self.last_heartbeat_at is None or self.started_at is None:
            return False
        if now - self.started_at < STARTSECS:
            return False
        self.state = ChildState.RUNNING
        return True

    def heartbeat_age(self, now: float) -> float:
        reference = self.last_heartbeat_at or self.started_at or now
        return now - reference

    def request_stop(self, reason: StopReason, now: float, grace: float) -> bool:
        """TERM once; KILL becomes due after ``grace`` seconds. False if already stopping."""
        if self.process is None or self.state is ChildState.STOPPING:
            return False
        self.state = ChildState.STOPPING
        self.stop_reason = reason
        self.kill_at = now + grace
        self._signal(signal.SIGTERM)
        return True

    def kill(self) -> None:
        self.killed = True
        self._signal(signal.SIGKILL)

    def reap(self, now: float) -> ChildExit:
        """Join the exited process (its sentinel is ready) and release its resources."""
        assert self.process is not None
        process = self.process
        process.join()
        code = process.exitcode
        uptime = now - (self.started_at or now)
        result = ChildExit(pid=process.pid, code=code, uptime=uptime, requested=self.stop_reason, killed=self.killed)
        process.close()
        if self.conn is not None:
            self.conn.close()
        self.process = self.conn = None
        self.last_exit_code, self.last_exit_wall = code, utcnow()
        self.state = ChildState.STOPPED if result.requested else ChildState.EXITED
        self.kill_at = None
        return result

    def schedule_restart(self, exit_info: ChildExit, now: float) -> float:
        """Enter BACKOFF; returns the delay before the next start."""
        if exit_info.requested is StopReason.RSS_LIMIT:
            delay = 0.0
        elif exit_info.code == CHILD_EXIT_CONFIG:
            delay = self.config_backoff.next_delay()
        else:
            if exit_info.uptime >= HEALTHY_RUN_SECONDS:
                self.crash_backoff.reset()
                self.config_backoff.reset()
            delay = self.crash_backoff.next_delay()
        self.state = ChildState.BACKOFF
        self.retry_at = now + delay
        return delay

    def cancel_backoff(self) -> None:
        if self.state in (ChildState.BACKOFF, ChildState.EXITED):
            self.state = ChildState.STOPPED
            self.retry_at = None

    def _signal(self, signo: signal.Signals) -> None:
        if self.process is None or self.process.pid is None:
            return
        with contextlib.suppress(ProcessLookupError):  # already exited: the sentinel reports it
            os.kill(self.process.pid, signo)


def open_fds() -> set[int]:
    """This process's open file descriptors (Linux), without the one the listing itself used."""
    listed = {int(name) for name in os.listdir("/proc/self/fd")}
    still_open = set()
    for fd in listed:
        with contextlib.suppress(OSError):
            os.fstat(fd)
            still_open.add(fd)
    return still_open
