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
"""

from __future__ import annotations

import heapq
import math
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Slot:
    interval: float
    next_due: float
    in_flight: bool = False
    skipped: int = 0


class Scheduler:
    def __init__(self, salt: str = "", wall_clock: Callable[[], float] = time.time, ahead: float = 0.0) -> None:
        self._slots: dict[int, _Slot] = {}
        self._heap: list[tuple[float, int]] = []  # (next_due, server_id); stale once the slot moved on
        self._salt = salt
        self._wall_clock = wall_clock
        self._ahead = ahead

    def set_servers(self, intervals: dict[int, float], now: float) -> None:
        """The current server list (id → interval seconds): additions, removals, interval changes."""
        for server_id in list(self._slots):
            if server_id not in intervals:
                del self._slots[server_id]
        for server_id, interval in intervals.items():
            slot = self._slots.get(server_id)
            if slot is None:
                delay = self.first_delay(server_id, interval)
                if delay < self._ahead:  # a slot the tenant's previous child may have started early
                    delay += interval
                slot = self._slots[server_id] = _Slot(interval, now + delay)
                heapq.heappush(self._heap, (slot.next_due, server_id))
            elif slot.interval != interval:
                if now + interval < slot.next_due:
                    slot.next_due = now + interval
                    heapq.heappush(self._heap, (slot.next_due, server_id))
                slot.interval = interval

    def first_delay(self, server_id: int, interval: float) -> float:
        """Seconds until the server's next slot: its phase, a stable fraction of the interval, on the wall clock."""
        phase = zlib.crc32(f"{self._salt}/{server_id}".encode()) / 2**32 * interval
        return (phase - self._wall_clock()) % interval

    def due(self, now: float) -> list[int]:
        """Servers to start now (due by ``now`` + ``ahead``), oldest slot first; their next slot is already booked."""
        ready: list[int] = []
        heap = self._heap
        now += self._ahead
        while heap and heap[0][0] <= now:
            due_at, server_id = heapq.heappop(heap)
            slot = self._slot_due_at(server_id, due_at)
            if slot is None:
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

    def finished(self, server_id: int) -> None:
        slot = self._slots.get(server_id)
        if slot is not None:
            slot.in_flight = False

    def next_due_in(self, now: float) -> float | None:
        heap = self._heap
        while heap:
            due_at, server_id = heap[0]
            if self._slot_due_at(server_id, due_at) is not None:
                return max(0.0, due_at - self._ahead - now)
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

    def __len__(self) -> int:
        return len(self._slots)
