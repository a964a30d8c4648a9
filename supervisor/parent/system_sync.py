"""The parent's conversation with the system DB: one object, asked by the loop when a poll is due.

A poll (one transaction) refreshes this instance's heartbeat, reads the active tenants, renews,
claims and releases leases, and writes the children table; it returns the tenants this instance may
run. A failed poll leaves everything as it was (children keep running) and is retried with backoff;
``fence_at`` says when children whose lease could not be renewed must be stopped so they are gone
before another instance may claim their tenant. See docs/architecture.md.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from supervisor import databases
from supervisor.clock import utcnow
from supervisor.config import Settings
from supervisor.errors import CONFIG, CollectorError
from supervisor.logs import log_event
from supervisor.parent import instances, leases
from supervisor.parent.children_table import record_children
from supervisor.parent.db_health import SystemDbHealth
from supervisor.parent.handle import ChildHandle
from supervisor.parent.instances import InstanceIdentity
from supervisor.parent.newer_schema import NewerSchemaRefusals
from supervisor.storage.db_clock import db_utcnow
from supervisor.storage.migrations import NewerSchemaError, refuse_newer_system, upgrade_system
from supervisor.tenants import ACTIVE, Tenant, leased_ids, read_tenants

log = logging.getLogger("supervisor.parent")

#: What a system DB call can raise when the DB is down, locked or broken.
DB_ERRORS = (SQLAlchemyError, CollectorError)
#: Longest wait of one system DB statement or connect: the loop (log relay, reaping, watchdog) stalls
#: no longer than this per statement while the system DB is locked or unreachable.
CALL_TIMEOUT = 2.0
#: A poll due at another instance's lease expiry comes this long after it.
EXPIRY_SLACK = 0.1
#: After leaving a dead instance's tenants to others, the next look comes this long after (random between the two,
#: so that instances that looked at the same moment, each leaving part to the other, look again one after the other).
FAILOVER_LOOK_AGAIN = (0.2, 0.5)


@dataclass(frozen=True)
class PollResult:
    active: dict[int, Tenant]  # every active tenant, by id
    runnable: set[int]  # the active tenants this instance holds a lease on


class SystemDbSync:
    def __init__(self, settings: Settings, identity: InstanceIdentity) -> None:
        self.settings = settings
        self.identity = identity
        self.started_wall = utcnow()
        self.engine: Engine = databases.system_engine(settings, call_timeout=CALL_TIMEOUT)
        self.health = SystemDbHealth(settings.system_db, max_retry_delay=settings.poll_interval)
        self.schema_ready = False
        self.next_poll = 0.0
        self.lease_renewed_at: float | None = None
        self.failed_since_renewal = False
        self.clock_offset = dt.timedelta(0)  # the system DB's clock minus this host's, at the last poll
        self.lease_term = settings.lease_duration  # of the last renewal (leases.lease_term)
        self._row_problems: dict[int, str] = {}
        self._left_free: frozenset[int] = frozenset()
        self._left_expired: frozenset[int] = frozenset()
        self.handovers = leases.HandoverGap()
        self.refusals = NewerSchemaRefusals()
        #: Tenants claimed here that another instance refused: never given back while the same instances are live
        #: (the refusing one would take it back only to refuse it again, and nobody else would).
        self._kept_refused: set[int] = set()
        self._live_ids: frozenset[str] = frozenset()

    @property
    def healthy(self) -> bool:
        """The last use of the system DB worked (what /readyz and collector_system_db_up say)."""
        return self.schema_ready and self.health.available

    def poll_due(self, now: float) -> bool:
        return now >= self.next_poll

    def poll(self, handles: Iterable[ChildHandle]) -> PollResult | None:
        """One poll; None when the system DB could not be used (the next try is scheduled). NewerSchemaError when
        a newer collector upgraded it."""
        handles = list(handles)
        started = time.monotonic()
        try:
            if not self.schema_ready:
                upgrade_system(self.engine)
                self.schema_ready = True
            here = utcnow()  # this host's clock, for its children's exits (handovers)
            self.handovers.note(handles)
            busy = {h.tenant.id for h in handles if h.alive} | self.handovers.held(here)
            with self.engine.begin() as conn:
                refuse_newer_system(conn)  # a newer collector may upgrade the schema at any time
                now = db_utcnow(conn)  # the clock every instance compares heartbeats and leases with
                self.clock_offset = now - here
                instances.heartbeat(conn, self.identity, self.started_wall, now)
                gone = instances.take_over_dead_peers(conn, self.identity, now)
                instances.prune(conn, now)
                live_ids = instances.live_ids(conn, now, leases.shared_term(self.settings.lease_duration))
                live = len(live_ids)
                term = leases.lease_term(self.settings.lease_duration, live)
                running = {h.tenant.id for h in handles if h.alive} | leased_ids(conn, now)
                using = {h.tenant.id: h.spec.db_url for h in handles if h.alive and h.spec is not None}
                checked = databases.checked_tenants(self.settings, read_tenants(conn, status=ACTIVE), running, using)
                active = {tenant.id: tenant for tenant in self._usable(checked)}
                self.refusals.follow(handles, active)
                if live_ids != self._live_ids:  # a refusing instance may be gone or upgraded: share them again
                    self._kept_refused, self._live_ids = set(), live_ids
                synced = leases.sync(
                    conn, self.identity.id, list(active), busy, live, now, term,
                    servers=leases.reported_servers(handles), running=leases.running_here(handles),
                    refused=self.refusals.holding(started), kept=self._kept_refused,
                )
                record_children(conn, self.identity.id, handles, now)
                expiry = leases.next_foreign_expiry(conn, self.identity.id, now)
        except NewerSchemaError:
            raise
        except DB_ERRORS as exc:
            self._failed(exc)
            return None
        self.health.succeeded()
        for instance_id in gone:
            log_event(
                log, logging.WARNING, "instance.taken_over", "supervisor instance %s on this host is gone: its "
                "tenants are taken over now", instance_id, instance=instance_id,
            )  # fmt: skip
        self.lease_renewed_at, self.lease_term, self.failed_since_renewal = started, term, False
        self.next_poll = started + self.settings.poll_interval
        if expiry is not None:  # another instance's lease runs out first: look again right after it (failover)
            self.next_poll = min(self.next_poll, started + (expiry - now).total_seconds() + EXPIRY_SLACK)
        # Free tenants left to a less loaded instance that may have polled at the same moment, or others still to
        # give tenants back (to this newcomer, say): look again soon.
        if synced.left_free - self._left_free or synced.rebalancing:
            self.next_poll = min(self.next_poll, started + self.settings.poll_interval / 4)
        if synced.left_expired - self._left_expired:
            self.next_poll = min(self.next_poll, started + random.uniform(*FAILOVER_LOOK_AGAIN))
        if (gap_end := self.handovers.next_end_in(here)) is not None:  # a given-back lease is due for release
            self.next_poll = min(self.next_poll, started + gap_end + EXPIRY_SLACK)
        self._left_free, self._left_expired = synced.left_free, synced.left_expired
        self._kept_refused = (self._kept_refused | synced.claimed_refused) & synced.runnable
        return PollResult(active, synced.runnable)

    def _usable(self, tenants: Sequence[Tenant]) -> list[Tenant]:
        """The tenants that can be run; an unusable one is logged once per change of its problem, not per poll."""
        usable, problems = [], {}
        for tenant in tenants:
            if tenant.problem is None:
                usable.append(tenant)
                continue
            problems[tenant.id] = tenant.problem
            if self._row_problems.get(tenant.id) != tenant.problem:
                log_event(
                    log, logging.ERROR, "tenant.invalid", "tenant row %s (%s) cannot be run: %s", tenant.id,
                    tenant.slug, tenant.problem, tenant_id=tenant.id, error=tenant.problem, error_class=CONFIG,
                )  # fmt: skip
        self._row_problems = problems
        return usable

    def refused(self, handle: ChildHandle) -> None:
        """The tenant's child found its DB's schema newer than this collector's: the next poll, now, releases it."""
        self.refusals.refused(handle, time.monotonic())
        self.next_poll = min(self.next_poll, time.monotonic())

    def record_children(self, handles: Iterable[ChildHandle]) -> None:
        """Write starts and exits as they happen (polls write everything anyway); skipped during an outage."""
        if not (self.health.available and self.schema_ready):
            return
        try:
            with self.engine.begin() as conn:
                record_children(conn, self.identity.id, handles, self.db_now())
        except DB_ERRORS as exc:
            self._failed(exc)
        if self.handovers.note(handles):  # a child stopped for a move exited: the poll after the gap releases it
            self.next_poll = min(self.next_poll, time.monotonic() + leases.HANDOVER_GAP + EXPIRY_SLACK)

    def record_stop(self, handles: Iterable[ChildHandle]) -> CollectorError | SQLAlchemyError | None:
        """Children's last rows, leases released, instance marked stopped; the error if that failed."""
        try:
            with self.engine.begin() as conn:
                now = db_utcnow(conn)
                record_children(conn, self.identity.id, handles, now)
                leases.release_leases(conn, self.identity.id)
                instances.mark_stopped(conn, self.identity, now)
        except DB_ERRORS as exc:
            return exc
        return None

    def fence_at(self) -> float | None:
        """When to stop children whose lease could not be renewed, so they are gone before it expires."""
        if self.lease_renewed_at is None:
            return None
        duration = self.lease_term
        return self.lease_renewed_at + duration - min(self.settings.shutdown_timeout, duration / 2)

    def db_now(self) -> dt.datetime:
        """The system DB's time by this host's clock and the offset the last poll measured."""
        return utcnow() + self.clock_offset

    def fence_due(self, now: float) -> bool:
        return (fence_at := self.fence_at()) is not None and now >= fence_at

    def use_settings(self, settings: Settings) -> None:
        """After a reload: a new system DB URL gets a new engine; the next poll comes at once."""
        if settings.system_db != self.settings.system_db:
            self.engine = databases.system_engine(settings, call_timeout=CALL_TIMEOUT)
            self.health = SystemDbHealth(settings.system_db, max_retry_delay=settings.poll_interval)
            self.schema_ready = False
        self.settings = settings
        self.next_poll = 0.0

    def _failed(self, exc: BaseException) -> None:
        self.failed_since_renewal = True
        self.next_poll = time.monotonic() + self.health.failed(exc)
