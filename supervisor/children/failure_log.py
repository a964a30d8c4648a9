"""How loudly to log a failed collection: a server that keeps failing the same way is logged at
WARNING on the first failure, when the error class changes, and then once per REMIND_EVERY seconds;
the repeats in between go to DEBUG. With thousands of servers, an outage must not flood ``tail -f``
(the per-minute ``tenant.summary`` still counts every failure)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

REMIND_EVERY = 600.0


@dataclass
class _Streak:
    error_class: str
    logged_at: float
    repeats: int = 0


class FailureLogPolicy:
    def __init__(self, remind_every: float = REMIND_EVERY) -> None:
        self._remind_every = remind_every
        self._streaks: dict[int, _Streak] = {}

    def failed(self, server_id: int, error_class: str, now: float) -> tuple[int, int]:
        """The level for this failure and how many identical ones were not logged at WARNING before it."""
        streak = self._streaks.get(server_id)
        if streak is None or streak.error_class != error_class or now - streak.logged_at >= self._remind_every:
            repeats = 0 if streak is None or streak.error_class != error_class else streak.repeats
            self._streaks[server_id] = _Streak(error_class, now)
            return logging.WARNING, repeats
        streak.repeats += 1
        return logging.DEBUG, streak.repeats

    def succeeded(self, server_id: int) -> None:
        self._streaks.pop(server_id, None)
