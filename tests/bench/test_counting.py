"""The benchmarks' own arithmetic, on made-up data (fast): a duplicate snapshot never counts as a collection in
``bench.fleet_run``, and ``bench.soak``'s allowance for the killed child is a bound, not what it measured."""

from __future__ import annotations

import argparse
import datetime as dt
import math

from bench.analysis import ServerRow, Snap, TenantData
from bench.fleet_run import server_slots
from bench.soak import Timeline, audit, restart_bound_s

T0 = dt.datetime(2026, 1, 1, 12, 0, 0)
INTERVAL = 5.0


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def test_every_slot_filled_once_is_all_collections_and_no_duplicate() -> None:
    one, duplicates = server_slots([at(5 * n + 0.2) for n in range(12)], INTERVAL, window_s=60)
    assert (one.collections, one.missed, duplicates) == (12, 0, 0)


def test_a_duplicate_cannot_hide_a_missed_slot_at_the_window_edge() -> None:
    """Slots 0..11 in a 60 s window; the last one missed, slot 10 collected twice: before, 12 snapshots counted as
    12 collections and the edge slot was never missed."""
    times = [at(5 * n + 0.2) for n in range(11)] + [at(50.9)]
    one, duplicates = server_slots(times, INTERVAL, window_s=60)
    assert duplicates == 1
    assert one.collections == 11 and one.missed == 1 and one.slots == 12


def test_duplicates_inside_the_window_are_counted_apart_and_gaps_still_missed() -> None:
    times = [at(0), at(0.4), at(5), at(15), at(15.1), at(15.2), at(20)]
    one, duplicates = server_slots(times, INTERVAL, window_s=25)
    assert duplicates == 3 and one.collections == 4 and one.missed == 1  # slot 2 (10 s)


def _soak(restart_window: float | None, *, missing_slots: int) -> list[str]:
    """One healthy server of the killed tenant, collected every 5 s for 100 s but for ``missing_slots`` slots
    after the kill at 50 s."""
    args = argparse.Namespace(interval=5, collection_timeout=3.0)
    times = [at(5 * n) for n in range(21) if not 10 < n <= 10 + missing_slots]
    tenant = TenantData("killed", "sqlite://")
    tenant.servers[1] = ServerRow(1, "ok-1", "online", None, None, at(100))
    tenant.snapshots[1] = [Snap(t, 5, 500.0, 5.0, 10, 50.0) for t in times]
    timeline = Timeline()
    timeline.kill = (0.0, "killed", 1234)
    result = audit(args, {"killed": tenant}, {}, timeline, {"killed": at(0)}, at(101), [], {"killed": restart_window})
    return result.problems


def test_the_soak_allows_the_killed_child_its_bounded_restart() -> None:
    bound = restart_bound_s()
    assert bound == 1.0 + 5.0  # the first crash backoff (2**0 s at most) and the child's start-up
    allowed_slots = math.ceil(bound / INTERVAL) + 2
    assert _soak(2.0, missing_slots=allowed_slots) == []


def test_a_slow_restart_fails_the_soak_instead_of_widening_its_allowance() -> None:
    problems = _soak(60.0, missing_slots=12)
    assert any("killed" in p and "restart" in p and "60" in p for p in problems), problems
    assert any("ok-1" in p and "slots without a snapshot" in p for p in problems), problems


def test_no_restart_at_all_fails_the_soak_without_a_traceback() -> None:
    problems = _soak(None, missing_slots=10)  # never collected again after the kill
    assert any("not restarted" in p for p in problems), problems
    assert any("ok-1" in p for p in problems), problems
