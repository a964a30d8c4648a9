"""Edges the broader unit tests leave open, found by mutation testing (scripts/mutation.sh): the backoff's
defaults, the handle's fresh state and heartbeat clock, counters carried over restarts, the RSS figure and its
limit, lease claims of unusual rows and the exact expiry instant, scheduler bookkeeping."""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from sqlalchemy import Engine, select, update

from supervisor.backoff import Backoff
from supervisor.children.scheduler import Scheduler
from supervisor.ipc import ChildSpec, Heartbeat
from supervisor.parent import leases, watchdog
from supervisor.parent.handle import ChildHandle, ChildState, CollectionTotals, StopReason
from supervisor.storage.system_schema import tenant_leases
from supervisor.tenants import ACTIVE, Tenant, insert_tenant
from tests.unit.fakes import EdgeRandom, FakeContext, SignalRecorder

TENANT = Tenant(id=3, slug="acme", name="Acme", status="active", db_url=None)
SPEC = ChildSpec(tenant_id=3, slug="acme", db_url="sqlite://", instance_id="test", settings=None)


def never(*_args: object) -> None:
    raise AssertionError("a fake process never runs")


# --- backoff ---------------------------------------------------------------------------------------------------


def test_the_default_backoff_is_one_second_doubling_to_300() -> None:
    backoff = Backoff(rng=EdgeRandom(high=True))
    assert (backoff.base, backoff.cap, backoff.failures) == (1.0, 300.0, 0)
    assert [backoff.next_delay() for _ in range(10)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert Backoff(base=2.0, cap=5.0, rng=EdgeRandom(high=True)).next_delay() == 2.0
    unseeded = Backoff()  # its own random source
    assert 0.5 <= unseeded.next_delay() <= 1.0


# --- the handle ------------------------------------------------------------------------------------------------


@pytest.fixture
def context() -> Iterator[FakeContext]:
    context = FakeContext()
    yield context
    context.close_all()


def test_a_new_handle_holds_nothing(context: FakeContext) -> None:
    handle = ChildHandle(TENANT, kill=SignalRecorder())
    assert handle.tenant is TENANT and handle.slug == "acme"
    assert handle.conn is None and handle.process is None and handle.started_at is None
    assert handle.started_wall is None and handle.last_heartbeat_at is None and handle.last_heartbeat is None
    assert handle.retry_at is None and handle.stop_reason is None and handle.kill_at is None
    assert handle.killed is False and handle.last_exit_code is None and handle.last_exit_wall is None
    assert handle.last_error is None and handle.rss_mb is None and (handle.restarts, handle.starts) == (0, 0)
    assert handle.totals() == CollectionTotals()


def test_a_killed_child_restarted_is_not_killed(context: FakeContext) -> None:
    handle = ChildHandle(TENANT, kill=SignalRecorder())
    handle.start(context, SPEC, never, [], [])  # type: ignore[arg-type]
    assert handle.killed is False and context.pipes[0][1].closed
    handle.request_stop(StopReason.NO_HEARTBEAT, 0.0, 1.0)
    handle.kill()
    context.processes[-1].exit(-9)
    handle.settle(handle.reap(5.0), True, 5.0)
    handle.start(context, SPEC, never, [], [])  # type: ignore[arg-type]
    assert handle.killed is False and handle.state is ChildState.STARTING
    handle.request_stop(StopReason.NOT_WANTED, 10.0, 5.0)
    assert handle.next_deadline() == 15.0  # not yet killed: the kill is what is due
    handle.kill()
    assert handle.next_deadline() is None


def test_a_heartbeat_counts_from_when_it_was_sent(context: FakeContext) -> None:
    handle = ChildHandle(TENANT, kill=SignalRecorder())
    handle.start(context, SPEC, never, [], [])  # type: ignore[arg-type]
    assert handle.started_at is not None
    t0 = handle.started_at
    beat = Heartbeat(sent_at=1000.0)
    handle.on_heartbeat(beat, t0 + 10, wall_now=1003.0)  # read 3 s after it was sent
    assert handle.last_heartbeat is beat and handle.last_heartbeat_at == pytest.approx(t0 + 7)
    handle.on_heartbeat(beat, t0 + 10, wall_now=990.0)  # the child's clock ahead: never in the future
    assert handle.last_heartbeat_at == pytest.approx(t0 + 10)
    handle.on_heartbeat(beat, t0 + 10, wall_now=2000.0)  # never before the child started
    assert handle.last_heartbeat_at == pytest.approx(t0)
    handle.on_heartbeat(beat, t0 + 10)  # no wall clock given: now
    assert handle.last_heartbeat_at == pytest.approx(t0 + 10)
    handle.on_heartbeat(beat, t0 + 10, wall_now=1000.5)
    assert handle.last_heartbeat_at == pytest.approx(t0 + 9.5)


def test_stop_by_sets_a_deadline_where_there_was_none(context: FakeContext) -> None:
    handle = ChildHandle(TENANT, kill=SignalRecorder())
    handle.start(context, SPEC, never, [], [])  # type: ignore[arg-type]
    handle.stop_by(42.0)
    assert handle.kill_at == 42.0


def test_collection_totals_add_up_over_heartbeats_and_restarts(context: FakeContext) -> None:
    first = Heartbeat(sent_at=1.0, results=(("ok", 5), ("timeout", 1)), duration_counts=(1, 2, 3), duration_sum=1.5)
    second = Heartbeat(sent_at=2.0, results=(("ok", 2),), duration_counts=(4, 5), duration_sum=0.25)
    total = CollectionTotals().plus(first).plus(second)
    assert total.results == Counter({"ok": 7, "timeout": 1})
    assert total.duration_counts == (5, 7, 3) and total.duration_sum == 1.75
    assert CollectionTotals().plus(None) == CollectionTotals()
    longer = CollectionTotals(Counter(), (1,), 0.0).plus(Heartbeat(sent_at=0.0, duration_counts=(1, 1, 1)))
    assert longer.duration_counts == (2, 1, 1)
    handle = ChildHandle(TENANT, kill=SignalRecorder())
    handle.start(context, SPEC, never, [], [])  # type: ignore[arg-type]
    handle.on_heartbeat(first, 1.0)
    handle.on_heartbeat(first, 2.0)  # cumulative in the child: the newest one counts, not both
    assert handle.totals() == CollectionTotals().plus(first)
    context.processes[-1].exit(1)
    handle.settle(handle.reap(3.0), True, 3.0)
    handle.start(context, SPEC, never, [], [])  # type: ignore[arg-type]
    handle.on_heartbeat(second, 4.0)
    assert handle.totals() == total  # the first child's counts carried over its restart


# --- watchdog memory -------------------------------------------------------------------------------------------


def _process_with_rss(monkeypatch: pytest.MonkeyPatch, rss_bytes: int) -> None:
    memory = SimpleNamespace(rss=rss_bytes)
    monkeypatch.setattr(watchdog.psutil, "Process", lambda pid: SimpleNamespace(memory_info=lambda: memory))


def test_rss_is_recorded_to_a_tenth_of_a_mib_and_the_limit_is_inclusive(
    context: FakeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = ChildHandle(TENANT, kill=SignalRecorder())
    handle.start(context, SPEC, never, [], [])  # type: ignore[arg-type]
    _process_with_rss(monkeypatch, int(100.26 * watchdog.MIB))
    assert watchdog.check_memory(handle, 101) is None and handle.rss_mb == 100.3
    _process_with_rss(monkeypatch, 64 * watchdog.MIB)
    assert watchdog.check_memory(handle, 64) is None and handle.rss_mb == 64.0  # exactly at the limit: fine
    _process_with_rss(monkeypatch, 64 * watchdog.MIB + 1)
    verdict = watchdog.check_memory(handle, 64)
    assert verdict is not None and verdict.detail == "RSS 64 MiB over max_child_rss_mb 64"


# --- leases ----------------------------------------------------------------------------------------------------

T0 = dt.datetime(2026, 5, 1, 12, 0, 0)


def _sync(engine: Engine, owner: str, active: list[int], at: dt.datetime, live: int = 1) -> set[int]:
    with engine.begin() as conn:
        return leases.sync_leases(conn, owner, active, (), live, at, 10.0)


def _owners(engine: Engine) -> dict[int, str | None]:
    with engine.connect() as conn:
        return dict(conn.execute(select(tenant_leases.c.tenant_id, tenant_leases.c.owner)).all())


def test_lease_rows_are_made_for_the_tenant_ids_given(system: Engine) -> None:
    ids = [insert_tenant(system, f"t{n}", f"T{n}", None, ACTIVE).id for n in range(6)]
    chosen = [ids[2], ids[5]]  # not 1..n: rows must carry the tenants' own ids
    assert _sync(system, "a", chosen, T0) == set(chosen)
    assert _owners(system) == {ids[2]: "a", ids[5]: "a"}


def test_a_lease_expiring_now_is_still_held(system: Engine) -> None:
    tenant = insert_tenant(system, "t", "T", None, ACTIVE).id
    _sync(system, "a", [tenant], T0)
    assert _sync(system, "b", [tenant], T0 + dt.timedelta(seconds=10)) == set()  # expires_at == now: not < now
    assert _sync(system, "b", [tenant], T0 + dt.timedelta(seconds=10.001)) == {tenant}


@pytest.mark.parametrize("row", [{"owner": None, "expires_at": T0 + dt.timedelta(hours=1)},
                                 {"owner": "gone", "expires_at": None}])  # fmt: skip
def test_a_row_free_by_either_column_can_be_claimed(system: Engine, row: dict[str, object]) -> None:
    """Written by another program or an older version: no owner (whatever the expiry), or no expiry."""
    tenant = insert_tenant(system, "t", "T", None, ACTIVE).id
    _sync(system, "a", [tenant], T0)
    with system.begin() as conn:
        conn.execute(update(tenant_leases).values(**row))
    assert _sync(system, "b", [tenant], T0 + dt.timedelta(seconds=1)) == {tenant}


def test_claim_renews_its_own_live_lease(system: Engine) -> None:
    tenant = insert_tenant(system, "t", "T", None, ACTIVE).id
    _sync(system, "a", [tenant], T0)
    later = T0 + dt.timedelta(seconds=2)
    with system.begin() as conn:
        assert leases._claim(conn, "a", tenant, later, later + dt.timedelta(seconds=10))
        assert not leases._claim(conn, "b", tenant, later, later + dt.timedelta(seconds=10))


def test_leases_need_postgresql_or_sqlite() -> None:
    with pytest.raises(NotImplementedError, match=r"^tenant leases need PostgreSQL or SQLite, not mysql$"):
        leases._insert_for("mysql")
    assert leases._insert_for("sqlite") is not None and leases._insert_for("postgresql") is not None


# --- scheduler -------------------------------------------------------------------------------------------------


def test_the_scheduler_salt_spreads_tenants_apart() -> None:
    unsalted, salted = Scheduler(wall_clock=lambda: 0.0), Scheduler(salt="acme", wall_clock=lambda: 0.0)
    assert unsalted.first_delay(1, 30) == Scheduler(salt="", wall_clock=lambda: 0.0).first_delay(1, 30)
    assert unsalted.first_delay(1, 30) != salted.first_delay(1, 30)


def test_a_shorter_interval_moves_the_next_slot_only_when_sooner() -> None:
    scheduler = Scheduler(wall_clock=lambda: 0.0)
    scheduler.set_servers({1: 10.0}, 0.0)
    first = scheduler.next_due_in(0.0)
    assert first is not None
    scheduler.set_servers({1: first}, 0.0)  # now + interval == next_due: not sooner, unchanged
    assert scheduler.next_due_in(0.0) == first
    scheduler.set_servers({1: first / 2}, 0.0)
    assert scheduler.next_due_in(0.0) == pytest.approx(first / 2)


def test_due_books_the_next_slot_on_the_grid_and_counts_every_skip() -> None:
    scheduler = Scheduler(wall_clock=lambda: 0.0)
    scheduler.set_servers({1: 10.0}, 0.0)
    start = scheduler.next_due_in(0.0)
    assert start is not None
    assert scheduler.due(start) == [1] and scheduler.in_flight(1)
    assert scheduler.next_due_in(start) == pytest.approx(10.0)
    assert scheduler.due(start + 10) == [] and scheduler.skipped(1) == 1  # still in flight
    assert scheduler.due(start + 35) == [] and scheduler.skipped(1) == 2  # late: the missed slots skipped once
    assert scheduler.next_due_in(start + 35) == pytest.approx(5.0)  # back on the grid: start + 40
    scheduler.finished(1)
    assert scheduler.in_flight(1) is False and scheduler.due(start + 40) == [1]
    assert scheduler.skipped(2) == 0 and scheduler.in_flight(2) is False
    scheduler.finished(2)  # unknown: nothing happens
    assert len(scheduler) == 1
    assert Scheduler().due(5.0) == [] and Scheduler().next_due_in(5.0) is None


def test_due_with_random_servers_never_runs_one_twice() -> None:
    rng = random.Random(4)
    scheduler = Scheduler(wall_clock=lambda: 0.0)
    scheduler.set_servers({n: float(rng.choice((1, 2, 5))) for n in range(20)}, 0.0)
    running: set[int] = set()
    for step in range(200):
        now = step * 0.25
        for server in scheduler.due(now):
            assert server not in running
            running.add(server)
        for server in list(running):
            if rng.random() < 0.5:
                running.discard(server)
                scheduler.finished(server)
