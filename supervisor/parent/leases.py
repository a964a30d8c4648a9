"""Tenant leases: which supervisor instance may run which tenant (``tenant_leases``).

A lease is claimed with one atomic ``UPDATE … WHERE owner IS NULL OR owner = me OR expires_at < now``
(the database serialises competing claims: only one instance sees rowcount 1), renewed every poll
and released once the tenant's child has exited. Instances split the active tenants: while others
are alive, an instance holds at most ⌈active / live instances⌉ of them and gives back the excess.
Times are the supervisor hosts' UTC clocks; keep them in sync (NTP) — skew eats into the lease.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Collection
from typing import Any

from sqlalchemy import Connection, or_, select

from supervisor.storage.system_schema import tenant_leases
from supervisor.storage.upsert import conflict_insert


def fair_share(active_count: int, live_instances: int) -> int:
    return math.ceil(active_count / max(1, live_instances))


def sync_leases(
    conn: Connection,
    owner: str,
    active_ids: Collection[int],
    busy_ids: Collection[int],
    live_instances: int,
    now: dt.datetime,
    duration: float,
) -> set[int]:
    """Renew, claim and release this owner's leases; returns the active tenants it may run now.

    ``busy_ids`` are tenants whose child is still alive here: their lease is renewed even when the
    tenant is no longer wanted, and released only after the child has exited.
    """
    expires = now + dt.timedelta(seconds=duration)
    _ensure_rows(conn, active_ids)
    conn.execute(tenant_leases.update().where(tenant_leases.c.owner == owner).values(expires_at=expires))
    held = set(conn.execute(select(tenant_leases.c.tenant_id).where(tenant_leases.c.owner == owner)).scalars())
    active = set(active_ids)
    share = fair_share(len(active), live_instances)
    # Keep the tenants already running here first, so rebalancing stops as few children as possible.
    keep_order = sorted(held & active, key=lambda tenant_id: (tenant_id not in busy_ids, tenant_id))
    keep = set(keep_order[:share])
    for tenant_id in sorted(active - held):
        if len(keep) >= share:
            break
        if _claim(conn, owner, tenant_id, now, expires):
            keep.add(tenant_id)
    release = held - keep - set(busy_ids)
    if release:
        release_leases(conn, owner, release)
    return keep


def release_leases(conn: Connection, owner: str, tenant_ids: Collection[int] | None = None) -> None:
    """Give leases back (all of this owner's when ``tenant_ids`` is None)."""
    query = tenant_leases.update().where(tenant_leases.c.owner == owner)
    if tenant_ids is not None:
        query = query.where(tenant_leases.c.tenant_id.in_(list(tenant_ids)))
    conn.execute(query.values(owner=None, acquired_at=None, expires_at=None))


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
