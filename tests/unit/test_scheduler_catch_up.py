"""The scheduler's catch-up (children/scheduler.py): a server added with its last stored check an interval old or
more is collected within CATCH_UP_WINDOW, then goes back onto its grid; no two collections of a server are ever
closer than half an interval (what bench.scale_out counts as a duplicate), across a handover included."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

import pytest

from supervisor.children.scheduler import CATCH_UP_WINDOW, Scheduler

AHEAD = 0.5
WALL = 1000.0  # the wall clock at monotonic 0 (every scheduler here shares one time line)


def scheduler(salt: str = "acme", *, at: float = 0.0, ahead: float = AHEAD) -> Scheduler:
    return Scheduler(salt=salt, wall_clock=lambda: WALL + at, ahead=ahead)


def server_with_slot_in(low: float, high: float, interval: float) -> int:
    """A server whose grid slot is between ``low`` and ``high`` seconds after monotonic 0."""
    probe = scheduler()
    return next(sid for sid in range(10_000) if low <= probe.first_delay(sid, interval) <= high)


def test_an_overdue_server_is_collected_within_the_window_then_back_on_its_grid() -> None:
    interval = 10.0
    sid = server_with_slot_in(8.0, 9.0, interval)
    grid = scheduler().first_delay(sid, interval)
    plan = scheduler()
    plan.set_servers({sid: interval}, 0.0, check_ages={sid: interval})  # missed a slot: exactly an interval old
    assert plan.catching_up(sid)
    until = plan.next_due_in(0.0)
    assert until is not None and until <= CATCH_UP_WINDOW
    assert plan.due(CATCH_UP_WINDOW) == [sid] and plan.in_flight(sid)
    assert plan.next_due_in(CATCH_UP_WINDOW) is None  # nothing booked while the catch-up runs
    plan.finished(sid, CATCH_UP_WINDOW + 0.1)
    assert not plan.catching_up(sid) and not plan.in_flight(sid)
    assert plan.next_due_in(0.0) == pytest.approx(grid)  # its own grid slot, far enough after
    assert plan.due(grid - AHEAD - 0.01) == [] and plan.due(grid - AHEAD) == [sid]


def test_the_grid_slot_too_soon_after_the_catch_up_is_skipped() -> None:
    interval = 10.0
    sid = server_with_slot_in(3.0, 4.0, interval)  # more than the window away, less than half an interval + ahead
    grid = scheduler().first_delay(sid, interval)
    plan = scheduler()
    plan.set_servers({sid: interval}, 0.0, check_ages={sid: 60.0})
    assert plan.due(CATCH_UP_WINDOW) == [sid]
    ended = 0.9
    plan.finished(sid, ended)
    next_slot = (plan.next_due_in(ended) or 0.0) + ended
    assert next_slot == pytest.approx(grid + interval)
    assert next_slot - AHEAD - ended >= interval / 2  # even when a wake for another slot takes it ``ahead`` early


def test_a_catch_up_that_ends_late_moves_the_next_slot_with_it() -> None:
    """The pool may queue the catch-up (concurrency), and the server may be slow: counted from its end."""
    interval = 10.0
    sid = server_with_slot_in(7.0, 8.0, interval)
    grid = scheduler().first_delay(sid, interval)
    plan = scheduler()
    plan.set_servers({sid: interval}, 0.0, check_ages={sid: 30.0})
    assert plan.due(CATCH_UP_WINDOW) == [sid]
    assert plan.due(grid) == [] and plan.skipped(sid) == 0  # still out: no slot booked, none skipped
    plan.finished(sid, 4.0)  # 7.x is within 5.5 s of its end
    assert plan.next_due_in(4.0) == pytest.approx(grid + interval - 4.0)


def test_without_the_end_time_the_next_slot_counts_from_the_hand_out() -> None:
    interval = 10.0
    sid = server_with_slot_in(5.0, 5.9, interval)
    grid = scheduler().first_delay(sid, interval)
    plan = scheduler()
    plan.set_servers({sid: interval}, 0.0, check_ages={sid: 30.0})
    handed_out = (plan.next_due_in(0.0) or 0.0) + 0.01
    assert plan.due(handed_out) == [sid]
    plan.finished(sid)
    expected = grid if grid >= handed_out + interval / 2 + AHEAD else grid + interval
    assert plan.next_due_in(0.0) == pytest.approx(expected)


@pytest.mark.parametrize("age", [None, 0.0, 9.99])
def test_a_server_checked_within_its_interval_or_never_keeps_its_grid_slot(age: float | None) -> None:
    interval = 10.0
    sid = server_with_slot_in(6.0, 7.0, interval)
    plan = scheduler()
    plan.set_servers({sid: interval}, 0.0, check_ages={} if age is None else {sid: age})
    assert not plan.catching_up(sid)
    assert plan.next_due_in(0.0) == pytest.approx(scheduler().first_delay(sid, interval))


def test_an_overdue_server_whose_slot_is_within_the_window_just_keeps_it() -> None:
    interval = 10.0
    sid = server_with_slot_in(0.01, CATCH_UP_WINDOW, interval)
    plan = scheduler(ahead=0.0)
    plan.set_servers({sid: interval}, 0.0, check_ages={sid: 100.0})
    assert not plan.catching_up(sid)


def test_a_server_already_listed_is_not_caught_up_again() -> None:
    interval = 10.0
    sid = server_with_slot_in(6.0, 7.0, interval)
    plan = scheduler()
    plan.set_servers({sid: interval}, 0.0)
    plan.set_servers({sid: interval}, 1.0, check_ages={sid: 100.0})  # only added servers are looked at
    assert not plan.catching_up(sid)


def test_catch_ups_spread_over_the_window_and_a_short_interval_has_a_shorter_one() -> None:
    for interval, window in ((30.0, CATCH_UP_WINDOW), (1.0, 0.25)):
        plan = scheduler()
        servers = {sid: interval for sid in range(400)}
        plan.set_servers(servers, 0.0, check_ages=dict.fromkeys(servers, 3600.0))
        caught = [sid for sid in servers if plan.catching_up(sid)]
        assert len(caught) > 300
        started: dict[int, float] = {}
        for step in range(1, 101):
            now = step * window / 100
            for sid in plan.due(now - AHEAD):  # due() starts them up to ahead early: ask without it
                started.setdefault(sid, now)
        assert set(caught) <= set(started)
        quarters = [sum(1 for sid in caught if q * window / 4 < started[sid] <= (q + 1) * window / 4) for q in range(4)]
        assert min(quarters) > len(caught) / 8, quarters  # spread, not one burst


def test_an_interval_change_during_a_catch_up_keeps_the_catch_up() -> None:
    sid = server_with_slot_in(8.0, 9.0, 10.0)
    plan = scheduler()
    plan.set_servers({sid: 10.0}, 0.0, check_ages={sid: 100.0})
    plan.set_servers({sid: 5.0}, 0.1)
    assert plan.catching_up(sid) and plan.due(CATCH_UP_WINDOW) == [sid]
    plan.finished(sid, 1.0)
    assert plan.due(1.0 + 2.5 - 0.01) == [] and not plan.catching_up(sid)


# --- a handover, simulated -----------------------------------------------------------------------------------


@dataclass
class Child:
    """One child's scheduler driven like the runtime: wakes at uneven times, collections queued in the pool for a
    while, each sampled somewhere in its run and finished (harvested) at the next wake after its end."""

    plan: Scheduler
    rng: random.Random
    samples: list[float] = field(default_factory=list)
    catch_ups: list[float] = field(default_factory=list)  # the samples of catch-up collections
    last_end: float | None = None
    running: dict[int, float] = field(default_factory=dict)  # server -> end

    def run(self, start: float, stop: float) -> float:
        now = start
        while now < stop:
            for sid, end in list(self.running.items()):
                if end <= now:
                    del self.running[sid]
                    self.plan.finished(sid, now)
            for sid in self.plan.due(now):
                begins = now + self.rng.choice((0.0, 0.0, self.rng.uniform(0, 1.5)))  # queued behind others
                took = self.rng.uniform(0.001, 0.6)
                sample = begins + self.rng.uniform(0, took)
                self.samples.append(sample)
                if self.plan.catching_up(sid):
                    self.catch_ups.append(sample)
                self.running[sid] = self.last_end = begins + took
            now += self.rng.uniform(0.01, 0.4)
        return max([now, *self.running.values()])  # a stopping child lets its last collection end


@pytest.mark.parametrize("seed", range(300))
def test_across_a_handover_the_catch_up_never_collects_a_slot_twice(seed: int) -> None:
    rng = random.Random(seed)
    interval = rng.choice((1.0, 3.0, 10.0, 30.0))
    server = rng.randrange(1000)
    old = Child(Scheduler(salt="t", wall_clock=lambda: WALL, ahead=AHEAD), rng)
    old.plan.set_servers({server: interval}, 0.0)
    stopped = old.run(0.0, rng.uniform(0, 4 * interval))
    # The next owner starts after the old child exited: a move (0.75 s gap), a restart, or a lease expiry.
    begins = stopped + rng.choice((0.75, 1.0, rng.uniform(0.75, 3 * interval), rng.uniform(20, 40)))
    new = Child(Scheduler(salt="t", wall_clock=lambda: WALL + begins, ahead=AHEAD), rng)
    ages = {} if old.last_end is None else {server: begins - old.last_end}  # last_checked_at: the last one's end
    new.plan.set_servers({server: interval}, begins, check_ages=ages)
    new.run(begins, begins + 4 * interval)
    assert new.samples
    samples = sorted(old.samples + new.samples)
    after = dict(itertools.pairwise(samples))
    for catch_up in new.catch_ups:  # not the old child's last slot again, and the grid slot after is not this one
        assert catch_up - max(old.samples) >= interval / 2
        assert after.get(catch_up, catch_up + interval) - catch_up >= interval / 2, (interval, begins, samples)
    # (Grid slots alone are the scheduler's older rules, tests/collector/test_pure_logic.py.)
    overdue = bool(ages) and ages[server] >= interval
    assert new.catch_ups in ([], new.samples[:1]) and (overdue or not new.catch_ups)
    if overdue:  # collected again within the window (plus the pool's queue and a wake)
        assert min(new.samples) <= begins + min(CATCH_UP_WINDOW, interval / 4) + 1.5 + 0.6
