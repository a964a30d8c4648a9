"""Tenant leases: which supervisor instance may run which tenant (``tenant_leases``).

A lease is claimed with one atomic ``UPDATE … WHERE owner IS NULL OR owner = me OR expires_at < now``
(the database serialises competing claims: only one instance sees rowcount 1), renewed every poll
and released once the tenant's child has exited (``HANDOVER_GAP`` later). Times are the system DB's clock
(``storage.db_clock``), so a host with a skewed or stepped clock neither takes live leases for expired nor
lets its own run past their term.

Instances split the active tenants by weight (their servers), by the rule in ``lease_balance``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, func, or_, select

from supervisor.lease_term import shared_term
from supervisor.parent.handle import FINAL_STOPS, ChildHandle, StopReason
from supervisor.parent.lease_balance import View, claim_order, plan_release, tenant_weights, wants
from supervisor.storage.system_schema import tenant_leases
from supervisor.storage.upsert import conflict_insert

#: A lease is given up no sooner than this after its child exited: a child starts a collection up to
#: ``children.runtime.START_AHEAD`` before its slot, and the next owner's child, on the same grid, must not
#: collect that slot again (tests/unit/test_lease_weights.py checks the gap is the longer).
HANDOVER_GAP = 0.75
def lease_term(lease_duration: float, live_instances: int) -> float:
    """A lone instance's leases run the whole ``lease_duration``: nobody would take them over sooner."""
    return shared_term(lease_duration) if live_instances > 1 else lease_duration

# --- what the handles tell ------------------------------------------------------------------------------------


def reported_servers(handles: Iterable[ChildHandle]) -> dict[int, int]:
    """Collection-enabled servers of each tenant whose child has sent a heartbeat (a restarted child's last one)."""
    return {h.tenant.id: h.last_heartbeat.servers_total for h in handles if h.last_heartbeat is not None}


class HandoverGap:
    """Tenants given back here whose child exited less than ``HANDOVER_GAP`` ago: their lease is held that long
    (kept in the instance, as the loop forgets the handle of a given-back tenant after the next poll)."""

    def __init__(self) -> None:
        self._exits: dict[int, dt.datetime] = {}

    def note(self, handles: Iterable[ChildHandle]) -> bool:
        """Remember the exits of given-back children; True if one is new (a poll is then due after the gap)."""
        new = False
        for h in handles:
            exited = h.last_exit_wall
            if not h.alive and h.stop_reason is StopReason.NOT_WANTED and exited is not None:
                new |= self._exits.get(h.tenant.id) != exited
                self._exits[h.tenant.id] = exited
        return new

    def held(self, now: dt.datetime) -> set[int]:
        gap = dt.timedelta(seconds=HANDOVER_GAP)
        self._exits = {t: exited for t, exited in self._exits.items() if now - exited < gap}
        return set(self._exits)

    def next_end_in(self, now: dt.datetime) -> float | None:
        """Seconds until the first held lease may be released (the poll then due releases it)."""
        ends = [(exited - now).total_seconds() + HANDOVER_GAP for exited in self._exits.values()]
        return max(0.0, min(ends)) if ends else None


def running_here(handles: Iterable[ChildHandle]) -> set[int]:
    """Tenants whose child runs here and is not being stopped for good (those are kept first)."""
    return {h.tenant.id for h in handles if h.alive and h.stop_reason not in FINAL_STOPS}


# --- the lease table ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeaseSync:
    runnable: set[int]  # the active tenants this instance may run now
    #: Free tenants this instance left to another (less loaded) one (if both polled at once, neither took them),
    #: and those it gave back now (two instances giving to the same newcomer can leave one over for nobody but
    #: themselves).
    left_free: frozenset[int]
    #: Another instance holds tenants the rule has it give back (a newcomer's share is on its way).
    rebalancing: bool = False
    #: Free tenants whose lease another instance let run out (it died, say) that this instance left to others: two
    #: instances looking at the moment it ran out may each leave part of them to the other.
    left_expired: frozenset[int] = frozenset()
    #: Tenants claimed now that another instance had refused (``refused``).
    claimed_refused: frozenset[int] = frozenset()


def sync_leases(*args: Any, **kwargs: Any) -> set[int]:
    """``sync``'s runnable tenants."""
    return sync(*args, **kwargs).runnable


def sync(
    conn: Connection,
    owner: str,
    active_ids: Collection[int],
    busy_ids: Collection[int],
    live_instances: int,
    now: dt.datetime,
    duration: float,
    *,
    servers: Mapping[int, int] | None = None,
    running: Collection[int] | None = None,
    refused: Mapping[int, float] | None = None,
    kept: Collection[int] = (),
) -> LeaseSync:
    """Renew, weigh, claim and release this owner's leases; returns the active tenants it may run now.

    ``busy_ids`` are tenants whose child is still alive here (or exited a moment ago, ``HandoverGap``): their
    lease is renewed even when the tenant is no longer wanted, and released only after the child has exited.
    ``running`` (default: ``busy_ids``) are kept first; ``servers`` are the tenants' server counts its children
    reported, stored on leases it holds.

    ``refused`` are tenants this instance will not run (their DB needs a newer collector), with the seconds that
    holds: never claimed, and a lease on one is released marked as refused until then (``expires_at`` on a free
    row). Every instance claims a marked tenant whatever its share (the refusing one would not take it back), and
    never gives back ``kept`` ones (the caller's memory of ``claimed_refused``). The refused
    tenants still weigh in every instance's view, so all instances see the same loads.
    """
    expires = now + dt.timedelta(seconds=duration)
    _ensure_rows(conn, active_ids)
    conn.execute(tenant_leases.update().where(tenant_leases.c.owner == owner).values(expires_at=expires))
    rows = conn.execute(
        select(tenant_leases.c.tenant_id, tenant_leases.c.owner, tenant_leases.c.expires_at, tenant_leases.c.servers)
    ).all()
    held = {row.tenant_id for row in rows if row.owner == owner}
    reported = {row.tenant_id: row.servers for row in rows}
    _store_servers(conn, owner, {t: n for t, n in (servers or {}).items() if t in held and reported.get(t) != n})
    reported.update({t: n for t, n in (servers or {}).items() if t in held})
    active = set(active_ids)
    owners = {r.tenant_id: _live_owner(r.owner, r.expires_at, owner, now) for r in rows if r.tenant_id in active}
    view = View(owner, tenant_weights({t: reported[t] for t in owners}), owners, live_instances)
    share = view.share()
    refused = refused or {}
    mine = view.mine - set(refused)
    release, others = plan_release(mine, view.weights, set(busy_ids if running is None else running), share,
                                   view.other_loads(), kept)  # fmt: skip
    keep = mine - release
    load = sum(view.weights[t] for t in keep)
    marked = {r.tenant_id for r in rows if r.owner is None and r.expires_at is not None and r.expires_at > now}
    claimable = view.free - set(refused)
    claimed_refused: set[int] = set()
    for tenant_id in [*claim_order(claimable & marked, view.weights), *claim_order(claimable - marked, view.weights)]:
        weight = view.weights[tenant_id]
        if (tenant_id in marked or wants(load, weight, share, others)) and _claim(conn, owner, tenant_id, now, expires):
            keep.add(tenant_id)
            load += weight
            if tenant_id in marked:
                claimed_refused.add(tenant_id)
    refusing = (held & set(refused)) - set(busy_ids)
    if refusing:
        _release_refused(conn, owner, {t: now + dt.timedelta(seconds=refused[t]) for t in refusing})
    surplus = held - keep - set(busy_ids) - refusing
    if surplus:
        release_leases(conn, owner, surplus)
    expired = {r.tenant_id for r in rows if r.tenant_id in view.free and r.owner is not None and r.owner != owner}
    left_free = frozenset((claimable - keep) | (surplus & active))
    return LeaseSync(keep, left_free, _others_give_back(view), frozenset(expired - keep), frozenset(claimed_refused))


def _others_give_back(view: View) -> bool:
    """Whether, by this view, another live instance is to give tenants back at its next poll."""
    for other in {o for o in view.owners.values() if o is not None and o != view.me}:
        theirs = View(other, view.weights, view.owners, view.live)
        if plan_release(theirs.mine, view.weights, theirs.mine, theirs.share(), theirs.other_loads())[0]:
            return True
    return False


def next_foreign_expiry(conn: Connection, owner: str, now: dt.datetime) -> dt.datetime | None:
    """When the first lease another instance holds runs out, unless renewed: a dead instance's tenants are free
    from then on, so the poll after that moment should not wait for the regular interval."""
    query = select(func.min(tenant_leases.c.expires_at)).where(
        tenant_leases.c.owner.is_not(None), tenant_leases.c.owner != owner, tenant_leases.c.expires_at >= now
    )
    return conn.execute(query).scalar()


def release_leases(conn: Connection, owner: str, tenant_ids: Collection[int] | None = None) -> None:
    """Give leases back (all of this owner's when ``tenant_ids`` is None)."""
    query = tenant_leases.update().where(tenant_leases.c.owner == owner)
    if tenant_ids is not None:
        query = query.where(tenant_leases.c.tenant_id.in_(list(tenant_ids)))
    conn.execute(query.values(owner=None, acquired_at=None, expires_at=None))


def _release_refused(conn: Connection, owner: str, marks: Mapping[int, dt.datetime]) -> None:
    """Give leases back marked as refused by this instance until the given moments (see ``sync``)."""
    for tenant_id, until in sorted(marks.items()):
        conn.execute(
            tenant_leases.update()
            .where(tenant_leases.c.owner == owner, tenant_leases.c.tenant_id == tenant_id)
            .values(owner=None, acquired_at=None, expires_at=until)
        )


def _live_owner(row_owner: str | None, expires_at: dt.datetime | None, me: str, now: dt.datetime) -> str | None:
    """The row's owner while its lease holds (this instance's own rows are renewed already); None when claimable."""
    if row_owner == me:
        return me
    if row_owner is None or expires_at is None or expires_at < now:
        return None
    return row_owner


_STORE_SERVERS = (
    tenant_leases.update()
    .where(tenant_leases.c.tenant_id == bindparam("tid"), tenant_leases.c.owner == bindparam("me"))
    .values(servers=bindparam("servers"))
)


def _store_servers(conn: Connection, owner: str, servers: Mapping[int, int]) -> None:
    if servers:
        conn.execute(_STORE_SERVERS, [{"tid": t, "me": owner, "servers": n} for t, n in sorted(servers.items())])


def _claim(conn: Connection, owner: str, tenant_id: int, now: dt.datetime, expires: dt.datetime) -> bool:
    claimed = conn.execute(
        tenant_leases.update()
        .where(
            tenant_leases.c.tenant_id == tenant_id,
            or_(
                tenant_leases.c.owner.is_(None),
                tenant_leases.c.owner == owner,
                tenant_leases.c.expires_at.is_(None),
                tenant_leases.c.expires_at < now,
            ),
        )
        .values(owner=owner, acquired_at=now, expires_at=expires)
    ).rowcount
    return claimed == 1


def _ensure_rows(conn: Connection, tenant_ids: Collection[int]) -> None:
    existing = set(conn.execute(select(tenant_leases.c.tenant_id)).scalars())
    missing = sorted(set(tenant_ids) - existing)
    if not missing:
        return
    insert = _insert_for(conn.dialect.name)
    # Another instance may insert the same rows concurrently: ignore the conflict.
    conn.execute(insert(tenant_leases).on_conflict_do_nothing(), [{"tenant_id": t, "owner": None} for t in missing])


def _insert_for(dialect: str) -> Callable[..., Any]:
    insert = conflict_insert(dialect)
    if insert is None:
        raise NotImplementedError(f"tenant leases need PostgreSQL or SQLite, not {dialect}")
    return insert
