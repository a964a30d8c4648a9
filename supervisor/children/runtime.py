"""TenantRuntime: one tenant's collection loop, run in the child process's main thread.

The main thread schedules, hands collections to a ``ThreadPoolExecutor(concurrency)``, watches
their deadlines (cancelling overruns), turns finished collections into rows (deltas, status) and
passes them to the writer thread. Collection threads do network I/O only; only the main thread
reads the tenant DB (server list) and only the writer writes it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from supervisor.children.collect import CollectionOutcome, ServerSession
from supervisor.children.deltas import Baseline
from supervisor.children.failure_log import FailureLogPolicy
from supervisor.children.odbc_driver import OdbcDriver, resolve_driver
from supervisor.children.outcome import process_outcome
from supervisor.children.scheduler import Scheduler
from supervisor.children.spool import Spool
from supervisor.children.status import OFFLINE, ONLINE, ServerState
from supervisor.children.targets import Target, load_baselines, load_states, load_targets
from supervisor.children.writer import Writer
from supervisor.config import Settings
from supervisor.errors import CollectorError, ConfigError
from supervisor.ipc import CHILD_EXIT_OK, CHILD_EXIT_ORPHANED, ChildSpec, Heartbeat
from supervisor.secret_box import DeferredSecretBox, PasswordDecryptor
from supervisor.storage.engine import make_engine
from supervisor.storage.migrations import describe_db_error, upgrade_tenant

log = logging.getLogger("supervisor.child")

HEARTBEAT_EVERY = 2.0
SUMMARY_EVERY = 60.0
#: The watchdog cancels a collection this long after its deadline (the query timeout should come first).
CANCEL_GRACE = 0.3
#: Longest main-loop sleep while collections are in flight: how late a finished one is passed on to the
#: writer and an overrun one is cancelled.
TICK = 0.2
#: Longest main-loop sleep with nothing in flight (a stop request wakes the loop at once).
IDLE_TICK = 1.0
#: How long stop() gives the writer to flush before spooling.
WRITER_FLUSH_TIMEOUT = 5.0
STARTUP_RETRY = 5.0


@dataclass
class _Flight:
    target: Target
    session: ServerSession
    future: Future[CollectionOutcome] | None = None
    deadline: float | None = None  # set by the worker when it really starts
    canceller: threading.Thread | None = None


@dataclass
class _Window:
    collected: int = 0
    failed: int = 0
    durations: list[int] = field(default_factory=list)


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
        self._scheduler = Scheduler(salt=spec.slug)
        self._targets: dict[int, Target] = {}
        self._sessions: dict[int, ServerSession] = {}
        self._retired: list[ServerSession] = []  # replaced/removed sessions to close when idle
        self._flights: dict[int, _Flight] = {}
        self._states: dict[int, ServerState] = {}
        self._baselines: dict[int, Baseline] = {}
        self._window = _Window()
        self._failure_log = FailureLogPolicy()
        self._collections_ok = 0
        self._collections_failed = 0
        self._newest_snapshot: dt.datetime | None = None
        self._refresh_failing = False
        self._orphaned = False
        self.driver: OdbcDriver | None = None
        self.engine: Engine | None = None
        self.writer: Writer | None = None
        self.pool: ThreadPoolExecutor | None = None

    # --- lifecycle --------------------------------------------------------------------------------------
    def run(self) -> int:
        self.driver = resolve_driver(self.settings.odbc_driver)
        box = DeferredSecretBox(self.settings.secret_key_file)
        self.engine = make_engine(self.spec.db_url, pooled=True, what="tenant db_url")
        spool = Spool(self.settings.spool_dir, self.tenant)
        self.writer = Writer(self.engine, spool, self.tenant, retention_days=self.settings.retention_days)
        log.info(
            "collecting for tenant %s with %s",
            self.tenant,
            self.driver.describe(),
            extra={"event": "tenant.started", "tenant": self.tenant},
        )
        try:
            if not self._first_load(box, spool):
                return self._exit_code()
            self.writer.start()
            self.pool = ThreadPoolExecutor(self.settings.concurrency, thread_name_prefix=f"collect-{self.tenant}")
            self._loop(box)
        finally:
            self._shutdown()
        return self._exit_code()

    def _exit_code(self) -> int:
        return CHILD_EXIT_ORPHANED if self._orphaned else CHILD_EXIT_OK

    def _should_stop(self) -> bool:
        if self._stop.is_set():
            return True
        if not self._parent_alive():
            self._orphaned = True
            return True
        return False

    def _first_load(self, box: PasswordDecryptor, spool: Spool) -> bool:
        """Schema check, states, baselines, server list; retried while the tenant DB is down."""
        assert self.engine is not None
        last_beat = 0.0
        while not self._should_stop():
            try:
                upgrade_tenant(self.engine)
                with self.engine.connect() as conn:
                    self._states = load_states(conn)
                    self._baselines = load_baselines(conn)
                self._merge_spooled_baselines(spool)
                return self._refresh(box, time.monotonic())
            except (CollectorError, SQLAlchemyError) as exc:
                if isinstance(exc, ConfigError):
                    raise
                if not self._refresh_failing:
                    log.warning(
                        "tenant DB unavailable at start, retrying: %s",
                        exc if isinstance(exc, CollectorError) else describe_db_error(exc),
                        extra={"event": "child.db_unavailable", "tenant": self.tenant, "error_class": "storage"},
                    )
                    self._refresh_failing = True
            if time.monotonic() - last_beat >= HEARTBEAT_EVERY:
                self._heartbeat()
                last_beat = time.monotonic()
            self._stop.wait(STARTUP_RETRY)
        return False

    def _merge_spooled_baselines(self, spool: Spool) -> None:
        for server_id, baseline in spool.newest_baselines().items():
            current = self._baselines.get(server_id)
            if current is None or baseline.sample_time > current.sample_time:
                self._baselines[server_id] = baseline

    def _loop(self, box: PasswordDecryptor) -> None:
        now = time.monotonic()
        next_refresh = now + self.settings.server_refresh_interval
        next_beat = now
        next_summary = now + SUMMARY_EVERY
        while not self._should_stop():
            now = time.monotonic()
            if now >= next_refresh:
                ok = self._refresh(box, now)
                next_refresh = now + (
                    self.settings.server_refresh_interval if ok else min(5.0, self.settings.server_refresh_interval)
                )
            self._harvest()
            self._watch_deadlines(now)
            self._start_due(now)
            if now >= next_beat:
                self._heartbeat()
                next_beat = now + HEARTBEAT_EVERY
            if now >= next_summary:
                self._summary()
                next_summary = now + SUMMARY_EVERY
            now = time.monotonic()
            sleep = min(TICK if self._flights else IDLE_TICK, next_refresh - now, next_beat - now, next_summary - now)
            until_due = self._scheduler.next_due_in(now)
            self._stop.wait(max(0.0, sleep if until_due is None else min(sleep, until_due)))

    def _shutdown(self) -> None:
        """Stop scheduling, let in-flight collections end within their deadline, flush, close."""
        started = time.monotonic()
        log.info("stopping tenant %s", self.tenant, extra={"event": "tenant.stopping", "tenant": self.tenant})
        for server_id, flight in list(self._flights.items()):
            if flight.future is not None and flight.future.cancel():  # queued, never started
                del self._flights[server_id]
        hard_limit = started + self.settings.collection_timeout + 1.5
        while self._flights and time.monotonic() < hard_limit:
            self._harvest()
            self._watch_deadlines(time.monotonic())
            time.sleep(0.02)
        self._harvest()
        stuck = set(self._flights)
        if self.writer is not None:
            self.writer.stop(WRITER_FLUSH_TIMEOUT)
        for flight in self._flights.values():
            if flight.canceller is not None:
                flight.canceller.join(1.0)
        for server_id, session in self._sessions.items():
            if server_id not in stuck:
                session.close()
        for session in self._retired:
            session.close()
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        if self.engine is not None:
            self.engine.dispose()
        log.info(
            "tenant %s stopped in %.1f s",
            self.tenant,
            time.monotonic() - started,
            extra={
                "event": "tenant.stopped",
                "tenant": self.tenant,
                "duration_ms": int((time.monotonic() - started) * 1000),
            },
        )

    # --- server list ------------------------------------------------------------------------------------
    def _refresh(self, box: PasswordDecryptor, now: float) -> bool:
        assert self.engine is not None and self.driver is not None
        try:
            with self.engine.connect() as conn:
                targets = {t.server_id: t for t in load_targets(conn, self.settings, box, self.tenant)}
                unknown = [sid for sid in targets if sid not in self._states]
                if unknown:
                    states = load_states(conn)
                    for sid in unknown:
                        self._states[sid] = states.get(sid, ServerState())
        except (SQLAlchemyError, CollectorError) as exc:
            if not self._refresh_failing:
                log.warning(
                    "cannot read the server list, keeping the current one: %s",
                    exc if isinstance(exc, CollectorError) else describe_db_error(exc),
                    extra={"event": "servers.refresh_failed", "tenant": self.tenant, "error_class": "storage"},
                )
            self._refresh_failing = True
            return False
        self._refresh_failing = False
        added = [sid for sid in targets if sid not in self._targets]
        removed = [sid for sid in self._targets if sid not in targets]
        changed = [sid for sid in targets if sid in self._targets and targets[sid] != self._targets[sid]]
        for sid in removed + changed:
            session = self._sessions.pop(sid, None)
            if session is not None:
                self._retired.append(session)
        self._targets = targets
        self._scheduler.set_servers({sid: t.interval_seconds for sid, t in targets.items()}, now)
        self._close_idle_retired()
        level = logging.INFO if added or removed or changed else logging.DEBUG
        log.log(
            level,
            "server list: %d servers (%d added, %d removed, %d changed)",
            len(targets),
            len(added),
            len(removed),
            len(changed),
            extra={
                "event": "servers.refreshed",
                "tenant": self.tenant,
                "servers": len(targets),
                "added": len(added),
                "removed": len(removed),
                "changed": len(changed),
            },
        )
        return True

    def _close_idle_retired(self) -> None:
        busy = {id(flight.session) for flight in self._flights.values()}
        still_busy = []
        for session in self._retired:
            if id(session) in busy:
                still_busy.append(session)
            else:
                session.close()
        self._retired = still_busy

    # --- collections ------------------------------------------------------------------------------------
    def _start_due(self, now: float) -> None:
        assert self.pool is not None and self.driver is not None
        for server_id in self._scheduler.due(now):
            target = self._targets.get(server_id)
            if target is None or server_id in self._flights:
                self._scheduler.finished(server_id)
                continue
            session = self._sessions.get(server_id)
            if session is None:
                session = ServerSession(
                    target, self.driver, self.settings.login_timeout, self.settings.keep_connections
                )
                self._sessions[server_id] = session
            flight = _Flight(target, session)
            self._flights[server_id] = flight
            flight.future = self.pool.submit(self._collect, flight, self.settings.collection_timeout)

    @staticmethod
    def _collect(flight: _Flight, timeout: float) -> CollectionOutcome:
        flight.deadline = time.monotonic() + timeout
        return flight.session.collect(flight.deadline)

    def _watch_deadlines(self, now: float) -> None:
        for flight in self._flights.values():
            if flight.deadline is None or flight.canceller is not None:
                continue
            if now > flight.deadline + CANCEL_GRACE:
                flight.canceller = threading.Thread(
                    target=flight.session.cancel, name=f"cancel-{flight.target.server_id}", daemon=True
                )
                flight.canceller.start()

    def _harvest(self) -> None:
        for server_id, flight in list(self._flights.items()):
            if flight.future is None or not flight.future.done():
                continue
            if flight.canceller is not None:
                flight.canceller.join(2.0)
            del self._flights[server_id]
            self._scheduler.finished(server_id)
            outcome = flight.future.result()
            self._record(outcome)
        if self._retired:
            self._close_idle_retired()

    def _record(self, outcome: CollectionOutcome) -> None:
        assert self.writer is not None
        target = outcome.target
        sid = target.server_id
        context = {"tenant": self.tenant, "server": target.name, "duration_ms": outcome.duration_ms}
        previous = self._baselines.get(sid)
        processed = process_outcome(
            outcome, previous, self._states.get(sid, ServerState()), self.settings.max_sample_gap
        )
        self._states[sid] = processed.state
        update = processed.item.status
        if outcome.sample is not None and processed.baseline is not None:
            self._baselines[sid] = processed.baseline
            sample_time = outcome.sample.sample_time
            self._newest_snapshot = max(self._newest_snapshot or sample_time, sample_time)
            self._collections_ok += 1
            self._window.collected += 1
            self._failure_log.succeeded(sid)
            log.debug("collected %s", target.name, extra={"event": "collection.succeeded", **context})
            if previous is not None and processed.deltas is not None and processed.deltas.rebaselined:
                log.info(
                    "server %s: no rate for this sample (%s)",
                    target.name,
                    processed.deltas.rebaselined,
                    extra={"event": "collection.rebaselined", **context},
                )
            if outcome.fell_back_to_adhoc:
                log.warning(
                    "server %s has no collection procedure (error 2812): collecting with the ad-hoc batch; "
                    "install it with 'collector-supervisor procedures deploy'",
                    target.name,
                    extra={"event": "collection.adhoc_fallback", **context},
                )
        else:
            failure = outcome.failure
            assert failure is not None
            self._collections_failed += 1
            self._window.failed += 1
            level, repeats = self._failure_log.failed(sid, failure.error_class, time.monotonic())
            log.log(
                level,
                "collection from %s failed: %s",
                target.name,
                failure.message,
                extra={
                    "event": "collection.failed",
                    "error_class": failure.error_class,
                    "error": failure.message,
                    "repeats": repeats,
                    **context,
                },
            )
        self._window.durations.append(outcome.duration_ms)
        if update.status_changed:
            log.info(
                "server %s is %s",
                target.name,
                update.status,
                extra={
                    "event": "server.status_changed",
                    "status": update.status,
                    "error_class": update.error_class,
                    "error": update.error,
                    **context,
                },
            )
        self.writer.put(processed.item)

    # --- reporting --------------------------------------------------------------------------------------
    def _heartbeat(self) -> None:
        statuses = [self._states.get(sid, ServerState()).status for sid in self._targets]
        beat = Heartbeat(
            sent_at=time.time(),
            servers_total=len(self._targets),
            servers_online=statuses.count(ONLINE),
            servers_offline=statuses.count(OFFLINE),
            collections_ok=self._collections_ok,
            collections_failed=self._collections_failed,
            newest_snapshot_at=None if self._newest_snapshot is None else self._newest_snapshot.isoformat() + "Z",
            pending_writes=self.writer.pending() if self.writer is not None else 0,
        )
        with contextlib.suppress(OSError, EOFError, ValueError):  # parent gone: parent_alive() notices
            self._send_heartbeat(beat)

    def _summary(self) -> None:
        window, self._window = self._window, _Window()
        durations = sorted(window.durations)
        log.info(
            "last minute: %d collected, %d failed, p50 %s ms, p95 %s ms",
            window.collected,
            window.failed,
            _percentile(durations, 50),
            _percentile(durations, 95),
            extra={
                "event": "tenant.summary",
                "tenant": self.tenant,
                "collected": window.collected,
                "failed": window.failed,
                "p50_ms": _percentile(durations, 50),
                "p95_ms": _percentile(durations, 95),
                "pending_writes": self.writer.pending() if self.writer is not None else 0,
            },
        )


def _percentile(sorted_values: list[int], percent: int) -> int | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(percent / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]
