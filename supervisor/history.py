"""A server's stored history, read for ``server show``: from the tenant DB only, never a new collection.

Every query is bounded by the snapshot index ``ix_metric_snapshots_server_time`` (server, time range), and the
series are downsampled in SQL: the database groups the rows into equal time buckets, so a month of 30-s
snapshots comes back as a few hundred rows. Waits are reached through the same index range (``wait_stats`` by
its primary key, snapshot first; ``history_waits``).

Stored values are input: the product's web app writes these tables too, and SQLite stores any value in any
column. A metric that is not a finite number of plausible size (``numeric``) counts as missing, a snapshot or
status event whose time is not a time is left out, and other values are shown as they are, never a crash.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    Label,
    Select,
    Subquery,
    and_,
    case,
    cast,
    extract,
    func,
    literal,
    literal_column,
    select,
    type_coerce,
)
from sqlalchemy.types import NullType

from supervisor.clock import stored_utc
from supervisor.storage.raw import raw
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
#: A stored metric or wait counter beyond this magnitude is no measurement (and SQLite's integer SUM would
#: overflow on a few of them): it counts as missing.
PLAUSIBLE_MAX = 1e15
_BOUND: ColumnElement[float] = literal_column(repr(PLAUSIBLE_MAX))
#: How many of the newest snapshots ``latest`` looks through for one whose time is a time.
LATEST_CANDIDATES = 100


def numeric(column: ColumnElement[Any]) -> ColumnElement[Any]:
    """The column where it holds a number within ±PLAUSIBLE_MAX, else NULL, for the database to aggregate: in
    SQLite text and blobs compare greater than any number, and in PostgreSQL NaN greater than any number."""
    return case((column.between(-_BOUND, _BOUND), column), else_=None)


def finite(value: object) -> float | None:
    """A value read back (PostgreSQL sums integers as Decimal) as a float; None where it is not a finite number
    of plausible size (text, a blob)."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    number = float(value)
    return number if math.isfinite(number) and abs(number) <= PLAUSIBLE_MAX else None


def shown(value: object) -> str | None:
    """A stored text value for display; another type (a blob, a number in SQLite) as its repr."""
    return value if value is None or isinstance(value, str) else repr(value)


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


def bucket_index(window: Window, bucket: Any) -> int:
    return min(window.buckets - 1, max(0, int(bucket)))


def series(conn: Connection, server_id: int, window: Window) -> tuple[list[Point], dict[str, Any]]:
    """The non-empty buckets of the window in time order, and the window's summary: its snapshot count and, per
    metric, min / avg / max over the raw snapshots (from the buckets' counts, sums, minima and maxima: one scan)."""
    rows = _window_values(conn, server_id, window)
    aggregates: list[Any] = [func.count(), func.sum(rows.c.interval_seconds)]
    for name in METRICS:
        column = rows.c[name]
        aggregates += [func.count(column), func.sum(column), func.min(column), func.max(column)]
    query = select(rows.c.bucket, *aggregates).group_by(rows.c.bucket).order_by(rows.c.bucket)
    points: list[Point] = []
    totals = {name: _Total() for name in METRICS}
    snapshots = 0
    for row in conn.execute(query):
        if row[0] is None:  # SQLite: a collected_at in the window's range of text that is no time
            continue
        index, samples, covered = bucket_index(window, row[0]), int(row[1]), finite(row[2]) or 0.0
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


def _window_values(conn: Connection, server_id: int, window: Window) -> Subquery:
    """The window's snapshots: bucket, ``interval_seconds`` and the metrics, each a number or NULL."""
    columns = [numeric(getattr(_snap, name)).label(name) for name in ("interval_seconds", *METRICS)]
    query = select(bucket_of(conn, window), *columns).where(in_window(server_id, window))
    return once_per_row(conn, query).subquery()


def once_per_row(conn: Connection, query: Select[Any]) -> Select[Any]:
    """``query`` made a subquery the database computes row by row before aggregating: SQLite would otherwise
    merge it into the outer query and run each ``numeric`` once per aggregate using it (four per metric: about
    half the time of the whole query). LIMIT -1 is no limit, and SQLite does not merge a limited subquery."""
    return query.limit(-1) if conn.dialect.name == "sqlite" else query


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
    """The newest snapshot of the server whose time is a time, whatever its age; a metric that is not a number
    is None."""
    query = (
        select(raw(_snap.collected_at), *(raw(getattr(_snap, name)) for name in METRICS))
        .where(_snap.server_id == server_id, *_text_time_range(conn, _snap.collected_at))
        .order_by(_snap.collected_at.desc())
        .limit(LATEST_CANDIDATES)
    )
    for row in conn.execute(query).mappings():
        if (collected_at := stored_utc(row["collected_at"])) is not None:
            return {"collected_at": collected_at, **{name: finite(row[name]) for name in METRICS}}
    return None


def _text_time_range(conn: Connection, column: ColumnElement[Any]) -> list[ColumnElement[bool]]:
    """SQLite: only text that starts with a digit, as a stored time does (its numbers sort before any text, its
    other text and blobs after), so the newest rows read are times; other databases store only times."""
    if conn.dialect.name != "sqlite":
        return []
    return [type_coerce(column, NullType()).between(literal("0"), literal(":"))]


def status_events(conn: Connection, server_id: int, window: Window, limit: int = 20) -> tuple[list[dict], int]:
    """The newest ``limit`` status changes in the window (oldest first), and how many the window holds."""
    where = and_(
        server_status_events.c.server_id == server_id,
        server_status_events.c.at >= window.start,
        server_status_events.c.at <= window.end,
    )
    count = int(conn.execute(select(func.count()).select_from(server_status_events).where(where)).scalar() or 0)
    events = server_status_events.c
    query = (
        select(raw(events.at), raw(events.status), raw(events.error))
        .where(where)
        .order_by(events.at.desc(), events.id.desc())
        .limit(limit)
    )
    rows = conn.execute(query).mappings().all()
    kept = [
        {"at": at, "status": shown(row["status"]), "error": shown(row["error"])}
        for row in rows
        if (at := stored_utc(row["at"])) is not None
    ]
    if len(rows) < limit:  # every event of the window was read: count only those shown
        count = len(kept)
    return kept[::-1], count


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
