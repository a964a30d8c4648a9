"""Leases of tenants an instance refuses (their DB needs a newer collector): released at once with a mark,
claimed by another instance whatever its share, and not given back to the refusing one (``leases.sync``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from sqlalchemy import Engine, select

from supervisor.parent.lease_balance import plan_release
from supervisor.parent.leases import LeaseSync, sync
from supervisor.storage.system_schema import tenant_leases
from supervisor.tenants import ACTIVE, insert_tenant

T0 = dt.datetime(2024, 5, 1, 12, 0, 0)


def _sync(system: Engine, owner: str, ids: list[int], second: float, *, live: int = 2,
          refused: Mapping[int, float] | None = None,
          servers: Mapping[int, int] | None = None) -> LeaseSync:  # fmt: skip
    with system.begin() as conn:
        return sync(conn, owner, ids, [], live, T0 + dt.timedelta(seconds=second), 10.0, refused=refused,
                    servers=servers)  # fmt: skip


def _rows(system: Engine) -> dict[int, tuple[str | None, dt.datetime | None]]:
    with system.connect() as conn:
        rows = conn.execute(select(tenant_leases.c.tenant_id, tenant_leases.c.owner, tenant_leases.c.expires_at))
        return {row.tenant_id: (row.owner, row.expires_at) for row in rows}


def test_a_refused_tenant_is_released_marked_and_taken_by_the_other_instance_whatever_its_share(
    system: Engine,
) -> None:
    a, b = (insert_tenant(system, f"t{n}", f"T{n}", None, ACTIVE).id for n in range(2))
    assert _sync(system, "new", [b], 0, live=1, servers={b: 10}).runnable == {b}
    assert _sync(system, "old", [a, b], 1, servers={a: 1}).runnable == {a}
    synced = _sync(system, "old", [a, b], 2, refused={a: 600.0})
    assert synced.runnable == set() and a not in synced.left_free
    owner, mark = _rows(system)[a]
    assert owner is None and mark == T0 + dt.timedelta(seconds=2 + 600)
    # new holds 10 of 11 servers (share 5.5) and old none: by its share new would leave a to old, who refuses it.
    taken = _sync(system, "new", [a, b], 3)
    assert taken.runnable == {a, b} and taken.claimed_refused == {a}
    assert _sync(system, "old", [a, b], 4, refused={a: 598.0}).runnable == set()
    assert _rows(system)[a][0] == "new"


def test_a_kept_tenant_is_never_given_back() -> None:
    assert plan_release({1, 2}, {1: 1, 2: 1}, set(), 1.0, [0]) == ({2}, [1])
    assert plan_release({1, 2}, {1: 1, 2: 1}, set(), 1.0, [0], kept={2}) == ({1}, [1])
    assert plan_release({1, 2}, {1: 1, 2: 1}, set(), 1.0, [0], kept={1, 2}) == (set(), [0])


def test_a_lone_instance_takes_a_refused_tenant_back_only_after_its_refusal(system: Engine) -> None:
    [tenant] = [insert_tenant(system, "solo", "Solo", None, ACTIVE).id]
    assert _sync(system, "only", [tenant], 0, live=1).runnable == {tenant}
    assert _sync(system, "only", [tenant], 1, live=1, refused={tenant: 5.0}).runnable == set()
    assert _sync(system, "only", [tenant], 3, live=1, refused={tenant: 3.0}).runnable == set()  # held off: not claimed
    assert _sync(system, "only", [tenant], 7, live=1).runnable == {tenant}  # the refusal is over: claimed again
