"""Per-server due times: each server on its own grid, a random phase, never two in flight.

Pure bookkeeping on monotonic seconds; the runtime asks ``due(now)`` and reports ``started`` /
``finished``. A slot that comes while the previous collection is still running is skipped, and
slots missed while the process was busy are skipped too: a late collection is never queued.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

#: The first collection of a server comes within this many seconds (or one interval, if shorter).
MAX_INITIAL_SPREAD = 10.0


@dataclass
class _Slot:
    interval: float
    next_due: float
    in_flight: bool = False
    skipped: int = 0


class Scheduler:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._slots: dict[int, _Slot] = {}
        self._rng = rng or random.Random()

    def set_servers(self, intervals: dict[int, float], now: float) -> None:
        """The current server list (id → interval seconds): additions, removals, interval changes."""
        for server_id in list(self._slots):
            if server_id not in intervals:
                del self._slots[server_id]
        for server_id, interval in intervals.items():
            slot = self._slots.get(server_id)
            if slot is None:
                spread = min(interval, MAX_INITIAL_SPREAD)
                self._slots[server_id] = _Slot(interval, now + self._rng.uniform(0, spread))
            elif slot.interval != interval:
                slot.next_due = min(slot.next_due, now + interval)
                slot.interval = interval

    def due(self, now: float) -> list[int]:
        """Servers to start now; their next slot is already booked."""
        ready: list[int] = []
        for server_id, slot in self._slots.items():
            if slot.next_due > now:
                continue
            missed = math.floor((now - slot.next_due) / slot.interval)
            slot.next_due += (missed + 1) * slot.interval
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
        waiting = [slot.next_due for slot in self._slots.values()]
        return max(0.0, min(waiting) - now) if waiting else None

    def in_flight(self, server_id: int) -> bool:
        slot = self._slots.get(server_id)
        return slot is not None and slot.in_flight

    def skipped(self, server_id: int) -> int:
        slot = self._slots.get(server_id)
        return slot.skipped if slot else 0

    def __len__(self) -> int:
        return len(self._slots)
