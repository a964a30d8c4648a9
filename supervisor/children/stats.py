"""One tenant's collection counters: totals for the heartbeat (and so the parent's /metrics: counts by
result, a duration histogram), a window for the per-minute summary."""

from __future__ import annotations

import bisect
import datetime as dt
from collections import Counter
from dataclasses import dataclass, field

from supervisor.ipc import DURATION_BUCKETS

OK = "ok"


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
        #: Collections by result (``ok`` or the error class), since the child started.
        self.results: Counter[str] = Counter()
        #: Per upper bound of ``DURATION_BUCKETS`` (and one for +Inf), collections that took longer than the
        #: bound before it and at most this one; with the sum, a Prometheus histogram.
        self.duration_counts = [0] * (len(DURATION_BUCKETS) + 1)
        self.duration_sum = 0.0
        self._window = _Window()

    def succeeded(self, duration_ms: int, checked_at: dt.datetime) -> None:
        """``checked_at``: this host's clock when the collection started (a server's own clock may be far off)."""
        self.collections_ok += 1
        self._window.collected += 1
        self._count(OK, duration_ms)
        self.newest_snapshot = max(self.newest_snapshot or checked_at, checked_at)

    def failed(self, duration_ms: int, error_class: str) -> None:
        self.collections_failed += 1
        self._window.failed += 1
        self._count(error_class, duration_ms)

    def _count(self, result: str, duration_ms: int) -> None:
        self.results[result] += 1
        self._window.durations.append(duration_ms)
        seconds = duration_ms / 1000
        self.duration_counts[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.duration_sum += seconds

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
