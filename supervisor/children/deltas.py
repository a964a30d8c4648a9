"""Rates and increments from cumulative counters, against the previous raw sample (the baseline).

Re-baseline (no rate, no wait increments) when there is no baseline, the instance restarted
(changed ``sqlserver_start_time``), the server clock did not move forward, the gap is longer than
``max_sample_gap``, or the counter went backwards. A rate is never negative or absurd.

The server's clock may step (NTP, a VM resumed, an operator) between two samples: the server's elapsed time, which
rates divide by, then disagrees with the collector's (``checked_at``, this host's clock when each collection
started) by more than a collection can take, and the sample has no rate nor wait increments ("server clock
stepped"). A baseline without ``checked_at`` (stored by an earlier version) skips that check.

Wait statistics are cleared as a whole (``DBCC SQLPERF('sys.dm_os_wait_stats', CLEAR)``): one wait type whose
counters went down means every type restarted from zero somewhere in the interval, also those that have since grown
past their old totals, so that sample has no wait increments at all. A type's increment no wait could have made
(more wait time than its completed waits could have lasted since the instance started, more signal wait than wait)
is left out.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from supervisor.children.sample import Sample, WaitCounts

#: No SQL Server sustains this many batches per second; a larger rate means a bogus counter.
MAX_PLAUSIBLE_BATCH_RATE = 10_000_000.0


@dataclass(frozen=True)
class Baseline:
    sqlserver_start_time: dt.datetime
    sample_time: dt.datetime
    batch_requests_total: int | None
    waits: dict[str, WaitCounts] = field(default_factory=dict)
    #: This host's clock (naive UTC) when the collection of this sample started; None if not known.
    checked_at: dt.datetime | None = None
    #: Wait types whose counters this sample did not know (NULL): the next sample has no increment for them.
    #: Kept in memory and in the spool only; a baseline read back from the tenant DB has none.
    unknown_waits: tuple[str, ...] = ()

    @classmethod
    def of(cls, sample: Sample, checked_at: dt.datetime | None = None) -> Baseline:
        return cls(sample.sqlserver_start_time, sample.sample_time, sample.batch_requests_total, dict(sample.waits),
                   checked_at, tuple(sorted(sample.unknown_waits)))  # fmt: skip

    def newer_than(self, other: Baseline) -> bool:
        """Taken later: by this host's clock where both say (a server's clock may have stepped back since)."""
        if self.checked_at is not None and other.checked_at is not None:
            return self.checked_at > other.checked_at
        return self.sample_time > other.sample_time

    def waits_json(self) -> str:
        return json.dumps(
            {name: [w.waiting_tasks_count, w.wait_time_ms, w.signal_wait_time_ms] for name, w in self.waits.items()},
            separators=(",", ":"),
            sort_keys=True,
        )

    @staticmethod
    def parse_waits(text: str) -> dict[str, WaitCounts]:
        try:
            data = json.loads(text or "{}")
            return {str(name): WaitCounts(int(v[0]), int(v[1]), int(v[2])) for name, v in data.items()}
        except (ValueError, TypeError, IndexError, AttributeError):
            return {}


@dataclass(frozen=True)
class Deltas:
    batch_requests_per_sec: float | None
    interval_seconds: float | None
    waits: dict[str, WaitCounts]
    rebaselined: str | None  # why there is no rate, None when there is one


#: Besides the collection timeout, how far the server's elapsed time may differ from this host's: clock granularity
#: and the drift of two clocks over one interval (well under 1 s per ``max_sample_gap``).
CLOCK_SLACK_SECONDS = 1.0


def compute(
    previous: Baseline | None, sample: Sample, max_gap_seconds: float, checked_at: dt.datetime | None = None,
    collection_timeout: float = 5.0,
) -> Deltas:
    """``checked_at``: this host's clock when the collection of ``sample`` started. Each server time lies within its
    collection (at most ``collection_timeout`` long), so two agree with this host's within that and the slack."""
    if previous is None:
        return Deltas(None, None, {}, "first sample")
    elapsed = (sample.sample_time - previous.sample_time).total_seconds()
    interval = round(elapsed, 3) if elapsed > 0 else None
    if sample.sqlserver_start_time != previous.sqlserver_start_time:
        return Deltas(None, interval, {}, "instance restarted")
    if elapsed <= 0:
        return Deltas(None, None, {}, "server clock did not advance")
    if checked_at is not None and previous.checked_at is not None:
        here = (checked_at - previous.checked_at).total_seconds()
        if abs(elapsed - here) > collection_timeout + CLOCK_SLACK_SECONDS:
            return Deltas(None, None, {}, "server clock stepped")
    if elapsed > max_gap_seconds:
        return Deltas(None, interval, {}, "gap longer than max_sample_gap")
    rate = _rate(previous.batch_requests_total, sample.batch_requests_total, elapsed)
    reason = None
    if rate is None and sample.batch_requests_total is not None:
        reason = "counter reset"
    uptime_ms = (sample.sample_time - sample.sqlserver_start_time).total_seconds() * 1000
    waits = wait_increments(previous.waits, sample.waits, uptime_ms, unknown_before=previous.unknown_waits)
    return Deltas(rate, interval, waits or {}, reason)


def _rate(before: int | None, after: int | None, elapsed: float) -> float | None:
    # Only ints count (``parse_sample`` checks the sample; a baseline row may hold anything).
    if type(before) is not int or type(after) is not int or after < before:
        return None
    rate = (after - before) / elapsed
    return round(rate, 3) if rate <= MAX_PLAUSIBLE_BATCH_RATE else None


def wait_increments(
    before: dict[str, WaitCounts], after: dict[str, WaitCounts], uptime_ms: float, *,
    unknown_before: tuple[str, ...] = (),
) -> dict[str, WaitCounts] | None:
    """Per wait type, what happened between the samples; new types count from 0 (not those ``unknown_before``: they
    were there, their counts unknown); zero-count and impossible increments dropped. None when the wait statistics
    were cleared in between (a type's counter went down)."""
    increments: dict[str, WaitCounts] = {}
    zero = WaitCounts(0, 0, 0)
    for name, now in after.items():
        if name in unknown_before and name not in before:
            continue
        then = before.get(name, zero)
        delta = WaitCounts(
            now.waiting_tasks_count - then.waiting_tasks_count,
            now.wait_time_ms - then.wait_time_ms,
            now.signal_wait_time_ms - then.signal_wait_time_ms,
        )
        if min(delta.waiting_tasks_count, delta.wait_time_ms, delta.signal_wait_time_ms) < 0:
            return None
        if delta.waiting_tasks_count == 0:  # SQL Server adds wait time when a wait ends, with its count
            continue
        if delta.wait_time_ms > delta.waiting_tasks_count * max(uptime_ms, 0) or (
            delta.signal_wait_time_ms > delta.wait_time_ms
        ):
            continue
        increments[name] = delta
    return increments
