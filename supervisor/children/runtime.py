"""TenantRuntime: one tenant's collection loop, run in the child process's main thread.

The main thread schedules, hands collections to the pool (``Flights``), watches their deadlines,
turns finished collections into rows (``OutcomeRecorder``) and passes them to the writer thread.
Collection threads do network I/O only; the server-list thread (``ServerListReader``) reads the tenant DB,
the main thread only at start (schema, states, baselines, the first list), so a stuck tenant DB never holds
scheduling, deadlines or heartbeats; only the writer writes it. See docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from supervisor.children.collect import CollectionOutcome
from supervisor.children.flights import Flights
from supervisor.children.heartbeat import tenant_heartbeat
from supervisor.children.memory_guard import MemoryGuard
from supervisor.children.odbc_driver import resolve_driver
from supervisor.children.outage import Outage
from supervisor.children.pool import CollectionPool
from supervisor.children.recorder import OutcomeRecorder
from supervisor.children.scheduler import Scheduler
from supervisor.children.server_list import ServerList
from supervisor.children.server_list_reader import ServerListRead, ServerListReader
from supervisor.children.spool import Spool
from supervisor.children.stats import TenantStats
from supervisor.children.stored_state import load_baselines, load_states
from supervisor.children.tenant_db import db_call_timeout, describe_failure, refuse_newer_schema
from supervisor.children.writer import Writer
from supervisor.config import Settings
from supervisor.errors import CollectorError, ConfigError
from supervisor.ipc import CHILD_EXIT_OK, CHILD_EXIT_ORPHANED, ChildSpec, Heartbeat
from supervisor.logs import log_event
from supervisor.secret_box import DeferredSecretBox
from supervisor.storage import tenant_owner
from supervisor.storage.engine import make_engine
from supervisor.storage.migrations import NewerSchemaError, upgrade_tenant

log = logging.getLogger("supervisor.child")

#: Longest gap between heartbeats; shorter when ``heartbeat_timeout`` is short (a quarter of it).
HEARTBEAT_EVERY = 5.0
SUMMARY_EVERY = 60.0
#: Longest main-loop sleep (a stop request wakes the loop at once). The loop wakes when a collection is
#: due or an unsettled one reaches its deadline; finished collections are passed on to the writer at the
#: next wake, not on their own (one wake per collection, not two).
IDLE_TICK = 1.0
#: A wake starts every collection due within this many seconds (half the shortest interval), not only those
#: due now: fewer wakes of the loop and of the pool's threads (a wake, not the work, is most of a collection's
#: cost outside the driver). A collection may so start up to this much before its slot, never after it.
START_AHEAD = 0.5
#: How long stop() gives the writer to flush before spooling.
WRITER_FLUSH_TIMEOUT = 5.0
#: A stopping child is done this long before the parent's KILL (``shutdown_timeout`` after its TERM); in-flight
#: collections give way FLUSH_SHARE before that to the writer's flush (what is collected counts more).
STOP_MARGIN = 1.0
FLUSH_SHARE = 1.5
STARTUP_RETRY = 5.0
#: How often a stopping child looks at its last collections (each ends by its deadline).
SHUTDOWN_POLL = 0.02


class TenantRuntime:
    def __init__(
        self,
        spec: ChildSpec,
        stop_event: threading.Event,
        send_heartbeat: Callable[[Heartbeat], None],
        parent_alive: Callable[[], bool],
    ) -> None:
        self.spec = spec
        self.settings: Settings = spec.settings
        self.tenant = spec.slug
        self._stop = stop_event
        self._send_heartbeat = send_heartbeat
        self._parent_alive = parent_alive
        self._exit_code = CHILD_EXIT_OK
        self._start_outage = Outage(log, self.tenant, "child.db_available", "tenant DB available after %.0f s")
        self._refresh_outage = Outage(log, self.tenant, "servers.refresh_recovered", "server list read after %.0f s")
        self._guarded = False
        self._disabled = 0
        self._scheduler = Scheduler(salt=spec.slug, ahead=START_AHEAD)
        self._box = DeferredSecretBox(self.settings.secret_key_file)
        self.driver = resolve_driver(self.settings.odbc_driver)
        self.engine = make_engine(
            spec.db_url, pooled=True, what="tenant db_url", must_exist=True,
            call_timeout=db_call_timeout(self.settings), cut_stalled=True,
        )  # fmt: skip
        self._reader = ServerListReader(self.engine, self.settings, self._box, self.tenant)
        self._spool = Spool(self.settings.spool_dir, self.tenant)
        self.writer = Writer(self.engine, self._spool, self.tenant, retention_days=self.settings.retention_days)
        self.stats = TenantStats()
        self.recorder = OutcomeRecorder(self.tenant, self.settings.max_sample_gap, self.stats, self.writer.put,
                                        collection_timeout=self.settings.collection_timeout)  # fmt: skip
        self.servers = ServerList(self.driver, self.settings.login_timeout, self.settings.keep_connections, spec.slug)
        self._pool = CollectionPool(self.settings.concurrency, name=f"collect-{self.tenant}")
        #: Held while the recorder or the stats are used: pool threads record their own results.
        self._record_lock = threading.Lock()
        self.flights = Flights(self._pool, self.settings.collection_timeout, on_result=self._record)
        self._memory = MemoryGuard(self.settings.max_child_rss_mb, self.flights, self.tenant)
        self._heartbeat_every = min(HEARTBEAT_EVERY, self.settings.heartbeat_timeout / 4)
        # A collection that starts while the loop sleeps is seen at the next wake, before its deadline.
        self._longest_sleep = min(IDLE_TICK, self.settings.collection_timeout)

    # --- lifecycle --------------------------------------------------------------------------------------
    def run(self) -> int:
        log_event(
            log, logging.INFO, "tenant.started", "collecting for tenant %s with %s", self.tenant,
            self.driver.describe(), tenant=self.tenant,
        )  # fmt: skip
        try:
            if self._first_load():
                self.writer.start()
                self._memory.start()
                self._reader.start()
                self._loop()
        finally:
            self._shutdown()
        return self._exit_code

    def _should_stop(self) -> bool:
        if self._stop.is_set():
            return True
        if not self._parent_alive():
            self._exit_code = CHILD_EXIT_ORPHANED
            return True
        return False

    def _claim_db(self) -> None:
        """Stamp the tenant DB as this tenant's (or refuse another's); from then on a connection to a DB replaced by
        another tenant's fails as an outage."""
        tenant_owner.stamp(self.engine, self.spec.tenant_id)
        if not self._guarded:
            tenant_owner.guard(self.engine, self.spec.tenant_id)
            self._guarded = True

    def _first_load(self) -> bool:
        """Schema check, states, baselines, server list; retried while the tenant DB is down."""
        last_beat = 0.0
        while not self._should_stop():
            try:
                upgrade_tenant(self.engine, create=False)
                self._claim_db()
                with self.engine.connect() as conn:
                    self.recorder.states = load_states(conn)
                    self.recorder.baselines = load_baselines(conn)
                self.recorder.merge_baselines(self._spool.newest_baselines())
                read = self._reader.read(self._known_servers(), self.servers.targets)
                self._apply_server_list(read, time.monotonic())
                self._start_outage.recovered()
                return True
            except NewerSchemaError as exc:  # permanent: no retry brings the schema back to this collector's
                self._exit_code = refuse_newer_schema(log, self.engine, self.tenant, exc)
                return False
            except (CollectorError, SQLAlchemyError) as exc:
                if isinstance(exc, ConfigError):
                    raise
                self._start_outage.failed("child.db_unavailable", "tenant DB unavailable at start, retrying: %s",
                                          describe_failure(exc))  # fmt: skip
            if time.monotonic() - last_beat >= self._heartbeat_every:
                self._heartbeat()
                last_beat = time.monotonic()
            self._stop.wait(STARTUP_RETRY)
        return False

    def _loop(self) -> None:
        now = time.monotonic()
        refresh_every = self.settings.server_refresh_interval
        next_refresh = now + refresh_every
        next_beat = now
        next_summary = now + SUMMARY_EVERY
        while not self._should_stop():
            now = time.monotonic()
            if now >= next_refresh and self._reader.request(self._known_servers(), self.servers.targets):
                next_refresh = math.inf  # until the read is in: at the latest at the next wake, IDLE_TICK from now
            if (read := self._reader.take()) is not None:
                next_refresh = now + (refresh_every if self._apply_server_list(read, now) else min(5.0, refresh_every))
            self._enforce_deadlines(now)
            self._harvest()
            self._start_due(now)
            if now >= next_beat:
                self._heartbeat()
                next_beat = now + self._heartbeat_every
            if now >= next_summary:
                self._summary()
                next_summary = now + SUMMARY_EVERY
            now = time.monotonic()
            sleep = min(next_refresh - now, next_beat - now, next_summary - now, self._next_event_in(now))
            self._stop.wait(max(0.0, sleep))

    def _shutdown(self) -> None:
        """Stop scheduling, let in-flight collections end within their deadline, flush, close."""
        started = time.monotonic()
        done_by = started + self.settings.shutdown_timeout - STOP_MARGIN
        log_event(log, logging.INFO, "tenant.stopping", "stopping tenant %s", self.tenant, tenant=self.tenant)
        self.flights.drop_queued()
        self._reader.stop()
        self._memory.stop()
        try:  # what is collected is stored or spooled even if this fails (out of descriptors, a bug)
            while self.flights and time.monotonic() < done_by - FLUSH_SHARE:  # each ends by its deadline at the latest
                self._enforce_deadlines(time.monotonic())
                self._harvest()
                time.sleep(SHUTDOWN_POLL)
        finally:
            self.writer.stop(min(WRITER_FLUSH_TIMEOUT, max(0.0, done_by - time.monotonic() - Writer.JOIN_GRACE)))
        self.servers.close_all(busy=self.flights.sessions())
        self._pool.shutdown()
        self.engine.dispose()
        elapsed = time.monotonic() - started
        log_event(log, logging.INFO, "tenant.stopped", "tenant %s stopped in %.1f s", self.tenant, elapsed,
                  tenant=self.tenant, duration_ms=int(elapsed * 1000))  # fmt: skip

    # --- server list ------------------------------------------------------------------------------------
    def _known_servers(self) -> set[int]:
        with self._record_lock:
            return set(self.recorder.states)

    def _apply_server_list(self, read: ServerListRead | Exception, now: float) -> bool:
        """A read of the server list (main thread); a failed read keeps the current list. Unusable rows come
        back in ``rows.invalid``, not raised."""
        if isinstance(read, Exception):
            self._refresh_outage.failed("servers.refresh_failed", "cannot read the server list, keeping the current "
                                        "one: %s", describe_failure(read))  # fmt: skip
            return False
        self._refresh_outage.recovered()
        rows = read.rows
        targets = {t.server_id: t for t in rows.targets}
        self._disabled = read.disabled
        with self._record_lock:
            self.recorder.follow_server_list(rows, read.states)
        changes = self.servers.replace(targets, busy=self.flights.sessions())
        self._scheduler.set_servers({sid: t.interval_seconds for sid, t in targets.items()}, now, check_ages=read.ages)
        log_event(
            log, logging.INFO if changes else logging.DEBUG, "servers.refreshed",
            "server list: %d servers (%d added, %d removed, %d changed)",
            len(targets), changes.added, changes.removed, changes.changed,
            tenant=self.tenant, servers=len(targets), added=changes.added, removed=changes.removed,
            changed=changes.changed,
        )  # fmt: skip
        return True

    # --- collections ------------------------------------------------------------------------------------
    def _start_due(self, now: float) -> None:
        for server_id in self._scheduler.due(now):
            target = self.servers.targets.get(server_id)
            if target is None or server_id in self.flights:
                self._scheduler.finished(server_id, now)
                continue
            self.flights.start(target, self.servers.session_for(target))

    def _enforce_deadlines(self, now: float) -> None:
        for server_id in self.flights.enforce_deadlines(now):
            self.servers.forget_session(server_id)

    def _next_event_in(self, now: float) -> float:
        """Seconds until the next collection is due or an in-flight one reaches its deadline."""
        waits = [self._longest_sleep]
        until_due = self._scheduler.next_due_in(now)
        if until_due is not None:
            waits.append(until_due)
        deadline = self.flights.next_deadline()
        if deadline is not None:
            waits.append(deadline - now)
        return min(waits)

    def _harvest(self) -> None:
        for outcome, recorded in self.flights.harvest():
            self._scheduler.finished(outcome.target.server_id, time.monotonic())
            if not recorded:  # a deadline's timeout
                self._record(outcome)
        if self.servers.has_retired():
            self.servers.close_idle_retired(busy=self.flights.sessions())

    def _record(self, outcome: CollectionOutcome) -> None:
        """On the pool thread that collected it, or on the main thread for a deadline's timeout."""
        with self._record_lock:
            self.recorder.record_safely(outcome)

    # --- reporting --------------------------------------------------------------------------------------
    def _heartbeat(self) -> None:
        with self._record_lock:
            beat = self._beat()
        with contextlib.suppress(OSError, EOFError, ValueError):  # parent gone: parent_alive() notices
            self._send_heartbeat(beat)

    def _beat(self) -> Heartbeat:
        targets, per_server = self.servers.targets, self.settings.metrics.per_server
        return tenant_heartbeat(self.recorder, self.stats, targets, self.writer, self._disabled, per_server)

    def _summary(self) -> None:
        with self._record_lock:
            window = self.stats.take_window()
        log_event(
            log, logging.INFO, "tenant.summary", "last minute: %d collected, %d failed, p50 %s ms, p95 %s ms",
            window.collected, window.failed, window.p50_ms, window.p95_ms,
            tenant=self.tenant, collected=window.collected, failed=window.failed, p50_ms=window.p50_ms,
            p95_ms=window.p95_ms, pending_writes=self.writer.pending(),
        )  # fmt: skip
