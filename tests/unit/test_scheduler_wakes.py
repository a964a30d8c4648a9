"""How often the child's loop wakes for its slots: one wake starts every slot due within ``ahead``."""

from __future__ import annotations

from supervisor.children.scheduler import Scheduler

AHEAD = 0.5
INTERVAL = 30.0
SERVERS = 300  # ten slots a second


def _run_one_interval(scheduler: Scheduler) -> tuple[int, dict[int, float]]:
    """Sleep as the loop does (``next_due_in``), start what ``due`` gives; the wakes and each server's start."""
    now, wakes, started = 0.0, 0, {}
    while True:
        wait = scheduler.next_due_in(now)
        assert wait is not None
        if now + wait >= INTERVAL:
            return wakes, started
        now += wait
        wakes += 1
        for server_id in scheduler.due(now):
            started.setdefault(server_id, now)
            scheduler.finished(server_id, now)


def test_a_wake_starts_every_slot_due_within_ahead_so_the_loop_wakes_once_per_ahead_at_most() -> None:
    scheduler = Scheduler(salt="acme", wall_clock=lambda: 0.0, ahead=AHEAD)
    scheduler.set_servers({sid: INTERVAL for sid in range(SERVERS)}, 0.0)
    slots = {sid: scheduler.first_delay(sid, INTERVAL) for sid in range(SERVERS)}
    slots = {sid: slot + INTERVAL if slot < AHEAD else slot for sid, slot in slots.items()}

    wakes, started = _run_one_interval(scheduler)

    first_interval = {sid for sid, slot in slots.items() if slot < INTERVAL}
    assert first_interval <= set(started)
    for sid, at in started.items():
        assert slots[sid] - AHEAD <= at <= slots[sid]  # never late, never more than ahead early
    # Each wake takes every slot of the next AHEAD seconds, so wakes are AHEAD apart or more.
    assert wakes <= INTERVAL / AHEAD + 1
