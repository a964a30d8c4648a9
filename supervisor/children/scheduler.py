"""Per-server due times: each server on its own grid, never two in flight.

Pure bookkeeping on monotonic seconds; the runtime asks ``due(now)`` and reports ``started`` /
``finished``. A slot that comes while the previous collection is still running is skipped, and
slots missed while the process was busy are skipped too: a late collection is never queued.

Each server's phase on its grid comes from a hash of (tenant, server id) and the wall clock, so a
tenant's servers are spread evenly over the whole interval (a burst of first collections would stay
a burst forever on a fixed grid) and a restarted child keeps the same slots.

With ``ahead``, ``due(now)`` also gives the slots due within ``ahead`` seconds (one wake starts several
collections, each at most ``ahead`` early). A server's first slot is then never within ``ahead`` of the
moment it is added: the child that had the tenant before (a restart, a move to another instance) may
have started that slot early already, and the server would be collected twice in one slot.

A server whose last stored check is an interval old or more when it is added (``check_ages``) missed a slot:
the tenant's previous child died, or the tenant had no owner for a while (a failover). It is collected within
``CATCH_UP_WINDOW`` (each server at a stable point of it) instead of at its next slot, which may be an interval
away, and then goes back onto its grid at the first slot at least half an interval plus ``ahead`` after that
catch-up has finished: no two of its collections are less than half an interval apart, which is what
``bench.scale_out`` counts as one slot collected twice.
"""

from __future__ import annotations

import heapq
import math
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

#: An overdue server added is collected within this many seconds (at most a quarter of its interval).
CATCH_UP_WINDOW = 0.5


@dataclass
class _Slot:
    interval: float
    next_due: float
    in_flight: bool = False
    skipped: int = 0
    #: While catching up: a slot on the server's grid (``next_due`` is the catch-up, off the grid).
    grid: float | None = None
    #: When ``due()`` gave out the catch-up.
    caught_up_at: float | None = None


class Scheduler:
    def __init__(self, salt: str = "", wall_clock: Callable[[], float] = time.time, ahead: float = 0.0) -> None:
        self._slots: dict[int, _Slot] = {}
        self._heap: list[tuple[float, int]] = []  # (next_due, server_id); stale once the slot moved on
        self._salt = salt
        self._wall_clock = wall_clock
        self._ahead = ahead

    def set_servers(
        self, intervals: dict[int, float], now: float, check_ages: Mapping[int, float] | None = None
    ) -> None:
        """The current server list (id → interval seconds): additions, removals, interval changes.
        ``check_ages``: seconds since each added server's last stored check (none: never checked)."""
        for server_id in list(self._slots):
            if server_id not in intervals:
                del self._slots[server_id]
        for server_id, interval in intervals.items():
            slot = self._slots.get(server_id)
            if slot is None:
                slot = self._slots[server_id] = self._first_slot(server_id, interval, now, check_ages or {})
                heapq.heappush(self._heap, (slot.next_due, server_id))
            elif slot.interval != interval:
                if slot.grid is None and now + interval < slot.next_due:
                    slot.next_due = now + interval
                    heapq.heappush(self._heap, (slot.next_due, server_id))
                slot.interval = interval

    def _first_slot(self, server_id: int, interval: float, now: float, check_ages: Mapping[int, float]) -> _Slot:
        delay = self.first_delay(server_id, interval)
        if delay < self._ahead:  # a slot the tenant's previous child may have started early
            delay += interval
        window = min(CATCH_UP_WINDOW, interval / 4)
        age = check_ages.get(server_id)
        if age is None or age < interval or delay <= window:
            return _Slot(interval, now + delay)
        catch_up = now + self._fraction(f"{self._salt}/{server_id}/catch-up") * window
        return _Slot(interval, catch_up, grid=now + delay)

    def first_delay(self, server_id: int, interval: float) -> float:
        """Seconds until the server's next slot: its phase, a stable fraction of the interval, on the wall clock."""
        phase = self._fraction(f"{self._salt}/{server_id}") * interval
        return (phase - self._wall_clock()) % interval

    @staticmethod
    def _fraction(key: str) -> float:
        return zlib.crc32(key.encode()) / 2**32

    def due(self, now: float) -> list[int]:
        """Servers to start now (due by ``now`` + ``ahead``), oldest slot first; their next slot is already booked."""
        ready: list[int] = []
        heap = self._heap
        handed_out_at, now = now, now + self._ahead
        while heap and heap[0][0] <= now:
            due_at, server_id = heapq.heappop(heap)
            slot = self._slot_due_at(server_id, due_at)
            if slot is None:
                continue
            if slot.grid is not None:  # a catch-up: the next slot is booked once it has finished
                slot.caught_up_at = handed_out_at
                slot.in_flight = True
                ready.append(server_id)
                continue
            missed = math.floor((now - slot.next_due) / slot.interval)
            slot.next_due += (missed + 1) * slot.interval
            heapq.heappush(heap, (slot.next_due, server_id))
            if slot.in_flight:
                slot.skipped += 1
                continue
            slot.in_flight = True
            ready.append(server_id)
        return ready

    def finished(self, server_id: int, now: float | None = None) -> None:
        """The server's collection is over; ``now`` is when (after a catch-up the server's next slot is counted
        from it; without it, from when ``due()`` gave the catch-up out)."""
        slot = self._slots.get(server_id)
        if slot is None:
            return
        slot.in_flight = False
        if slot.grid is not None and slot.caught_up_at is not None:
            ended = slot.caught_up_at if now is None else now
            earliest = ended + slot.interval / 2 + self._ahead
            slot.next_due = slot.grid + max(0, math.ceil((earliest - slot.grid) / slot.interval)) * slot.interval
            slot.grid = slot.caught_up_at = None
            heapq.heappush(self._heap, (slot.next_due, server_id))

    def next_due_in(self, now: float) -> float | None:
        """Seconds until the earliest slot: the loop wakes at it, not ``ahead`` before it, so that the wake
        also takes every slot of the ``ahead`` seconds after it (waking ``ahead`` early took one slot a wake)."""
        heap = self._heap
        while heap:
            due_at, server_id = heap[0]
            if self._slot_due_at(server_id, due_at) is not None:
                return max(0.0, due_at - now)
            heapq.heappop(heap)
        return None

    def _slot_due_at(self, server_id: int, due_at: float) -> _Slot | None:
        """The server's slot if this heap entry is still its due time; None for a stale entry."""
        slot = self._slots.get(server_id)
        return slot if slot is not None and slot.next_due == due_at else None

    def in_flight(self, server_id: int) -> bool:
        slot = self._slots.get(server_id)
        return slot is not None and slot.in_flight

    def skipped(self, server_id: int) -> int:
        slot = self._slots.get(server_id)
        return slot.skipped if slot else 0

    def catching_up(self, server_id: int) -> bool:
        slot = self._slots.get(server_id)
        return slot is not None and slot.grid is not None

    def __contains__(self, server_id: object) -> bool:
        return server_id in self._slots

    def __len__(self) -> int:
        return len(self._slots)
