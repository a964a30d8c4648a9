"""Tenant leases on a real system schema (SQLite file): claim, renew, fair share, busy tenants, take-over.

These tenants never reported servers, so each weighs 1 and the shares come out by count; the weighted rule
itself is in test_lease_weights.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

import pytest
from sqlalchemy import Engine, select

from supervisor.parent.leases import next_foreign_expiry, release_leases, sync_leases
from supervisor.storage.system_schema import tenant_leases
from supervisor.tenants import ACTIVE, insert_tenant

T0 = dt.datetime(2024, 5, 1, 12, 0, 0)
DURATION = 10.0


class SystemDb:
    """The system DB with some tenants, and each instance's sync as one transaction (as a poll does)."""

    def __init__(self, system: Engine, tenant_count: int) -> None:
        self.system = system
        self.tenant_ids = [insert_tenant(system, f"t{i}", f"T{i}", None, ACTIVE).id for i in range(tenant_count)]

    def sync(
        self,
        owner: str,
        seconds: float,
        live: int,
        busy: Collection[int] = (),
        active: Collection[int] | None = None,
    ) -> set[int]:
        active_ids = self.tenant_ids if active is None else active
        with self.system.begin() as conn:
            return sync_leases(conn, owner, active_ids, busy, live, at(seconds), DURATION)

    def release(self, owner: str, tenant_ids: Collection[int] | None = None) -> None:
        with self.system.begin() as conn:
            release_leases(conn, owner, tenant_ids)

    def rows(self) -> dict[int, tuple[str | None, dt.datetime | None, dt.datetime | None]]:
        with self.system.connect() as conn:
            query = select(tenant_leases.c.tenant_id, tenant_leases.c.owner, tenant_leases.c.acquired_at,
                           tenant_leases.c.expires_at)  # fmt: skip
            return {row.tenant_id: (row.owner, row.acquired_at, row.expires_at) for row in conn.execute(query)}

    def held_by(self, owner: str) -> set[int]:
        return {tenant_id for tenant_id, (row_owner, _, _) in self.rows().items() if row_owner == owner}


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


@pytest.fixture
def db(system: Engine) -> SystemDb:
    return SystemDb(system, 5)


def test_a_lone_instance_claims_every_active_tenant(db: SystemDb) -> None:
    assert db.sync("a", 0, live=1) == set(db.tenant_ids)
    rows = db.rows()
    assert set(rows) == set(db.tenant_ids)
    assert all(row == ("a", at(0), at(DURATION)) for row in rows.values())


def test_each_poll_renews_the_lease_and_keeps_when_it_was_acquired(db: SystemDb) -> None:
    db.sync("a", 0, live=1)
    assert db.sync("a", 4, live=1) == set(db.tenant_ids)
    assert all(row == ("a", at(0), at(4 + DURATION)) for row in db.rows().values())


def test_a_live_lease_of_another_owner_is_not_taken(db: SystemDb) -> None:
    db.sync("a", 0, live=1)
    assert db.sync("b", DURATION - 1, live=1) == set()  # b believes it is alone, a's leases still run
    assert db.held_by("a") == set(db.tenant_ids) and db.held_by("b") == set()


def test_an_expired_lease_is_taken_over(db: SystemDb) -> None:
    db.sync("a", 0, live=1)  # then "a" dies: no renewal
    assert db.sync("b", DURATION + 1, live=1) == set(db.tenant_ids)
    assert all(row == ("b", at(DURATION + 1), at(2 * DURATION + 1)) for row in db.rows().values())
    assert db.sync("a", DURATION + 2, live=2) == set()  # "a" comes back: "b" holds them now
    assert db.held_by("a") == set()


def test_a_new_instance_gets_its_fair_share_once_the_first_gives_back_the_excess(db: SystemDb) -> None:
    assert len(db.sync("a", 0, live=1)) == 5
    assert db.sync("b", 1, live=2) == set()  # nothing free yet
    kept = db.sync("a", 2, live=2)
    assert len(kept) == 3 and db.held_by("a") == kept  # 2.5 each: 3 kept, the excess released
    claimed = db.sync("b", 3, live=2)
    assert claimed == set(db.tenant_ids) - kept and db.held_by("b") == claimed
    assert db.sync("a", 4, live=2) == kept and db.sync("b", 5, live=2) == claimed  # stable


def test_three_instances_split_the_tenants_and_never_share_one(system: Engine) -> None:
    db = SystemDb(system, 7)
    owners = ["a", "b", "c"]
    latest: dict[str, set[int]] = {}
    for turn in range(12):
        owner = owners[turn % 3]
        latest[owner] = db.sync(owner, turn, live=3, busy=latest.get(owner, set()))
        assert latest[owner] <= db.held_by(owner)
        for other in owners:
            if other != owner:
                assert not latest[owner] & latest.get(other, set()), (turn, latest)
    assert sorted(len(s) for s in latest.values()) == [2, 2, 3]  # 7 / 3 each, as near as whole tenants go
    assert set().union(*latest.values()) == set(db.tenant_ids)


def test_the_excess_is_held_until_its_children_exit(db: SystemDb) -> None:
    db.sync("a", 0, live=1)
    kept = db.sync("a", 1, live=3, busy=set(db.tenant_ids))  # share 5 / 3, and every child still runs here
    assert kept == set(db.tenant_ids[:2])
    assert db.held_by("a") == set(db.tenant_ids)  # nothing released while its child runs...
    assert all(expires == at(1 + DURATION) for _, _, expires in db.rows().values())  # ...and all renewed
    assert db.sync("b", 2, live=3) == set()
    assert db.sync("a", 3, live=3, busy=kept) == kept  # the other children have exited
    assert db.held_by("a") == kept
    assert db.sync("b", 4, live=3) == {db.tenant_ids[2]}  # what fits in its share (a third would lead c by 2)
    assert db.sync("c", 5, live=3) == set(db.tenant_ids[3:])  # the last while it is the least loaded


def test_busy_tenants_come_before_idle_ones_when_the_share_shrinks(db: SystemDb) -> None:
    db.sync("a", 0, live=1)
    busy = {db.tenant_ids[4]}
    assert db.sync("a", 1, live=5, busy=busy) == busy  # share 1: the one whose child runs is the one kept


def test_a_deactivated_tenant_is_released_only_after_its_child_exited(db: SystemDb) -> None:
    db.sync("a", 0, live=1)
    gone = db.tenant_ids[0]
    others = set(db.tenant_ids) - {gone}
    assert db.sync("a", 1, live=1, busy=set(db.tenant_ids), active=others) == others
    assert db.rows()[gone] == ("a", at(0), at(1 + DURATION))  # still ours, renewed: its child is stopping
    assert db.sync("b", 2, live=2, active=set(db.tenant_ids)) == set()
    assert db.sync("a", 3, live=1, busy=others, active=others) == others
    assert db.rows()[gone] == (None, None, None)
    assert db.sync("b", 4, live=2, active=set(db.tenant_ids)) == {gone}


def test_release_gives_back_the_named_leases_or_all_of_an_owner(system: Engine) -> None:
    db = SystemDb(system, 4)
    first, second = set(db.tenant_ids[:2]), set(db.tenant_ids[2:])
    db.sync("a", 0, live=1, active=first)
    db.sync("b", 0, live=1, active=second)
    db.release("a", [db.tenant_ids[0]])
    assert db.held_by("a") == {db.tenant_ids[1]} and db.rows()[db.tenant_ids[0]] == (None, None, None)
    db.release("b")
    assert db.held_by("b") == set() and db.held_by("a") == {db.tenant_ids[1]}
    assert db.sync("c", 1, live=2) == {db.tenant_ids[0], db.tenant_ids[2]}  # released leases are free at once
    assert db.sync("a", 2, live=2) == {db.tenant_ids[1], db.tenant_ids[3]}


def test_leases_rows_appear_for_new_tenants(system: Engine) -> None:
    db = SystemDb(system, 2)
    db.sync("a", 0, live=1)
    db.tenant_ids.append(insert_tenant(system, "late", "Late", None, ACTIVE).id)
    assert db.sync("a", 1, live=1) == set(db.tenant_ids)
    assert db.rows()[db.tenant_ids[-1]] == ("a", at(1), at(1 + DURATION))


def test_the_next_foreign_expiry_is_the_first_live_lease_of_another_owner(system: Engine) -> None:
    db = SystemDb(system, 4)
    db.sync("a", 0, live=1, active=db.tenant_ids[:1])
    db.sync("b", 2, live=2, active=db.tenant_ids[1:2])
    db.sync("c", 3, live=3, active=db.tenant_ids[2:3])
    with system.connect() as conn:
        assert next_foreign_expiry(conn, "b", at(1)) == at(DURATION)  # a's, the earliest that is not b's own
        assert next_foreign_expiry(conn, "a", at(1)) == at(2 + DURATION)
        assert next_foreign_expiry(conn, "b", at(DURATION)) == at(DURATION)  # expiring this very instant
        assert next_foreign_expiry(conn, "b", at(DURATION + 0.001)) == at(3 + DURATION)  # a's ran out: c's next
        assert next_foreign_expiry(conn, "b", at(3 + DURATION + 1)) is None
