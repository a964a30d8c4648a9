"""A finished collection's bookkeeping in the child: deltas and status (``process_outcome``), the
server's state and baseline kept for the next one, counters, the log lines, and the rows handed to
the writer. Runs on the child's main thread only."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from supervisor.children.clock_skew import ClockSkewWatch
from supervisor.children.collect import CollectionOutcome
from supervisor.children.deltas import Baseline
from supervisor.children.errors import CollectionFailure, clean_text
from supervisor.children.failure_log import FailureLogPolicy
from supervisor.children.outcome import process_outcome
from supervisor.children.records import WriteItem
from supervisor.children.same_instance import SameInstanceWatch, instance_identity
from supervisor.children.stats import TenantStats
from supervisor.children.status import ServerState, apply_outcome
from supervisor.children.stored_state import StoredBaselines
from supervisor.children.targets import InvalidServer, ServerRows
from supervisor.clock import utcnow
from supervisor.errors import CONFIG, INTERNAL
from supervisor.logs import log_event

log = logging.getLogger("supervisor.child")


class OutcomeRecorder:
    def __init__(
        self, tenant: str, max_sample_gap: float, stats: TenantStats, put: Callable[[WriteItem], None], *,
        collection_timeout: float,
    ) -> None:
        self.tenant = tenant
        self.max_sample_gap = max_sample_gap
        self.collection_timeout = collection_timeout
        self.stats = stats
        self.states: dict[int, ServerState] = {}
        self.baselines: dict[int, Baseline] = {}
        self.last_duration: dict[int, int] = {}  # ms, per server (the per-server metrics)
        self._put = put
        self._failure_log = FailureLogPolicy()
        #: Servers whose row cannot be used, with the error last reported for each.
        self.config_errors: dict[int, str] = {}
        #: Per server, the last error that kept an outcome from being recorded.
        self._record_errors: dict[int, str] = {}
        #: Per server, which row of the tenant DB it is (``targets.Target.row``), as last listed.
        self.rows: dict[int, str | None] = {}
        self._skew = ClockSkewWatch()
        self._same_instance = SameInstanceWatch()

    def state_of(self, server_id: int) -> ServerState:
        return self.states.get(server_id, ServerState())

    def follow_server_list(self, rows: ServerRows, stored: dict[int, ServerState]) -> None:
        """A fresh read of the server list: a server newly listed starts from its stored state (``stored``), one
        whose id now belongs to another row (the web app deleted it and added another) from nothing, as the new
        server it is; then the unusable rows are reported."""
        listed = [*((t.server_id, t.row) for t in rows.targets), *((s.server_id, s.row) for s in rows.invalid)]
        for sid, row in listed:
            if self.rows.get(sid, row) != row:
                self._forget(sid)
            self.rows[sid] = row
            self.states.setdefault(sid, stored.get(sid, ServerState()))
        self._same_instance.retain({sid for sid, _ in listed})
        self.report_invalid(rows.invalid)

    def _forget(self, sid: int) -> None:
        for kept in (self.states, self.baselines, self.last_duration, self.config_errors, self._record_errors):
            kept.pop(sid, None)
        self._failure_log.succeeded(sid)
        self._skew.forget(sid)
        self._same_instance.forget(sid)

    def merge_baselines(self, baselines: dict[int, Baseline]) -> None:
        """Keep the newer of each server's known and given baseline (spooled ones may be newer)."""
        for server_id, baseline in baselines.items():
            current = self.baselines.get(server_id)
            if current is None or baseline.newer_than(current):
                self.baselines[server_id] = baseline

    def record_safely(self, outcome: CollectionOutcome) -> None:
        """``record``, never raising: an outcome that cannot be turned into rows is that server's failure
        (``internal``), not the child's. Its traceback is logged once per server and error."""
        try:
            self.record(outcome)
        except Exception as exc:
            self._record_failed(outcome, exc)

    def _record_failed(self, outcome: CollectionOutcome, exc: Exception) -> None:
        target = outcome.target
        error = clean_text(f"{type(exc).__name__}: {exc}")
        if self._record_errors.get(target.server_id) != error:
            self._record_errors[target.server_id] = error
            fields = {"event": "collection.record_failed", "tenant": self.tenant, "server": target.name,
                      "error": error, "error_class": INTERNAL}  # fmt: skip
            log.error("collection from %s could not be recorded: %s", target.name, error, exc_info=exc, extra=fields)
        failure = CollectionFailure(INTERNAL, f"the collection could not be recorded: {error}")
        failed = CollectionOutcome(target, outcome.started_at, outcome.duration_ms, None, failure)
        try:
            self.record(failed)
        except Exception:  # nothing more to do for this outcome; the error is logged above
            log.debug("recording the failure failed too", exc_info=True)

    def record(self, outcome: CollectionOutcome) -> None:
        target = outcome.target
        sid = target.server_id
        if self.rows.get(sid, target.row) != target.row:
            return  # collected for a row since replaced: nothing of it is the new server's (nor stored: ``persist``)
        self.last_duration[sid] = outcome.duration_ms
        context = {"tenant": self.tenant, "server": target.name, "duration_ms": outcome.duration_ms}
        previous = self.baselines.get(sid)
        if outcome.sample is not None:
            self._note_dropped_baseline(sid, previous, context)
        processed = process_outcome(outcome, previous, self.state_of(sid), self.max_sample_gap,
                                    collection_timeout=self.collection_timeout)  # fmt: skip
        update = processed.item.status
        stale = sid in self.config_errors  # started before its row became unusable: that error is newer
        if not stale:
            self.states[sid] = processed.state
        if outcome.sample is not None and processed.baseline is not None:
            self.baselines[sid] = processed.baseline
            middle = update.checked_at + dt.timedelta(milliseconds=outcome.duration_ms / 2)
            self._skew.note(sid, target.name, (outcome.sample.sample_time - middle).total_seconds(), context)
            sample = outcome.sample
            identity = instance_identity(sample.server_name, sample.sqlserver_start_time, sample.engine_edition,
                                         sample.database_name)  # fmt: skip
            self._same_instance.note(sid, target.name, identity, context)
            self.stats.succeeded(outcome.duration_ms, update.checked_at)
            self._failure_log.succeeded(sid)
            log_event(log, logging.DEBUG, "collection.succeeded", "collected %s", target.name, **context)
            if previous is not None and processed.deltas is not None and processed.deltas.rebaselined:
                log_event(
                    log, logging.INFO, "collection.rebaselined", "server %s: no rate for this sample (%s)",
                    target.name, processed.deltas.rebaselined, **context,
                )  # fmt: skip
            if outcome.fell_back_to_adhoc:
                log_event(
                    log, logging.WARNING, "collection.adhoc_fallback",
                    "server %s has no collection procedure (error 2812): collecting with the ad-hoc batch; "
                    "install it with 'collector-supervisor procedures deploy'", target.name, **context,
                )  # fmt: skip
        else:
            failure = outcome.failure
            assert failure is not None
            self.stats.failed(outcome.duration_ms, failure.error_class)
            level, repeats = self._failure_log.failed(sid, failure.error_class, time.monotonic())
            log_event(
                log, level, "collection.failed", "collection from %s failed: %s", target.name, failure.message,
                error_class=failure.error_class, error=failure.message, repeats=repeats, **context,
            )  # fmt: skip
        if update.status_changed and not stale:
            log_event(
                log, logging.INFO, "server.status_changed", "server %s is %s", target.name, update.status,
                status=update.status, error_class=update.error_class, error=update.error, **context,
            )  # fmt: skip
        self._put(processed.item)  # a stale status is not applied: the stored config error is newer

    def _note_dropped_baseline(self, sid: int, previous: Baseline | None, context: dict[str, Any]) -> None:
        """One warning for a stored baseline that could not be used (``load_baselines``), at the server's first
        collection, which then has no rate and replaces the row; none if a spooled baseline stood in for it."""
        if not isinstance(self.baselines, StoredBaselines):
            return
        reason = self.baselines.unusable.pop(sid, None)
        if reason is None or previous is not None:
            return
        log_event(
            log, logging.WARNING, "collection.baseline_dropped", "server %s: its stored baseline cannot be used "
            "(%s): starting with a first sample", context["server"], reason, error=reason, **context,
        )  # fmt: skip

    def report_invalid(self, invalid: Iterable[InvalidServer]) -> None:
        """Servers whose row cannot be used (the latest server-list read): each is a ``config`` failure,
        stored (offline, ``last_error``) and logged once per change of its error, not on every read. A
        server missing from ``invalid`` is usable again (or gone) and is reported afresh if it breaks again."""
        current = {server.server_id: server for server in invalid}
        for sid in [sid for sid in self.config_errors if sid not in current]:
            del self.config_errors[sid]
        for sid, server in current.items():
            if self.config_errors.get(sid) == server.error:
                continue
            self.config_errors[sid] = server.error
            self._failure_log.succeeded(sid)  # its next collection failure, once fixed, is news again
            failure = CollectionFailure(CONFIG, server.error, phase="connect")
            self.states[sid], update = apply_outcome(sid, self.state_of(sid), failure, utcnow())
            context = {"tenant": self.tenant, "server": server.name}
            log_event(
                log, logging.ERROR, "server.config_error", "server %s is not collected: %s", server.name,
                server.error, error_class=CONFIG, error=server.error, **context,
            )  # fmt: skip
            if update.status_changed:
                log_event(
                    log, logging.INFO, "server.status_changed", "server %s is %s", server.name, update.status,
                    status=update.status, error_class=CONFIG, error=server.error, **context,
                )  # fmt: skip
            self._put(WriteItem(sid, update, row=server.row))
