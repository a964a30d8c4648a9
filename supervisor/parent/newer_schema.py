"""Tenants this instance will not run for a while: a child found the tenant DB's schema newer than this collector's.

Waiting changes nothing there (only an upgrade of this host, or an older DB restored, does), so the tenant is not
restarted: its lease is released at the next poll, marked as refused until ``RECHECK_AFTER`` from now
(``leases.sync``), and an instance that can run it (a newer one, in a rolling upgrade) claims it at its next poll.
After ``RECHECK_AFTER`` this instance may claim it again like any free tenant; a child then tries the DB once more.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable

from supervisor.errors import STORAGE
from supervisor.logs import log_event
from supervisor.parent.handle import ChildHandle, ChildState
from supervisor.storage.migrations import TENANT_VERSION

log = logging.getLogger("supervisor.parent")

#: How long a refused tenant is left to other instances before this one tries its DB again.
RECHECK_AFTER = 600.0
REASON = (
    f"tenant DB schema newer than this collector's (tenant schema version {TENANT_VERSION}): upgrade "
    "collector-supervisor on this host; the tenant is left to another instance"
)


class NewerSchemaRefusals:
    def __init__(self) -> None:
        self._until: dict[int, float] = {}  # monotonic
        self._slugs: dict[int, str] = {}
        #: Refused since a child of the tenant last ran here: a repeated refusal is logged at INFO, not as an ERROR.
        self._reported: set[int] = set()

    def refused(self, handle: ChildHandle, now: float) -> None:
        """A child exited with ``CHILD_EXIT_NEWER_SCHEMA``: hold the tenant off, say so once per tenant."""
        tenant_id = handle.tenant.id
        handle.last_error = REASON
        self._until[tenant_id] = now + RECHECK_AFTER
        self._slugs[tenant_id] = handle.slug
        repeated = tenant_id in self._reported
        self._reported.add(tenant_id)
        log_event(
            log, logging.INFO if repeated else logging.ERROR, "tenant.newer_schema",
            "tenant %s: its DB has a schema newer than this collector's (tenant schema version %d): upgrade "
            "collector-supervisor on this host. Its lease is released for another instance; this one tries it "
            "again in %.0f s", handle.slug, TENANT_VERSION, RECHECK_AFTER,
            tenant=handle.slug, tenant_id=tenant_id, collector_schema_version=TENANT_VERSION,
            recheck_in_s=RECHECK_AFTER, error=REASON, error_class=STORAGE, repeated=repeated,
        )  # fmt: skip

    def holding(self, now: float) -> dict[int, float]:
        """The tenants held off now, with the seconds each is held off still."""
        self._until = {t: until for t, until in self._until.items() if until > now}
        return {t: until - now for t, until in self._until.items()}

    def slugs(self, now: float) -> list[str]:
        return sorted(self._slugs[t] for t in self.holding(now))

    def follow(self, handles: Iterable[ChildHandle], active: Collection[int]) -> None:
        """A tenant whose child runs here again, or that is no longer active, starts afresh: its next refusal is an
        ERROR again."""
        running = {h.tenant.id for h in handles if h.state is ChildState.RUNNING}
        self._reported = {t for t in self._reported if t in active and t not in running}
        self._until = {t: until for t, until in self._until.items() if t in active}
