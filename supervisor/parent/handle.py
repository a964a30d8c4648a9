"""One tenant's child process and its state machine (modelled on supervisord's ``Subprocess``).

    STOPPED ──start──▶ STARTING ──first heartbeat + STARTSECS──▶ RUNNING
    STARTING/RUNNING ──request_stop──▶ STOPPING ──exit──▶ STOPPED
    STARTING/RUNNING ──unexpected exit──▶ BACKOFF ──delay──▶ STARTING (a newer tenant schema: NEWER_SCHEMA, final)
    STOPPING ──kill_at passed──▶ (KILL sent) ──exit──▶ STOPPED

Every change of ``state`` happens in a method of the handle. The timed moves are in ``transition(now)``,
which returns the action that is due (start, kill) for the loop to carry out with its logging; the
loop decides only whether the tenant is still wanted. The OS calls (fork, kill, join) go through the
process object, so the unit tests drive the machine with a fake process. See docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import zip_longest
from multiprocessing.connection import Connection
from multiprocessing.context import ForkContext
from multiprocessing.process import BaseProcess

from supervisor import process_identity
from supervisor.backoff import HEALTHY_RUN_SECONDS, config_error_backoff, crash_backoff
from supervisor.clock import utcnow
from supervisor.ipc import CHILD_EXIT_CONFIG, CHILD_EXIT_NEWER_SCHEMA, CHILD_EXIT_OK, ChildSpec, Heartbeat
from supervisor.open_files import open_fds
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
    NEWER_SCHEMA = "NEWER_SCHEMA"  # exited: the tenant DB needs a newer collector (the tenant is given up here)


class StopReason(enum.StrEnum):
    NOT_WANTED = "tenant no longer active here"
    SHUTDOWN = "supervisor stopping"
    NO_HEARTBEAT = "no heartbeat"
    RSS_LIMIT = "memory limit"
    LEASE_EXPIRING = "lease not renewed"
    TENANT_CHANGED = "tenant's DB or slug changed"


#: Stops after which the child is not started again by this handle.
FINAL_STOPS = frozenset({StopReason.NOT_WANTED, StopReason.SHUTDOWN, StopReason.LEASE_EXPIRING})


class Due(enum.Enum):
    """What ``transition`` says the loop must do now."""

    NOTHING = "nothing"
    PROMOTED = "promoted"  # STARTING → RUNNING happened (the loop logs it)
    KILL = "kill"  # the stop's grace is over
    START = "start"  # the backoff delay is over


@dataclass(frozen=True)
class CollectionTotals:
    """A tenant's collection counters summed over its children (each child counts from zero)."""

    results: Counter[str] = field(default_factory=Counter)
    duration_counts: tuple[int, ...] = ()
    duration_sum: float = 0.0

    def plus(self, beat: Heartbeat | None) -> CollectionTotals:
        if beat is None:
            return self
        counts = [a + b for a, b in zip_longest(self.duration_counts, beat.duration_counts, fillvalue=0)]
        return CollectionTotals(self.results + Counter(dict(beat.results)), tuple(counts),
                                self.duration_sum + beat.duration_sum)  # fmt: skip


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
            name = signal.Signals(-self.code).name
            if self.code == -signal.SIGKILL and not self.killed:  # most often the kernel, out of memory
                return f"killed by {name}, not sent by the supervisor (the out-of-memory killer? see dmesg)"
            return f"killed by {name}"
        return f"exit code {self.code}"

    @property
    def expected(self) -> bool:
        """A stop the parent asked for, ended with a clean exit."""
        return self.requested is not None and self.code == CHILD_EXIT_OK


#: How a signal reaches a child (``os.kill``); the unit tests pass a recorder instead.
Kill = Callable[[int, int], None]


class ChildHandle:
    def __init__(self, tenant: Tenant, kill: Kill = os.kill) -> None:
        self.tenant = tenant
        #: What the running (or last) child was started with.
        self.spec: ChildSpec | None = None
        self._kill = kill
        self.state = ChildState.STOPPED
        self.process: BaseProcess | None = None
        self.conn: Connection | None = None
        self.restarts = 0
        self._moving = False  # the backoff is a move to the tenant's new DB or slug, not a restart
        self.starts = 0
        self.started_at: float | None = None  # monotonic
        self.started_wall: dt.datetime | None = None
        self.process_key: str | None = None  # process_identity.key of the running (or last) child
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
        self.carried = CollectionTotals()  # the counters of this tenant's earlier children
        self._counted_beat: Heartbeat | None = None  # the running child's newest heartbeat, not yet carried
        self.crash_backoff = crash_backoff()
        self.config_backoff = config_error_backoff()

    @property
    def slug(self) -> str:
        """The slug the last child was started with (the row may have been renamed since), else the tenant's."""
        return self.spec.slug if self.spec is not None else self.tenant.slug

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def alive(self) -> bool:
        """A process exists that has not been reaped yet."""
        return self.process is not None

    # --- moves the loop asks for -------------------------------------------------------------------------
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
            daemon=True,  # a parent failing unexpectedly stops its children as it exits, instead of waiting on them
        )
        try:
            process.start()
        except BaseException:
            reader.close()
            raise
        finally:
            writer.close()  # the child holds the only write end: its death gives the parent EOF
        if self.state is ChildState.BACKOFF and not self._moving:  # not a start after a stop the parent meant
            self.restarts += 1
        self.starts += 1
        self.process, self.conn, self.spec = process, reader, spec
        self.state = ChildState.STARTING
        self.started_at, self.started_wall = time.monotonic(), utcnow()
        self.process_key = process_identity.key(process.pid)
        self.last_heartbeat_at = self.last_heartbeat = None
        self.retry_at = self.stop_reason = self.kill_at = None
        self.killed = False
        self.rss_mb = None

    def start_failed(self, now: float) -> float:
        """The fork itself failed: back off as after a crash; returns the delay."""
        return self._enter_backoff(self.crash_backoff.next_delay(), now)

    def on_heartbeat(self, beat: Heartbeat, now: float, wall_now: float | None = None) -> None:
        """``last_heartbeat_at`` is when the child *sent* it (on this clock): a parent that read its pipe late
        (its loop stalled on the system DB) does not blame the child for the delay."""
        sent_ago = 0.0 if wall_now is None else min(max(0.0, wall_now - beat.sent_at), now - (self.started_at or now))
        self.last_heartbeat, self.last_heartbeat_at = beat, now - sent_ago
        self._counted_beat = beat

    def totals(self) -> CollectionTotals:
        return self.carried.plus(self._counted_beat)

    def heartbeat_age(self, now: float) -> float:
        reference = self.last_heartbeat_at or self.started_at or now
        return now - reference

    def request_stop(self, reason: StopReason, now: float, grace: float) -> bool:
        """TERM once; KILL becomes due after ``grace`` seconds. False if already stopping or not alive."""
        if self.process is None or self.state is ChildState.STOPPING:
            return False
        self.state = ChildState.STOPPING
        self.stop_reason = reason
        self.kill_at = now + grace
        self._signal(signal.SIGTERM)
        return True

    def stop_by(self, deadline: float) -> None:
        """Already stopping for another reason: make its KILL due no later than ``deadline``."""
        if self.alive and not self.killed:
            self.kill_at = deadline if self.kill_at is None else min(self.kill_at, deadline)

    def kill(self) -> None:
        self.killed = True
        self.kill_at = None
        self._signal(signal.SIGKILL)

    def cancel_backoff(self) -> None:
        """Not wanted any more: a child waiting to restart is not restarted."""
        if self.state is ChildState.BACKOFF:
            self.state = ChildState.STOPPED
            self.retry_at = None

    # --- timed moves -------------------------------------------------------------------------------------
    def transition(self, now: float, wanted: bool) -> Due:
        """The move that time has made due; state changes that need no OS call are made here."""
        if self.state is ChildState.STARTING:
            started = self.started_at
            if self.last_heartbeat_at is not None and started is not None and now - started >= STARTSECS:
                self.state = ChildState.RUNNING
                return Due.PROMOTED
        elif self.state is ChildState.STOPPING:
            if self.kill_at is not None and now >= self.kill_at and not self.killed:
                return Due.KILL
        elif self.state is ChildState.BACKOFF:
            if not wanted:
                self.cancel_backoff()
            elif self.retry_at is not None and now >= self.retry_at:
                return Due.START
        return Due.NOTHING

    def next_deadline(self) -> float | None:
        """The earliest time ``transition`` may have something to do (the loop sleeps no longer)."""
        if self.state is ChildState.BACKOFF:
            return self.retry_at
        if self.state is ChildState.STOPPING and not self.killed:
            return self.kill_at
        return None

    # --- exit --------------------------------------------------------------------------------------------
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
        self.carried, self._counted_beat = self.totals(), None
        self.last_exit_code, self.last_exit_wall = code, utcnow()
        self.kill_at = None
        if result.requested is None:
            self.last_error = result.description
        return result

    def settle(self, exit_info: ChildExit, wanted: bool, now: float) -> float | None:
        """After ``reap``: STOPPED, or BACKOFF with the returned delay before the next start."""
        if exit_info.requested in FINAL_STOPS or not wanted:
            self.state = ChildState.STOPPED
            return None
        if exit_info.code == CHILD_EXIT_NEWER_SCHEMA and exit_info.requested is None:
            self.state = ChildState.NEWER_SCHEMA
            return None
        recycled_healthy = exit_info.requested is StopReason.RSS_LIMIT and exit_info.uptime >= HEALTHY_RUN_SECONDS
        if recycled_healthy or exit_info.requested is StopReason.TENANT_CHANGED:  # else too big from its start
            delay = 0.0
        elif exit_info.code == CHILD_EXIT_CONFIG:
            delay = self.config_backoff.next_delay()
        else:
            if exit_info.uptime >= HEALTHY_RUN_SECONDS:
                self.crash_backoff.reset()
                self.config_backoff.reset()
            delay = self.crash_backoff.next_delay()
        return self._enter_backoff(delay, now, moving=exit_info.requested is StopReason.TENANT_CHANGED)

    def _enter_backoff(self, delay: float, now: float, moving: bool = False) -> float:
        self.state, self._moving = ChildState.BACKOFF, moving
        self.retry_at = now + delay
        return delay

    def _signal(self, signo: signal.Signals) -> None:
        if self.process is None or self.process.pid is None:
            return
        with contextlib.suppress(ProcessLookupError):  # already exited: the sentinel reports it
            self._kill(self.process.pid, signo)

