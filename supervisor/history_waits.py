"""A server's waits over a window, for ``server show``: the top wait types and, for the PNG, their rate.

Waits are reached from the window's snapshots (index ``ix_metric_snapshots_server_time``) into ``wait_stats``
by its primary key. Ranking them means sorting every wait row of the window by type in the database, which
for a month of 30-s snapshots (86,400 snapshots, half a million wait rows) costs most of a second; so a window
of more than ``MAX_EXACT_SNAPSHOTS`` snapshots reads the waits of an even sample of them: the window is cut
into ``STRATA`` equal slices and the same leading part of each slice is read (never every n-th id, which would
alias with a tenant's servers taking turns), and the totals are scaled by snapshots / sampled. The result
says so (``WaitSample``), and the text and JSON show it. Counters that are not numbers count as missing
(``history.numeric``), as in the metric series.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, Float, Integer, cast, extract, func, literal, select, true

from supervisor.history import (
    Point,
    Window,
    bridge,
    bucket_index,
    bucket_of,
    finite,
    in_window,
    julian_day,
    numeric,
    once_per_row,
    shown,
)
from supervisor.storage.tenant_schema import metric_snapshots, wait_stats

MAX_EXACT_SNAPSHOTS = 20_000
STRATA = 2048
_snap = metric_snapshots.c


@dataclass(frozen=True)
class WaitSample:
    snapshots: int  # in the window
    sampled: int  # whose waits were read
    condition: ColumnElement[bool]

    @property
    def exact(self) -> bool:
        return self.sampled == self.snapshots

    @property
    def scale(self) -> float:
        return self.snapshots / self.sampled if self.sampled else 1.0

    def as_json(self) -> dict[str, Any]:
        return {"exact": self.exact, "snapshots": self.snapshots, "sampled": self.sampled}


def sample(
    conn: Connection, server_id: int, window: Window, snapshots: int, max_exact: int = MAX_EXACT_SNAPSHOTS
) -> WaitSample:
    """All ``snapshots`` of the window, or an even sample of about ``max_exact`` of them."""
    if snapshots <= max_exact:
        return WaitSample(snapshots, snapshots, true())
    keep = max_exact / snapshots
    stratum = window.seconds / STRATA
    if conn.dialect.name == "sqlite":
        slices = (func.julianday(_snap.collected_at) - julian_day(window.start)) * (86400.0 / stratum)
        whole: ColumnElement[Any] = cast(slices, Integer)  # truncation: the offsets are >= 0
    else:
        slices = extract("epoch", _snap.collected_at - literal(window.start)) / stratum
        whole = func.floor(slices)
    condition = cast(slices - whole, Float) < keep
    query = select(func.count()).where(in_window(server_id, window), condition)
    sampled = int(conn.execute(query).scalar() or 0)
    return WaitSample(snapshots, sampled, condition)


def top_waits(conn: Connection, server_id: int, window: Window, chosen: WaitSample, limit: int = 5) -> list[dict]:
    """Wait types by their total wait time in the window (benign ones were never stored), with their share of
    all stored wait time; scaled up from the sample where the window was sampled."""
    counters = ("wait_time_ms", "waiting_tasks_count", "signal_wait_time_ms")
    values = once_per_row(
        conn,
        select(wait_stats.c.wait_type, *(numeric(wait_stats.c[name]).label(name) for name in counters))
        .select_from(metric_snapshots.join(wait_stats, wait_stats.c.snapshot_id == _snap.id))
        .where(in_window(server_id, window), chosen.condition),
    ).subquery()
    total = func.sum(values.c.wait_time_ms).label("wait_time_ms")
    query = (
        select(
            values.c.wait_type,
            total,
            func.sum(values.c.waiting_tasks_count).label("waiting_tasks_count"),
            func.sum(values.c.signal_wait_time_ms).label("signal_wait_time_ms"),
        )
        .group_by(values.c.wait_type)
        .order_by(total.desc(), values.c.wait_type)
    )
    rows = [dict(row) for row in conn.execute(query).mappings()]
    everything = sum(finite(row["wait_time_ms"]) or 0.0 for row in rows)
    for row in rows:
        row["wait_type"] = shown(row["wait_type"])
        row["share"] = (finite(row["wait_time_ms"]) or 0.0) / everything if everything else 0.0
        for key in ("wait_time_ms", "waiting_tasks_count", "signal_wait_time_ms"):
            row[key] = round((finite(row[key]) or 0.0) * chosen.scale)
    return rows[:limit]


def wait_series(
    conn: Connection, server_id: int, window: Window, wait_types: list[str], chosen: WaitSample, points: list[Point]
) -> dict[str, list[float | None]]:
    """Per bucket, the wait time of each of ``wait_types`` in ms per second: the waits of the bucket's (sampled)
    snapshots over the time their deltas cover (so the first snapshot after an outage, holding the outage's
    waits, is no spike), short gaps bridged as in ``history.columns``."""
    if not wait_types:
        return {}
    bucket = bucket_of(conn, window)
    query = (
        select(bucket, wait_stats.c.wait_type, func.sum(numeric(wait_stats.c.wait_time_ms)))
        .select_from(metric_snapshots.join(wait_stats, wait_stats.c.snapshot_id == _snap.id))
        .where(in_window(server_id, window), chosen.condition, wait_stats.c.wait_type.in_(wait_types))
        .group_by(bucket, wait_stats.c.wait_type)
    )
    totals = {name: [0.0] * window.buckets for name in wait_types}
    for index, wait_type, total in conn.execute(query):
        if index is not None and wait_type in totals:  # SQLite: NULL for a collected_at that is no time
            totals[wait_type][bucket_index(window, index)] += finite(total) or 0.0
    covered = [0.0] * window.buckets
    if chosen.exact:
        for point in points:
            covered[point.index] = point.covered_s
    else:
        seconds = func.sum(numeric(_snap.interval_seconds))
        spans = select(bucket, seconds).where(in_window(server_id, window), chosen.condition)
        for index, span in conn.execute(spans.group_by(bucket)):
            if index is not None:
                covered[bucket_index(window, index)] += finite(span) or 0.0
    return {
        name: bridge([sums[i] / covered[i] if covered[i] > 0 else None for i in range(window.buckets)])
        for name, sums in totals.items()
    }
