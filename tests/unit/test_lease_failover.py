"""A dead instance's tenants after its leases ran out: each survivor says which of them it left to the others
(``LeaseSync.left_expired``), so it looks again in a moment instead of a quarter poll later (system_sync)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine

from supervisor.parent.leases import LeaseSync, sync
from supervisor.tenants import ACTIVE, insert_tenant

T0 = dt.datetime(2024, 5, 1, 12, 0, 0)
DURATION = 10.0


def poll(system: Engine, owner: str, tenant_ids: list[int], seconds: float, live: int) -> LeaseSync:
    with system.begin() as conn:
        return sync(conn, owner, tenant_ids, (), live, T0 + dt.timedelta(seconds=seconds), DURATION)


def test_a_survivor_reports_the_dead_instances_tenants_it_left_to_the_other(system: Engine) -> None:
    tenants = [insert_tenant(system, f"t{i}", f"T{i}", None, ACTIVE).id for i in range(6)]
    assert len(poll(system, "dead", tenants, 0, live=1).runnable) == 6
    first = poll(system, "a", tenants, 1, live=2)  # the dead one still holds everything: nothing is free
    assert first.runnable == set() and first.left_expired == frozenset()
    # Its leases ran out (10 s after its last renewal). Survivor a looks first: it takes its share, leaves the rest.
    after = poll(system, "a", tenants, 10.5, live=2)
    assert len(after.runnable) == 3 and after.left_expired == frozenset(tenants) - after.runnable
    other = poll(system, "b", tenants, 10.6, live=2)  # b takes what a left: nothing left over
    assert other.runnable == set(tenants) - after.runnable and other.left_expired == frozenset()
    # Free tenants nobody let expire (never claimed, or released) are not a failover's.
    fresh = [insert_tenant(system, f"n{i}", f"N{i}", None, ACTIVE).id for i in range(4)]
    again = poll(system, "a", tenants + fresh, 11, live=2)
    assert again.left_expired == frozenset() and again.left_free
