"""The supervisor: one thread, one loop, one child process per active tenant leased to this instance.

Each turn waits on the signal wake-up fd, every child's pipe and every child's sentinel, then relays
children's log records and heartbeats, reaps exited children, polls the system DB when due,
reconciles the children with the tenants it may run, and tends them (timed moves, watchdog).
Children are forked: this process has no other thread and holds no DB handle between uses (NullPool).
See docs/architecture.md for the picture and the state machine.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import resource
import time
from multiprocessing.connection import Connection, wait
from typing import Any

from supervisor import databases
from supervisor.config import Settings, load_settings
from supervisor.errors import CONFIG, EXIT_FAILURE, STORAGE, ConfigError
from supervisor.ipc import ChildSpec
from supervisor.logs import configure_logging, log_event, write_pending_logs
from supervisor.parent.fork import preload_database_driver, run_child
from supervisor.parent.handle import ChildExit, ChildHandle, ChildState, ChildTarget, Due, StopReason
from supervisor.parent.instances import InstanceIdentity
from supervisor.parent.log_relay import read_messages
from supervisor.parent.metrics import Endpoints, open_endpoint, reopened_endpoint
from supervisor.parent.shutdown import shut_down
from supervisor.parent.signals import SignalFlags
from supervisor.parent.system_sync import SystemDbSync
from supervisor.parent.watchdog import check_heartbeat, check_memory
from supervisor.storage.engine import masked_url
from supervisor.storage.migrations import NewerSchemaError
from supervisor.tenants import Tenant

log = logging.getLogger("supervisor.parent")

#: Longest sleep of the loop: the watchdog and the kill deadlines are checked at least this often.
TICK_SECONDS = 1.0
#: Messages read from one child per turn, so a chatty child cannot starve the others.
MESSAGES_PER_TURN = 200


class Supervisor:
    def __init__(self, settings: Settings, flags: SignalFlags) -> None:
        self.settings = settings
        self.flags = flags
        self.target: ChildTarget = run_child
        self.identity = InstanceIdentity.create()
        self.context = multiprocessing.get_context("fork")
        self.system_db = SystemDbSync(settings, self.identity)
        self.handles: dict[int, ChildHandle] = {}
        self.active: dict[int, Tenant] = {}
        self.runnable: set[int] = set()
        self.next_memory_check = 0.0
        self.lease_fenced = False
        self.children_changed = False
        self.tick_seconds = TICK_SECONDS
        self.last_turn = time.monotonic()
        self.exit_code = 0
        self.endpoint = open_endpoint(settings, Endpoints(self))  # last: it may refuse the address

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> int:
        metrics = "http://{}:{}/metrics".format(*self.endpoint.address) if self.endpoint.address else ""
        log_event(
            log, logging.INFO, "supervisor.started", "supervisor started (instance %s, pid %d)%s",
            self.identity.id, self.identity.pid, f", metrics on {metrics}" if metrics else "",
            instance=self.identity.id, host=self.identity.host, metrics=metrics or None,
            open_files_limit=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        )  # fmt: skip
        while not self.flags.stop_requests:
            self.last_turn = time.monotonic()
            self.wait_and_dispatch(self.next_timeout())
            write_pending_logs()
            if self.flags.stop_requests:
                break
            if self.flags.take_reload():
                self.reload_settings()
            if self.system_db.poll_due(time.monotonic()):
                self.poll()
            self.tend_children(time.monotonic())
            if self.children_changed:
                self.children_changed = False
                self.system_db.record_children(self.handles.values())
        shut_down(self, TICK_SECONDS)
        return self.exit_code

    def next_timeout(self) -> float:
        now = time.monotonic()
        deadlines = [self.system_db.next_poll, now + TICK_SECONDS]
        deadlines += [d for d in (h.next_deadline() for h in self.handles.values()) if d is not None]
        if (client_deadline := self.endpoint.next_deadline()) is not None:
            deadlines.append(client_deadline)
        return max(0.0, min(deadlines) - now)

    def wait_and_dispatch(self, timeout: float) -> None:
        by_conn = {id(h.conn): h for h in self.handles.values() if h.conn is not None}
        by_sentinel = {h.process.sentinel: h for h in self.handles.values() if h.process is not None}
        waitables: list[Any] = [self.flags.wakeup_fd, *(h.conn for h in by_conn.values()), *by_sentinel]
        ready = wait([*waitables, *self.endpoint.waitables()], timeout)
        http = [item for item in ready if self.endpoint.owns(item)]
        self.endpoint.handle(http)
        exited: list[ChildHandle] = []
        for item in ready:
            if item in http:
                continue
            if item == self.flags.wakeup_fd:
                self.flags.drain()
            elif isinstance(item, Connection):
                read_messages(by_conn[id(item)], MESSAGES_PER_TURN)
            else:
                exited.append(by_sentinel[item])  # type: ignore[index]
        for handle in exited:
            read_messages(handle, None)  # everything it sent before dying comes before its exit line
            self.on_exit(handle, handle.reap(time.monotonic()))

    # -- system DB and reconciling ----------------------------------------------------------------

    def poll(self) -> None:
        try:
            result = self.system_db.poll(self.handles.values())
        except NewerSchemaError as exc:  # nothing to wait for: stop, and say why with a failing exit code
            log_event(log, logging.ERROR, "system_db.newer_schema", "stopping: %s", exc, error=str(exc),
                      error_class=STORAGE)  # fmt: skip
            self.exit_code = EXIT_FAILURE
            self.flags.stop_requests += 1
            return
        if result is None:
            return
        self.lease_fenced = False
        self.active, self.runnable = result.active, result.runnable
        self.reconcile()

    def reconcile(self) -> None:
        now = time.monotonic()
        for tenant_id in sorted(self.runnable):
            handle = self.handles.get(tenant_id)
            if handle is None:
                handle = self.handles[tenant_id] = ChildHandle(self.active[tenant_id])
            handle.tenant = self.active[tenant_id]
            if handle.state is ChildState.STOPPED:
                self.start(handle)
            else:
                self.follow_change(handle, now)
        for tenant_id, handle in list(self.handles.items()):
            if tenant_id in self.runnable:
                continue
            if handle.alive:
                self.stop(handle, StopReason.NOT_WANTED, now, self.settings.shutdown_timeout)
            else:
                handle.cancel_backoff()
                del self.handles[tenant_id]

    def follow_change(self, handle: ChildHandle, now: float) -> None:
        """A child whose tenant's DB or slug changed is stopped, to be started again at once (``handle.settle``)."""
        spec = handle.spec
        if spec is None or handle.state not in (ChildState.STARTING, ChildState.RUNNING):
            return
        if (change := databases.change_since(spec, handle.tenant)) is None:
            return
        log_event(
            log, logging.INFO, "tenant.changed", "tenant %s changed (%s): restarting its child", handle.slug, change,
            tenant=handle.slug, tenant_id=handle.tenant.id, change=change,
        )  # fmt: skip
        self.stop(handle, StopReason.TENANT_CHANGED, now, self.settings.shutdown_timeout)

    # -- tending children -------------------------------------------------------------------------

    def start(self, handle: ChildHandle) -> None:
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
            log_event(
                log, logging.ERROR, "child.start_failed", "cannot start the child of tenant %s: %s", tenant.slug, exc,
                tenant=tenant.slug, error=str(exc),
            )  # fmt: skip
            handle.start_failed(time.monotonic())
            return
        self.children_changed = True
        log_event(
            log, logging.INFO, "child.started", "child of tenant %s started (pid %s)", tenant.slug, handle.pid,
            tenant=tenant.slug, child_pid=handle.pid, restarts=handle.restarts,
        )  # fmt: skip

    def tend_children(self, now: float) -> None:
        if self.runnable and not self.lease_fenced and self.system_db.fence_due(now):
            if not self.system_db.failed_since_renewal:  # no outage: this process did not run (stopped, paused)
                self.poll()  # so renew first; fence only what that cannot renew
                now = time.monotonic()
            if self.runnable and self.system_db.fence_due(now):
                self.fence_unrenewed_leases(now)
        check_memory_now = now >= self.next_memory_check
        if check_memory_now:
            self.next_memory_check = now + self.settings.poll_interval
        for handle in list(self.handles.values()):
            due = handle.transition(now, wanted=handle.tenant.id in self.runnable)
            self.children_changed |= due is not Due.NOTHING  # the children table follows every state change
            if due is Due.PROMOTED:
                log_event(log, logging.DEBUG, "child.running", "child of tenant %s running", handle.slug,
                          tenant=handle.slug)  # fmt: skip
            elif due is Due.KILL:
                self.kill(handle, f"did not stop within {self.settings.shutdown_timeout:g}s")
            elif due is Due.START:
                self.start(handle)
            verdict = check_heartbeat(handle, now, self.settings.heartbeat_timeout)
            if verdict is not None and handle.conn is not None and handle.conn.poll():
                verdict = None  # messages wait unread (this loop was stalled): read them before judging
                read_messages(handle, MESSAGES_PER_TURN)
            if verdict is None and check_memory_now:
                verdict = check_memory(handle, self.settings.max_child_rss_mb)
            if verdict is not None:
                handle.last_error = verdict.detail
                log_event(
                    log, logging.WARNING, "child.watchdog", "stopping the child of tenant %s: %s",
                    handle.slug, verdict.detail, tenant=handle.slug, child_pid=handle.pid,
                )  # fmt: skip
                handle.request_stop(verdict.reason, now, min(self.settings.shutdown_timeout, 10.0))

    def fence_unrenewed_leases(self, now: float) -> None:
        log_event(
            log, logging.WARNING, "lease.expiring",
            "tenant leases could not be renewed: stopping %d children before the leases expire",
            sum(1 for h in self.handles.values() if h.alive), instance=self.identity.id,
        )  # fmt: skip
        self.lease_fenced = True
        self.runnable = set()
        for handle in self.handles.values():
            if not self.stop(handle, StopReason.LEASE_EXPIRING, now, self.settings.shutdown_timeout):
                handle.cancel_backoff()

    def stop(self, handle: ChildHandle, reason: StopReason, now: float, grace: float) -> bool:
        if not handle.request_stop(reason, now, grace):
            return False
        self.children_changed = True
        log_event(
            log, logging.INFO, "child.stopping", "stopping the child of tenant %s (pid %s): %s",
            handle.slug, handle.pid, reason.value, tenant=handle.slug, child_pid=handle.pid, reason=reason.value,
        )  # fmt: skip
        return True

    def on_exit(self, handle: ChildHandle, exit_info: ChildExit) -> None:
        self.children_changed = True
        log_event(
            log, logging.INFO if exit_info.expected else logging.WARNING, "child.exited",
            "child of tenant %s exited: %s", handle.slug, exit_info.description,
            tenant=handle.slug, child_pid=exit_info.pid, exit_code=exit_info.code,
            uptime_s=round(exit_info.uptime, 1),
            reason=exit_info.requested.value if exit_info.requested else "unexpected",
        )  # fmt: skip
        wanted = handle.tenant.id in self.runnable and not self.flags.stop_requests
        delay = handle.settle(exit_info, wanted, time.monotonic())
        if handle.state is ChildState.NEWER_SCHEMA:
            self.system_db.refused(handle)
        elif delay is not None:
            log_event(
                log, logging.INFO, "child.restarting", "restarting the child of tenant %s in %.1fs",
                handle.slug, delay, tenant=handle.slug, delay_s=round(delay, 2), restarts=handle.restarts + 1,
                exit_code=exit_info.code,
            )  # fmt: skip

    def kill(self, handle: ChildHandle, why: str) -> None:
        log_event(
            log, logging.WARNING, "child.killed", "killing the child of tenant %s (pid %s): %s",
            handle.slug, handle.pid, why, tenant=handle.slug, child_pid=handle.pid, reason=why,
        )  # fmt: skip
        handle.kill()

    # -- reload ----------------------------------------------------------------------------

    def reload_settings(self) -> None:
        if (path := self.settings.config_path) is None:
            return
        try:
            settings = load_settings(path)
            _refuse_restart_only_changes(self.settings, settings)
            if settings.logging != self.settings.logging:
                configure_logging(settings.logging)  # a log file that cannot be opened: the old one stays
            self.endpoint = reopened_endpoint(self.endpoint, self.settings, settings, Endpoints(self))
        except ConfigError as exc:
            log_event(
                log, logging.ERROR, "config.reload_failed", "configuration not reloaded, keeping the current "
                "settings: %s", exc, error=str(exc), error_class=CONFIG,
            )  # fmt: skip
            return
        self.system_db.use_settings(settings)
        self.settings = settings
        log_event(log, logging.INFO, "config.reloaded", "configuration reloaded from %s (new children use it)", path)

    def alive(self) -> list[ChildHandle]:
        return [h for h in self.handles.values() if h.alive]


#: Settings a running supervisor cannot take over: where its tenants, leases and children are recorded, and
#: where the tenants' DBs are (running children would go on writing the old ones while ``status`` read the new).
RESTART_ONLY = ("system_db", "tenant_db_url")


def _refuse_restart_only_changes(current: Settings, new: Settings) -> None:
    for key in RESTART_ONLY:
        if getattr(new, key) != getattr(current, key):
            raise ConfigError(
                f"collector.{key} changed to {masked_url(getattr(new, key))!r}: it takes effect only when the "
                "supervisor starts; restart it to use the new value, or undo the change"
            )
