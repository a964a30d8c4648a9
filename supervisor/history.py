"""A server's stored history, read for ``server show``: from the tenant DB only, never a new collection.

Every query is bounded by the snapshot index ``ix_metric_snapshots_server_time`` (server, time range), and the
series are downsampled in SQL: the database groups the rows into equal time buckets, so a month of 30-s
snapshots comes back as a few hundred rows. Waits are reached through the same index range (``wait_stats`` by
its primary key, snapshot first; ``history_waits``).
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, Integer, Label, and_, cast, extract, func, literal, select

from supervisor.storage.tenant_schema import metric_snapshots, server_status_events

#: The four charted metrics: column name -> label.
METRICS = {
    "cpu_percent": "CPU %",
    "memory_percent": "memory %",
    "connection_count": "connections",
    "batch_requests_per_sec": "batch requests/s",
}
_EPOCH = dt.datetime(1970, 1, 1)
_snap = metric_snapshots.c


@dataclass(frozen=True)
class Window:
    start: dt.datetime  # naive UTC, as stored
    end: dt.datetime
    buckets: int

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    @property
    def bucket_seconds(self) -> float:
        return self.seconds / self.buckets

    def bucket_start(self, index: int) -> dt.datetime:
        return self.start + dt.timedelta(seconds=index * self.bucket_seconds)


@dataclass(frozen=True)
class Point:
    """One bucket: the averages of its snapshots (None where no snapshot of it has the metric)."""

    index: int
    at: dt.datetime  # the bucket's start
    samples: int
    values: dict[str, float | None]
    covered_s: float = 0.0  # the seconds its snapshots' deltas cover (sum of interval_seconds)


def in_window(server_id: int, window: Window) -> ColumnElement[bool]:
    return and_(_snap.server_id == server_id, _snap.collected_at >= window.start, _snap.collected_at <= window.end)


def bucket_of(conn: Connection, window: Window) -> Label[Any]:
    """A snapshot's bucket number, computed by the database (0 .. buckets, the end itself is the last + 1)."""
    per_second = 1.0 / window.bucket_seconds
    if conn.dialect.name == "sqlite":  # DateTime is stored as ISO text: julianday() reads it
        offset = (func.julianday(_snap.collected_at) - julian_day(window.start)) * (86400.0 * per_second)
        return cast(offset, Integer).label("bucket")  # truncates; offsets are >= 0
    offset = extract("epoch", _snap.collected_at - literal(window.start)) * per_second
    return cast(func.floor(offset), Integer).label("bucket")


def julian_day(moment: dt.datetime) -> float:
    """What SQLite's julianday() gives for ``moment`` (naive UTC)."""
    return (moment - _EPOCH).total_seconds() / 86400.0 + 2440587.5


def bucket_index(window: Window, raw: Any) -> int:
    return min(window.buckets - 1, max(0, int(raw)))


def series(conn: Connection, server_id: int, window: Window) -> tuple[list[Point], dict[str, Any]]:
    """The non-empty buckets of the window in time order, and the window's summary: its snapshot count and, per
    metric, min / avg / max over the raw snapshots (from the buckets' counts, sums, minima and maxima: one scan)."""
    bucket = bucket_of(conn, window)
    aggregates: list[Any] = [func.count(), func.sum(_snap.interval_seconds)]
    for name in METRICS:
        column = getattr(_snap, name)
        aggregates += [func.count(column), func.sum(column), func.min(column), func.max(column)]
    query = select(bucket, *aggregates).where(in_window(server_id, window)).group_by(bucket).order_by(bucket)
    points: list[Point] = []
    totals = {name: _Total() for name in METRICS}
    snapshots = 0
    for row in conn.execute(query):
        index, samples, covered = bucket_index(window, row[0]), int(row[1]), float(row[2] or 0)
        snapshots += samples
        values: dict[str, float | None] = {}
        for i, name in enumerate(METRICS):
            count, total, low, high = row[3 + 4 * i : 7 + 4 * i]
            values[name] = float(total) / count if count else None
            if count:
                totals[name].add(count, float(total), float(low), float(high))
        if points and points[-1].index == index:  # the snapshot exactly at the end joins the last bucket
            points[-1] = _merged(points[-1], values, samples, covered)
        else:
            points.append(Point(index, window.bucket_start(index), samples, values, covered))
    return points, {"snapshots": snapshots, "metrics": {name: total.stats() for name, total in totals.items()}}


@dataclass
class _Total:
    count: int = 0
    total: float = 0.0
    low: float = float("inf")
    high: float = float("-inf")

    def add(self, count: int, total: float, low: float, high: float) -> None:
        self.count += count
        self.total += total
        self.low = min(self.low, low)
        self.high = max(self.high, high)

    def stats(self) -> dict[str, float] | None:
        return {"min": self.low, "avg": self.total / self.count, "max": self.high} if self.count else None


def _merged(point: Point, values: dict[str, float | None], samples: int, covered: float) -> Point:
    total = point.samples + samples
    merged: dict[str, float | None] = {}
    for name, value in values.items():
        old = point.values[name]
        if old is None or value is None:
            merged[name] = old if value is None else value
        else:
            merged[name] = (old * point.samples + value * samples) / total
    return Point(point.index, point.at, total, merged, point.covered_s + covered)


def latest(conn: Connection, server_id: int) -> dict[str, Any] | None:
    """The newest snapshot of the server, whatever its age."""
    query = (
        select(_snap.collected_at, *(getattr(_snap, name) for name in METRICS))
        .where(_snap.server_id == server_id)
        .order_by(_snap.collected_at.desc())
        .limit(1)
    )
    row = conn.execute(query).mappings().first()
    return None if row is None else dict(row)


def status_events(conn: Connection, server_id: int, window: Window, limit: int = 20) -> tuple[list[dict], int]:
    """The newest ``limit`` status changes in the window (oldest first), and how many the window holds."""
    where = and_(
        server_status_events.c.server_id == server_id,
        server_status_events.c.at >= window.start,
        server_status_events.c.at <= window.end,
    )
    count = int(conn.execute(select(func.count()).select_from(server_status_events).where(where)).scalar() or 0)
    query = (
        select(server_status_events.c.at, server_status_events.c.status, server_status_events.c.error)
        .where(where)
        .order_by(server_status_events.c.at.desc(), server_status_events.c.id.desc())
        .limit(limit)
    )
    return [dict(row) for row in conn.execute(query).mappings()][::-1], count


def columns(points: list[Point], name: str, buckets: int, *, max_gap: float = 1.5) -> list[float | None]:
    """One value per bucket for charting: the buckets' averages, a run of empty buckets between two values
    filled in (linearly) when it is no longer than ``max_gap`` times the usual spacing of the values (buckets
    narrower than the collection interval leave most of them empty); a longer run stays empty: at least one
    collection is missing there (an outage, a stopped collector)."""
    values: list[float | None] = [None] * buckets
    for point in points:
        values[point.index] = point.values[name]
    return bridge(values, max_gap)


def bridge(values: list[float | None], max_gap: float = 1.5) -> list[float | None]:
    """``values`` with each run of Nones between two values filled in linearly when the run is at most
    ``max_gap`` times the usual spacing of the values."""
    values = list(values)
    present = [(i, v) for i, v in enumerate(values) if v is not None]
    if len(present) < 3:
        return values
    spacings = sorted(b[0] - a[0] for a, b in itertools.pairwise(present))
    usual = spacings[len(spacings) // 2]
    for (i, a), (j, b) in itertools.pairwise(present):
        if 1 < j - i <= max_gap * usual:
            for k in range(i + 1, j):
                values[k] = a + (b - a) * (k - i) / (j - i)
    return values
