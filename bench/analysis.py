"""Reading what a run stored (SQLite or PostgreSQL tenant DBs) and turning it into figures.

Lateness: the collector does not store scheduled-vs-actual start times, so it is derived from the
stored ``collected_at`` values (the server-side sample time, taken right after login/query start).
The scheduler keeps each server on a fixed grid (``next_due += interval``), so for one server the
residues ``(t_k - t_0) mod interval`` are the per-collection delays plus a constant phase; the phase
is estimated as the smallest residue (the most punctual collection), and a collection is late when
its residue exceeds that by more than 1 s. A grid slot with no snapshot between the server's first
and last snapshot counts as missed (also reported as late: a skipped slot is never run late).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from bench.common import percentile


@dataclass
class Snap:
    collected_at: dt.datetime
    duration_ms: int | None
    batch_rate: float | None
    interval_seconds: float | None
    cpu_percent: int | None
    memory_percent: float | None


@dataclass
class ServerRow:
    id: int
    name: str
    status: str
    last_error_class: str | None
    last_error: str | None
    last_success_at: dt.datetime | None


@dataclass
class TenantData:
    slug: str
    url: str
    servers: dict[int, ServerRow] = field(default_factory=dict)
    snapshots: dict[int, list[Snap]] = field(default_factory=dict)
    wait_rows: int = 0
    wait_negative: int = 0
    status_events: int = 0
    table_bytes: dict[str, int] = field(default_factory=dict)


def load_tenant(slug: str, url: str, *, with_bytes: bool = False) -> TenantData:
    from supervisor.storage.tenant_schema import metric_snapshots, server_status_events, servers, wait_stats

    data = TenantData(slug, url)
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            for row in conn.execute(select(servers)).mappings():
                data.servers[row["id"]] = ServerRow(row["id"], row["name"], row["status"], row["last_error_class"],
                                                    row["last_error"], row["last_success_at"])
            query = select(
                metric_snapshots.c.server_id, metric_snapshots.c.collected_at, metric_snapshots.c.duration_ms,
                metric_snapshots.c.batch_requests_per_sec, metric_snapshots.c.interval_seconds,
                metric_snapshots.c.cpu_percent, metric_snapshots.c.memory_percent,
            ).order_by(metric_snapshots.c.server_id, metric_snapshots.c.collected_at)
            for row in conn.execute(query):
                data.snapshots.setdefault(row[0], []).append(Snap(*row[1:]))
            data.wait_rows = conn.execute(select(func.count()).select_from(wait_stats)).scalar_one()
            data.wait_negative = conn.execute(
                select(func.count()).select_from(wait_stats).where(
                    (wait_stats.c.waiting_tasks_count < 0) | (wait_stats.c.wait_time_ms < 0)
                    | (wait_stats.c.signal_wait_time_ms < 0)
                )
            ).scalar_one()
            data.status_events = conn.execute(select(func.count()).select_from(server_status_events)).scalar_one()
            if with_bytes:
                data.table_bytes = table_bytes(conn, url)
    finally:
        engine.dispose()
    return data


STORED_TABLES = ("metric_snapshots", "wait_stats")


def table_bytes(conn, url: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Bytes of the growing tables with their indexes."""
    backend = make_url(url).get_backend_name()
    sizes: dict[str, int] = {}
    if backend == "sqlite":
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        rows = conn.execute(text(
            "SELECT m.tbl_name, sum(s.pgsize) FROM dbstat AS s JOIN sqlite_master AS m ON m.name = s.name "
            "GROUP BY m.tbl_name"
        ))
        for name, size in rows:
            if name in STORED_TABLES:
                sizes[name] = int(size)
    elif backend == "postgresql":
        for name in STORED_TABLES:
            sizes[name] = int(conn.execute(text(f"SELECT pg_total_relation_size('{name}')")).scalar_one())
    return sizes


# --- figures -------------------------------------------------------------------------------------------
@dataclass
class Punctuality:
    collections: int = 0
    late: int = 0
    missed: int = 0
    slots: int = 0

    def add(self, other: Punctuality) -> None:
        self.collections += other.collections
        self.late += other.late
        self.missed += other.missed
        self.slots += other.slots

    @property
    def late_share(self) -> float:
        return (self.late + self.missed) / self.slots if self.slots else math.nan


def punctuality(times: list[dt.datetime], interval: float, tolerance: float = 1.0) -> Punctuality:
    if len(times) < 2:
        return Punctuality(len(times), 0, 0, len(times))
    base = times[0]
    offsets = [(t - base).total_seconds() for t in times]
    residues = [off - round(off / interval) * interval for off in offsets]
    phase = min(residues)
    late = sum(1 for r in residues if r - phase > tolerance)
    slots = round((offsets[-1] - offsets[0]) / interval) + 1
    distinct_slots = len({round(off / interval) for off in offsets})
    return Punctuality(len(times), late, max(0, slots - distinct_slots), slots)


def in_window(snaps: Iterable[Snap], start: dt.datetime | None, end: dt.datetime | None) -> list[Snap]:
    return [s for s in snaps if (start is None or s.collected_at >= start) and (end is None or s.collected_at < end)]


def duration_percentiles(tenants: Iterable[TenantData], start: dt.datetime | None = None,
                         end: dt.datetime | None = None) -> dict[str, float]:
    durations = [
        float(s.duration_ms)
        for t in tenants
        for snaps in t.snapshots.values()
        for s in in_window(snaps, start, end)
        if s.duration_ms is not None
    ]
    return {f"p{p}": percentile(durations, p) for p in (50, 95, 99)}


def utc_now_naive() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)
