"""Leases shared by weight (a tenant's collection-enabled servers), not by tenant count: the pure rule of
``supervisor.parent.leases`` and the same rule on a real system schema (SQLite file).

Every case is built so that the old rule (each instance keeps ⌈active tenants / live instances⌉ tenants) gives
a different answer: a planted bug that counts tenants again fails each of them."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Mapping

import pytest
from sqlalchemy import Engine, select

from supervisor.ipc import ChildSpec, Heartbeat
from supervisor.parent.handle import ChildHandle, StopReason
from supervisor.parent.lease_balance import View, claim_order, plan_release, tenant_weights, wants
from supervisor.parent.leases import (
    HANDOVER_GAP,
    HandoverGap,
    LeaseSync,
    release_leases,
    reported_servers,
    running_here,
    sync,
    sync_leases,
)
from supervisor.storage.system_schema import tenant_leases
from supervisor.tenants import ACTIVE, Tenant, insert_tenant
from tests.unit.fakes import FakeContext, SignalRecorder

# --- weights and shares ---------------------------------------------------------------------------------------


def test_a_tenant_weighs_its_reported_servers_and_at_least_one() -> None:
    assert tenant_weights({1: 5000, 2: 5, 3: 0}) == {1: 5000, 2: 5, 3: 1}


def test_a_tenant_nobody_ran_yet_weighs_the_mean_of_the_known_ones() -> None:
    assert tenant_weights({1: 5000, 2: 0, 3: None, 4: 11}) == {1: 5000, 2: 1, 3: 1671, 4: 11}  # (5000+1+11)/3
    assert tenant_weights({1: None, 2: None}) == {1: 1, 2: 1}  # nothing known: by count


def test_the_share_is_total_weight_over_live_instances() -> None:
    view = View("a", {1: 5000, 2: 5, 3: 5}, {1: "a", 2: None, 3: "b"}, live=3)
    assert view.share() == pytest.approx(5010 / 3)
    assert view.mine == {1} and view.free == {2}
    assert view.other_loads() == [0, 5]  # b holds 5, the third live instance nothing


def test_owners_of_live_leases_count_as_instances_even_if_the_live_count_lags() -> None:
    view = View("a", {1: 10, 2: 10, 3: 10}, {1: "b", 2: "c", 3: None}, live=1)
    assert view.share() == 10 and view.other_loads() == [10, 10]


# --- giving back ------------------------------------------------------------------------------------------


def _give_back(weights: Mapping[int, int], owners: Mapping[int, str | None], live: int,
               running: set[int] | None = None) -> tuple[set[int], list[int]]:  # fmt: skip
    """What instance "a" gives back, from its view (share and the others' loads as a poll computes them)."""
    view = View("a", weights, owners, live)
    return plan_release(view.mine, weights, view.mine if running is None else running, view.share(),
                        view.other_loads())  # fmt: skip


def test_a_big_tenant_stays_and_the_small_ones_go_to_a_newcomer() -> None:
    """5,000 servers and three of 5: counting would keep two tenants each; by servers the small ones move."""
    weights = {1: 5000, 2: 5, 3: 5, 4: 5}
    assert _give_back(weights, dict.fromkeys(weights, "a"), live=2) == ({2, 3, 4}, [15])


def test_nothing_moves_when_the_loads_are_already_even() -> None:
    """Three tenants of 10 against one of 30: equal loads. Counting (⌈4 / 2⌉ = 2) would give one of the three away."""
    weights = {1: 10, 2: 10, 3: 10, 4: 30}
    assert _give_back(weights, {1: "a", 2: "a", 3: "a", 4: "b"}, live=2) == (set(), [30])


def test_nothing_moves_while_the_gap_to_the_least_loaded_is_within_the_lightest_tenant() -> None:
    """48 against 32 (share 40), but each of its tenants weighs 16: a move would only turn the gap around.
    Counting would give one of its three tenants away (⌈4 / 2⌉ = 2)."""
    weights = {1: 16, 2: 16, 3: 16, 4: 32}
    assert _give_back(weights, {1: "a", 2: "a", 3: "a", 4: "b"}, live=2) == (set(), [32])


def test_an_overloaded_instance_gives_back_to_below_its_share_when_that_narrows_the_gap() -> None:
    """Two of 100 against an instance holding 1: keeping both (200 vs 1) is worse than 100 vs 101; by count
    (⌈3 / 2⌉ = 2) nothing would move."""
    weights = {1: 100, 2: 100, 3: 1}
    assert _give_back(weights, {1: "a", 2: "a", 3: "b"}, live=2) == ({2}, [101])


def test_the_largest_tenant_that_leaves_the_share_whole_goes_first() -> None:
    """Excess 100: the one tenant of 100 goes, not a hundred tenants of 1 (nor, by count, half of the tenants)."""
    weights = {0: 100, **{t: 1 for t in range(1, 101)}}
    assert _give_back(weights, dict.fromkeys(weights, "a"), live=2) == ({0}, [100])


def test_tenants_without_a_running_child_are_given_back_first() -> None:
    """Tenant 3 (weight 2) has no child here: it goes first; then one of the two of 6 must go as well. By count
    (⌈3 / 2⌉ = 2) the two running ones would both be kept."""
    weights = {1: 6, 2: 6, 3: 2}
    assert _give_back(weights, dict.fromkeys(weights, "a"), live=2, running={1, 2}) == ({3, 2}, [8])


# --- claiming ---------------------------------------------------------------------------------------------


def test_a_free_tenant_is_claimed_when_it_fits_in_the_share() -> None:
    assert wants(40, 10, 50, [0]) and not wants(41, 10, 50, [0])


def test_the_least_loaded_instance_takes_a_tenant_heavier_than_any_share() -> None:
    assert wants(0, 5000, 2507.5, [15])  # nobody's share fits it: the least loaded takes it
    assert wants(15, 5000, 2507.5, [15])  # a tie: both may try, the atomic claim decides
    assert not wants(20, 5000, 2507.5, [15])  # below its share, but by count it would take it and lead by 5,000


def test_free_tenants_are_tried_heaviest_first() -> None:
    assert claim_order({1, 2, 3, 4}, {1: 5, 2: 700, 3: 5, 4: 60}) == [2, 4, 1, 3]


# --- many polls, in any order -----------------------------------------------------------------------------


def _poll(owners: dict[int, str | None], me: str, weights: Mapping[int, int], live: int) -> None:
    view = View(me, weights, dict(owners), live)
    share = view.share()
    release, others = plan_release(view.mine, weights, view.mine, share, view.other_loads())
    load = sum(weights[t] for t in view.mine - release)
    for tenant in release:
        owners[tenant] = None
    for tenant in claim_order(view.free, weights):
        if wants(load, weights[tenant], share, others):
            owners[tenant] = me
            load += weights[tenant]


@pytest.mark.parametrize("seed", range(40))
def test_instances_joining_one_by_one_settle_by_servers_and_stay_put(seed: int) -> None:
    rng = random.Random(seed)
    weights = {t: rng.choice((1, 2, 3, 5, 8, 40, 200, 1500)) for t in range(rng.randint(3, 25))}
    instances = [f"i{n}" for n in range(rng.randint(2, 5))]
    owners: dict[int, str | None] = dict.fromkeys(weights)
    for joined in range(1, len(instances) + 1):
        live = instances[:joined]
        for _ in range(30):
            before = dict(owners)
            for me in rng.sample(live, len(live)):
                _poll(owners, me, weights, len(live))
            if owners == before:
                break
        else:
            pytest.fail(f"no settled split with {joined} instances: {owners}")
        assert None not in owners.values()  # every tenant has an owner
        loads = {i: sum(w for t, w in weights.items() if owners[t] == i) for i in live}
        share = sum(weights.values()) / len(live)
        for instance, load in loads.items():
            lowest = min(v for i, v in loads.items() if i != instance) if len(live) > 1 else load
            if load > share:  # no tenant of an instance over its share could move and narrow its gap
                assert all(weights[t] >= load - lowest for t, o in owners.items() if o == instance), (loads, owners)


# --- what the children's handles tell -----------------------------------------------------------------------


def _handle(tenant_id: int, servers: int | None) -> ChildHandle:
    handle = ChildHandle(Tenant(id=tenant_id, slug=f"t{tenant_id}", name="T", status=ACTIVE, db_url=None),
                         kill=SignalRecorder())  # fmt: skip
    spec = ChildSpec(tenant_id=tenant_id, slug=f"t{tenant_id}", db_url="sqlite://", instance_id="a", settings=None)
    handle.start(FakeContext(), spec, None, (), ())  # type: ignore[arg-type]
    if servers is not None:
        handle.on_heartbeat(Heartbeat(sent_at=0.0, servers_total=servers, servers_disabled=3), 1.0)
    return handle


def test_a_given_back_lease_is_held_until_a_moment_after_its_child_exited() -> None:
    running, moved, crashed = _handle(1, 4), _handle(2, 4), _handle(3, 4)
    moved.request_stop(StopReason.NOT_WANTED, 1.0, 5.0)
    for handle in (moved, crashed):
        handle.process.exit(0)  # type: ignore[union-attr]
        handle.reap(2.0)
    gap = HandoverGap()
    assert gap.note([running, moved, crashed]) and not gap.note([running, moved, crashed])  # one new exit
    assert moved.last_exit_wall is not None
    just_before = moved.last_exit_wall + dt.timedelta(seconds=HANDOVER_GAP - 0.01)
    assert gap.note([]) is False and gap.held(just_before) == {2}  # held even once the loop forgot the handle
    assert gap.next_end_in(just_before) == pytest.approx(0.01)  # when the poll that releases it is due
    assert gap.held(just_before + dt.timedelta(seconds=0.01)) == set()
    assert gap.next_end_in(just_before) is None


def test_the_handover_gap_outlasts_a_childs_start_ahead_of_its_slot() -> None:
    """The next owner's child keeps the same slots: had it started within START_AHEAD of the old child's exit,
    a slot the old child collected early would be collected again."""
    from supervisor.children.runtime import START_AHEAD

    assert HANDOVER_GAP >= START_AHEAD + 0.25  # and a margin for the hosts' clocks


def test_handles_report_their_enabled_servers_and_which_children_run() -> None:
    quiet, big, leaving, gone = _handle(1, None), _handle(2, 480), _handle(3, 7), _handle(4, 2)
    leaving.request_stop(StopReason.NOT_WANTED, 1.0, 5.0)
    gone.request_stop(StopReason.NOT_WANTED, 1.0, 5.0)
    gone.process.exit(0)  # type: ignore[union-attr]
    gone.reap(2.0)
    handles = [quiet, big, leaving, gone]
    assert reported_servers(handles) == {2: 480, 3: 7, 4: 2}  # disabled ones not counted
    assert running_here(handles) == {1, 2}  # alive and not being stopped for good


# --- on the system schema -------------------------------------------------------------------------------------

T0 = dt.datetime(2024, 5, 1, 12, 0, 0)


def _sync(system: Engine, owner: str, ids: list[int], second: float, live: int,
          servers: Mapping[int, int] | None = None) -> set[int]:  # fmt: skip
    with system.begin() as conn:
        return sync_leases(conn, owner, ids, [], live, T0 + dt.timedelta(seconds=second), 10.0, servers=servers)


def _stored(system: Engine) -> dict[int, tuple[str | None, int | None]]:
    with system.connect() as conn:
        rows = conn.execute(select(tenant_leases.c.tenant_id, tenant_leases.c.owner, tenant_leases.c.servers))
        return {row.tenant_id: (row.owner, row.servers) for row in rows}


def _tenants(system: Engine, count: int) -> list[int]:
    return [insert_tenant(system, f"t{n}", f"T{n}", None, ACTIVE).id for n in range(count)]


def test_reported_servers_are_stored_by_the_holder_and_kept_after_release(system: Engine) -> None:
    ids = _tenants(system, 2)
    _sync(system, "a", [ids[0]], 0, live=1)
    _sync(system, "a", [ids[0]], 1, live=1, servers={ids[0]: 40, ids[1]: 9})  # it does not hold ids[1]
    assert _stored(system) == {ids[0]: ("a", 40)}
    with system.begin() as conn:
        release_leases(conn, "a")
    assert _stored(system) == {ids[0]: (None, 40)}


def test_a_joining_instance_gets_its_share_of_servers(system: Engine) -> None:
    """a ran all four and reported 90, 5, 3 and 2 servers; b joins: b takes the three small tenants (10 servers),
    a keeps the big one. Counting would split them two and two."""
    ids = _tenants(system, 4)
    servers = dict(zip(ids, (90, 5, 3, 2), strict=True))
    assert _sync(system, "a", ids, 0, live=1, servers=servers) == set(ids)
    assert _sync(system, "b", ids, 1, live=2) == set()
    assert _sync(system, "a", ids, 2, live=2, servers=servers) == {ids[0]}
    assert _sync(system, "b", ids, 3, live=2) == set(ids[1:])
    assert _sync(system, "a", ids, 4, live=2, servers=servers) == {ids[0]}  # and it stays so
    assert _sync(system, "b", ids, 5, live=2) == set(ids[1:])


def test_the_weights_come_from_the_lease_rows_whoever_wrote_them(system: Engine) -> None:
    """c has never run these tenants: the weights another instance stored decide its share (by count it would
    claim two of the four)."""
    ids = _tenants(system, 4)
    with system.begin() as conn:
        conn.execute(tenant_leases.insert(), [{"tenant_id": t, "owner": None, "servers": s}
                                              for t, s in zip(ids, (300, 100, 100, 100), strict=True)])  # fmt: skip
    assert _sync(system, "c", ids, 1, live=2) == {ids[0]}  # 300 of 600
    assert _sync(system, "d", ids, 2, live=2) == set(ids[1:])


def test_a_free_tenant_left_to_a_less_loaded_instance_is_reported(system: Engine) -> None:
    """a (2 servers) leaves the free tenant to b (1 server): it says so, so that it looks again soon in case b
    polled at the same moment and saw a lighter a. (What a poll reports, not the rule: the rule's cases are above.)"""
    ids = _tenants(system, 4)
    with system.begin() as conn:
        sync(conn, "a", ids[:2], [], 1, T0, 10.0)
        sync(conn, "b", ids[2:3], [], 2, T0, 10.0)
        left = sync(conn, "a", ids, [], 2, T0 + dt.timedelta(seconds=1), 10.0, servers={ids[0]: 1, ids[1]: 1})
        assert left == LeaseSync({ids[0], ids[1]}, frozenset({ids[3]}))
        taken = sync(conn, "b", ids, [], 2, T0 + dt.timedelta(seconds=2), 10.0, servers={ids[2]: 1})
        assert taken == LeaseSync({ids[2], ids[3]}, frozenset())


def test_a_newcomer_hears_that_others_still_give_back_until_its_share_is_settled(system: Engine) -> None:
    """b joins while a holds 90, 5, 3 and 2 servers: a is to give back the three small tenants, so b looks again
    soon; once b holds them, nobody is to give anything back (by count a would still owe b one tenant)."""
    ids = _tenants(system, 4)
    servers = dict(zip(ids, (90, 5, 3, 2), strict=True))
    with system.begin() as conn:
        sync(conn, "a", ids, [], 1, T0, 10.0)
        sync(conn, "a", ids, ids, 1, T0 + dt.timedelta(seconds=1), 10.0, servers=servers)
        assert sync(conn, "b", ids, [], 2, T0 + dt.timedelta(seconds=2), 10.0).rebalancing
        gave = sync(conn, "a", ids, [], 2, T0 + dt.timedelta(seconds=3), 10.0, servers=servers)
        assert gave.runnable == {ids[0]} and gave.left_free == set(ids[1:])  # a looks again soon, too
        joined = sync(conn, "b", ids, [], 2, T0 + dt.timedelta(seconds=4), 10.0)
        assert joined == LeaseSync(set(ids[1:]), frozenset(), rebalancing=False)
        assert not sync(conn, "a", ids, [ids[0]], 2, T0 + dt.timedelta(seconds=5), 10.0, servers=servers).rebalancing
