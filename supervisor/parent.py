"""The supervisor: one thread, one loop, one child process per active tenant leased to this instance.

Each turn waits on the signal wake-up fd, every child's pipe and every child's sentinel, then:
relays children's log records and heartbeats, reaps exited children (``join``), polls the system DB
when due (instance heartbeat, active tenants, leases, children table), reconciles the children with
the tenants it may run, and runs the watchdog. Children are forked (see DESIGN.md for the memory
figures): this process has no other thread and holds no DB handle between uses (NullPool).
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import signal
import time
from collections.abc import Iterable
from multiprocessing.connection import Connection, wait

from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from supervisor import databases, instances, leases
from supervisor.child_handle import ChildExit, ChildHandle, ChildState, ChildTarget, StopReason
from supervisor.child_process import preload_database_driver, run_child
from supervisor.children_table import record_children
from supervisor.clock import utcnow
from supervisor.config import Settings, load_settings
from supervisor.errors import CollectorError, ConfigError
from supervisor.instances import InstanceIdentity
from supervisor.ipc import CHILD_EXIT_OK, HEARTBEAT, LOG, ChildSpec
from supervisor.log_relay import relay_child_record
from supervisor.logs import configure_logging
from supervisor.signals import SignalFlags
from supervisor.storage.migrations import upgrade_system
from supervisor.storage.system_schema import tenants as tenants_table
from supervisor.system_db_health import SystemDbHealth
from supervisor.tenants import ACTIVE, Tenant
from supervisor.watchdog import check_heartbeat, check_memory

log = logging.getLogger("supervisor.parent")

#: Longest sleep of the loop: the watchdog and the kill deadlines are checked at least this often.
TICK_SECONDS = 1.0
#: Messages read from one child per turn, so a chatty child cannot starve the others.
MESSAGES_PER_TURN = 200


class Supervisor:
    def __init__(self, settings: Settings, flags: SignalFlags, target: ChildTarget = run_child) -> None:
        self.settings = settings
        self.flags = flags
        self.target = target
        self.identity = InstanceIdentity.create()
        self.started_wall = utcnow()
        self.context = multiprocessing.get_context("fork")
        self.engine: Engine = databases.system_engine(settings)
        self.db_health = SystemDbHealth(settings.system_db, max_retry_delay=settings.poll_interval)
        self.handles: dict[int, ChildHandle] = {}
        self.active: dict[int, Tenant] = {}
        self.runnable: set[int] = set()
        self.schema_ready = False
        self.next_poll = 0.0
        self.next_memory_check = 0.0
        self.lease_renewed_at: float | None = None
        self.lease_fenced = False
        self.children_changed = False

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> int:
        log.info(
            "supervisor started (instance %s, pid %d)",
            self.identity.id,
            self.identity.pid,
            extra={"event": "supervisor.started", "instance": self.identity.id, "host": self.identity.host},
        )
        while not self.flags.stop_requests:
            self._wait_and_dispatch(self._next_timeout())
            if self.flags.stop_requests:
                break
            if self.flags.take_reload():
                self._reload_settings()
            now = time.monotonic()
            if now >= self.next_poll:
                self._poll()
            self._tend_children(time.monotonic())
            if self.children_changed and self.db_health.available and self.schema_ready:
                self._record_children()
        self._shutdown()
        return 0

    def _next_timeout(self) -> float:
        now = time.monotonic()
        deadlines = [self.next_poll, now + TICK_SECONDS]
        deadlines += [h.retry_at for h in self.handles.values() if h.retry_at is not None]
        deadlines += [h.kill_at for h in self.handles.values() if h.kill_at is not None]
        return max(0.0, min(deadlines) - now)

    def _wait_and_dispatch(self, timeout: float) -> None:
        by_conn = {id(h.conn): h for h in self.handles.values() if h.conn is not None}
        by_sentinel = {h.process.sentinel: h for h in self.handles.values() if h.process is not None}
        waitables: list[object] = [self.flags.wakeup_fd, *(h.conn for h in by_conn.values()), *by_sentinel]
        ready = wait(waitables, timeout)  # type: ignore[arg-type]
        exited: list[ChildHandle] = []
        for item in ready:
            if item == self.flags.wakeup_fd:
                self.flags.drain()
            elif isinstance(item, Connection):
                self._read_messages(by_conn[id(item)], MESSAGES_PER_TURN)
            else:
                exited.append(by_sentinel[item])  # type: ignore[index]
        for handle in exited:
            self._read_messages(handle, None)  # everything it sent before dying comes before its exit line
            self._on_exit(handle, handle.reap(time.monotonic()))

    def _read_messages(self, handle: ChildHandle, limit: int | None) -> None:
        conn = handle.conn
        count = 0
        while conn is not None and (limit is None or count < limit):
            try:
                if not conn.poll():
                    return
                kind, payload = conn.recv()
            except (EOFError, OSError):
                conn.close()
                handle.conn = None  # the child is gone or going: its sentinel reports the exit
                return
            count += 1
            if kind == LOG:
                relay_child_record(payload)
            elif kind == HEARTBEAT:
                handle.on_heartbeat(payload, time.monotonic())

    # -- system DB --------------------------------------------------------------------------------

    def _poll(self) -> None:
        started = time.monotonic()
        try:
            if not self.schema_ready:
                upgrade_system(self.engine)
                self.schema_ready = True
            now = utcnow()
            busy = {tenant_id for tenant_id, h in self.handles.items() if h.alive}
            with self.engine.begin() as conn:
                instances.heartbeat(conn, self.identity, self.started_wall, now)
                live = instances.count_live(conn, now, self.settings.lease_duration)
                rows = conn.execute(select(tenants_table).where(tenants_table.c.status == ACTIVE)).mappings()
                active = {t.id: t for t in (Tenant.from_row(row) for row in rows)}
                runnable = leases.sync_leases(
                    conn, self.identity.id, list(active), busy, live, now, self.settings.lease_duration
                )
                record_children(conn, self.identity.id, self.handles.values(), now)
        except (SQLAlchemyError, CollectorError) as exc:
            self.next_poll = time.monotonic() + self.db_health.failed(exc)
            return
        self.db_health.succeeded()
        self.lease_renewed_at = started
        self.lease_fenced = False
        self.active, self.runnable = active, runnable
        self.next_poll = started + self.settings.poll_interval
        self._reconcile()

    def _record_children(self) -> None:
        """Write starts and exits as they happen (polls write everything anyway)."""
        self.children_changed = False
        try:
            with self.engine.begin() as conn:
                record_children(conn, self.identity.id, self.handles.values(), utcnow())
        except (SQLAlchemyError, CollectorError) as exc:
            self.next_poll = time.monotonic() + self.db_health.failed(exc)

    def _lease_fence_at(self) -> float | None:
        """When to stop children whose lease could not be renewed, so they are gone before it expires."""
        if self.lease_renewed_at is None:
            return None
        duration = self.settings.lease_duration
        return self.lease_renewed_at + duration - min(self.settings.shutdown_timeout, duration / 2)

    # -- reconciling ------------------------------------------------------------------------------

    def _reconcile(self) -> None:
        now = time.monotonic()
        for tenant_id in sorted(self.runnable):
            handle = self.handles.get(tenant_id)
            if handle is None:
                handle = self.handles[tenant_id] = ChildHandle(self.active[tenant_id])
            handle.tenant = self.active[tenant_id]
            if handle.state is ChildState.STOPPED:
                self._start(handle)
        for tenant_id, handle in list(self.handles.items()):
            if tenant_id in self.runnable:
                continue
            if handle.alive:
                if handle.request_stop(StopReason.NOT_WANTED, now, self.settings.shutdown_timeout):
                    self._log_stopping(handle)
            else:
                handle.cancel_backoff()
                del self.handles[tenant_id]

    def _start(self, handle: ChildHandle) -> None:
        tenant = handle.tenant
        spec = ChildSpec(
            tenant_id=tenant.id,
            slug=tenant.slug,
            db_url=databases.tenant_url(self.settings, tenant),
            instance_id=self.identity.id,
            settings=self.settings,
        )
        siblings = [h.conn for h in self.handles.values() if h.conn is not None and h is not handle]
        preload_database_driver(spec.db_url)
        gc.freeze()  # the child's collector then never touches (copies) the parent's objects
        try:
            handle.start(self.context, spec, self.target, siblings, self.flags.fds)
        except OSError as exc:
            log.error(
                "cannot start the child of tenant %s: %s",
                tenant.slug,
                exc,
                extra={"event": "child.start_failed", "tenant": tenant.slug, "error": str(exc)},
            )
            delay = handle.crash_backoff.next_delay()
            handle.state, handle.retry_at = ChildState.BACKOFF, time.monotonic() + delay
            return
        self.children_changed = True
        log.info(
            "child of tenant %s started (pid %s)",
            tenant.slug,
            handle.pid,
            extra={
                "event": "child.started",
                "tenant": tenant.slug,
                "child_pid": handle.pid,
                "restarts": handle.restarts,
            },
        )

    def _tend_children(self, now: float) -> None:
        fence_at = self._lease_fence_at()
        if fence_at is not None and now >= fence_at and not self.lease_fenced and self.runnable:
            self._fence_unrenewed_leases(now)
        check_memory_now = now >= self.next_memory_check
        if check_memory_now:
            self.next_memory_check = now + self.settings.poll_interval
        for handle in list(self.handles.values()):
            if handle.promote_if_started(now):
                log.debug(
                    "child of tenant %s running", handle.slug, extra={"event": "child.running", "tenant": handle.slug}
                )
            if handle.state is ChildState.STOPPING and handle.kill_at is not None and now >= handle.kill_at:
                self._kill(handle, f"did not stop within {self.settings.shutdown_timeout:g}s")
                handle.kill_at = None
            verdict = check_heartbeat(handle, now, self.settings.heartbeat_timeout)
            if verdict is None and check_memory_now:
                verdict = check_memory(handle, self.settings.max_child_rss_mb)
            if verdict is not None:
                handle.last_error = verdict.detail
                log.warning(
                    "stopping the child of tenant %s: %s",
                    handle.slug,
                    verdict.detail,
                    extra={"event": "child.watchdog", "tenant": handle.slug, "child_pid": handle.pid},
                )
                handle.request_stop(verdict.reason, now, self._watchdog_grace())
            if (
                handle.state is ChildState.BACKOFF
                and handle.retry_at is not None
                and now >= handle.retry_at
                and handle.tenant.id in self.runnable
            ):
                self._start(handle)

    def _watchdog_grace(self) -> float:
        return min(self.settings.shutdown_timeout, 10.0)

    def _fence_unrenewed_leases(self, now: float) -> None:
        log.warning(
            "tenant leases could not be renewed: stopping %d children before the leases expire",
            sum(1 for h in self.handles.values() if h.alive),
            extra={"event": "lease.expiring", "instance": self.identity.id},
        )
        self.lease_fenced = True
        self.runnable = set()
        for handle in self.handles.values():
            if handle.request_stop(StopReason.LEASE_EXPIRING, now, self.settings.shutdown_timeout):
                self._log_stopping(handle)
            else:
                handle.cancel_backoff()

    def _on_exit(self, handle: ChildHandle, exit_info: ChildExit) -> None:
        self.children_changed = True
        expected = exit_info.requested is not None and exit_info.code == CHILD_EXIT_OK
        if not expected and exit_info.requested is None:
            handle.last_error = exit_info.description
        log.log(
            logging.INFO if expected else logging.WARNING,
            "child of tenant %s exited: %s",
            handle.slug,
            exit_info.description,
            extra={
                "event": "child.exited",
                "tenant": handle.slug,
                "child_pid": exit_info.pid,
                "exit_code": exit_info.code,
                "uptime_s": round(exit_info.uptime, 1),
                "reason": exit_info.requested.value if exit_info.requested else "unexpected",
            },
        )
        wanted = handle.tenant.id in self.runnable and not self.flags.stop_requests
        if exit_info.requested in (StopReason.NOT_WANTED, StopReason.SHUTDOWN, StopReason.LEASE_EXPIRING) or not wanted:
            handle.state = ChildState.STOPPED
            return
        delay = handle.schedule_restart(exit_info, time.monotonic())
        log.info(
            "restarting the child of tenant %s in %.1fs",
            handle.slug,
            delay,
            extra={
                "event": "child.restarting",
                "tenant": handle.slug,
                "delay_s": round(delay, 2),
                "restarts": handle.restarts + 1,
                "exit_code": exit_info.code,
            },
        )

    def _kill(self, handle: ChildHandle, why: str) -> None:
        log.warning(
            "killing the child of tenant %s (pid %s): %s",
            handle.slug,
            handle.pid,
            why,
            extra={"event": "child.killed", "tenant": handle.slug, "child_pid": handle.pid, "reason": why},
        )
        handle.kill()

    def _log_stopping(self, handle: ChildHandle) -> None:
        reason = handle.stop_reason.value if handle.stop_reason else ""
        log.info(
            "stopping the child of tenant %s (pid %s): %s",
            handle.slug,
            handle.pid,
            reason,
            extra={"event": "child.stopping", "tenant": handle.slug, "child_pid": handle.pid, "reason": reason},
        )

    # -- reload and shutdown ----------------------------------------------------------------------

    def _reload_settings(self) -> None:
        path = self.settings.config_path
        if path is None:
            return
        try:
            settings = load_settings(path)
        except ConfigError as exc:
            log.error(
                "configuration not reloaded, keeping the current settings: %s",
                exc,
                extra={"event": "config.reload_failed", "error": str(exc), "error_class": "config"},
            )
            return
        if settings.logging != self.settings.logging:
            configure_logging(settings.logging)
        if settings.system_db != self.settings.system_db:
            self.engine = databases.system_engine(settings)
            self.schema_ready = False
        self.settings = settings
        self.next_poll = 0.0
        log.info(
            "configuration reloaded from %s (new children use it)",
            path,
            extra={"event": "config.reloaded"},
        )

    def _shutdown(self) -> None:
        signal_name = signal.Signals(self.flags.last_stop_signal).name if self.flags.last_stop_signal else "request"
        alive = [h for h in self.handles.values() if h.alive]
        log.info(
            "supervisor stopping on %s: stopping %d children",
            signal_name,
            len(alive),
            extra={"event": "supervisor.stopping", "instance": self.identity.id},
        )
        now = time.monotonic()
        for handle in self.handles.values():
            if not handle.request_stop(StopReason.SHUTDOWN, now, self.settings.shutdown_timeout):
                handle.cancel_backoff()
                if handle.alive:  # already stopping for another reason: it gets the same deadline
                    handle.kill_at = min(handle.kill_at or now, now + self.settings.shutdown_timeout)
        escalated = False
        while any(h.alive for h in self.handles.values()):
            now = time.monotonic()
            if self.flags.stop_requests > 1 and not escalated:
                escalated = True
                for handle in self._alive():
                    self._kill(handle, "second stop signal")
            for handle in self._alive():
                if not handle.killed and handle.kill_at is not None and now >= handle.kill_at:
                    self._kill(handle, f"did not stop within {self.settings.shutdown_timeout:g}s")
            deadlines = [h.kill_at - now for h in self._alive() if h.kill_at is not None and not h.killed]
            self._wait_and_dispatch(max(0.0, min([TICK_SECONDS, *deadlines])))
        self._record_stop()
        log.info(
            "supervisor stopped",
            extra={"event": "supervisor.stopped", "instance": self.identity.id},
        )

    def _alive(self) -> Iterable[ChildHandle]:
        return [h for h in self.handles.values() if h.alive]

    def _record_stop(self) -> None:
        now = utcnow()
        try:
            with self.engine.begin() as conn:
                record_children(conn, self.identity.id, self.handles.values(), now)
                leases.release_leases(conn, self.identity.id)
                instances.mark_stopped(conn, self.identity, now)
        except (SQLAlchemyError, CollectorError) as exc:
            log.warning(
                "could not record the stop in the system DB (leases expire on their own): %s",
                exc,
                extra={"event": "supervisor.stop_unrecorded", "error": str(exc), "error_class": "storage"},
            )
