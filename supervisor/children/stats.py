"""One tenant's collection counters: totals for the heartbeat, a window for the per-minute summary."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


@dataclass
class _Window:
    collected: int = 0
    failed: int = 0
    durations: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class WindowSummary:
    collected: int
    failed: int
    p50_ms: int | None
    p95_ms: int | None


class TenantStats:
    def __init__(self) -> None:
        self.collections_ok = 0
        self.collections_failed = 0
        self.newest_snapshot: dt.datetime | None = None
        self._window = _Window()

    def succeeded(self, duration_ms: int, sample_time: dt.datetime) -> None:
        self.collections_ok += 1
        self._window.collected += 1
        self._window.durations.append(duration_ms)
        self.newest_snapshot = max(self.newest_snapshot or sample_time, sample_time)

    def failed(self, duration_ms: int) -> None:
        self.collections_failed += 1
        self._window.failed += 1
        self._window.durations.append(duration_ms)

    def take_window(self) -> WindowSummary:
        """The window since the last call, and a new empty one."""
        window, self._window = self._window, _Window()
        durations = sorted(window.durations)
        return WindowSummary(window.collected, window.failed, percentile(durations, 50), percentile(durations, 95))


def percentile(sorted_values: list[int], percent: int) -> int | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(percent / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]
