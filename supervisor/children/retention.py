"""Deletes snapshots (and their wait rows) older than ``retention_days``, a small batch per transaction.

The age is counted back from the newest snapshot stored up to now, not from the wall clock alone (as
Prometheus counts its retention from its newest data): a host clock stepped a year ahead stores nothing (every
sample is then more than a day off the collector's clock) and would otherwise purge the whole history at the
next hourly run. A snapshot dated after now (another program's row, a clock since stepped back) moves nothing.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, Engine, delete, func, select, type_coerce
from sqlalchemy.types import NullType

from supervisor.clock import stored_utc, utcnow
from supervisor.storage.tenant_schema import metric_snapshots, wait_stats

BATCH_SIZE = 500


def purge_batch(engine: Engine, retention_days: int, now: dt.datetime | None = None) -> int:
    """Delete at most BATCH_SIZE expired snapshots; returns how many. 0 days keeps everything."""
    if retention_days <= 0:
        return 0
    now = now or utcnow()
    with engine.begin() as conn:
        newest = _newest_up_to(conn, now)
        if newest is None:
            return 0
        cutoff = newest - dt.timedelta(days=retention_days)
        ids = list(
            conn.execute(
                select(metric_snapshots.c.id).where(metric_snapshots.c.collected_at < cutoff).limit(BATCH_SIZE)
            ).scalars()
        )
        if not ids:
            return 0
        conn.execute(delete(wait_stats).where(wait_stats.c.snapshot_id.in_(ids)))
        conn.execute(delete(metric_snapshots).where(metric_snapshots.c.id.in_(ids)))
    return len(ids)


def _newest_up_to(conn: Connection, now: dt.datetime) -> dt.datetime | None:
    collected_at = metric_snapshots.c.collected_at
    newest = conn.execute(select(type_coerce(func.max(collected_at), NullType())).where(collected_at <= now))
    return stored_utc(newest.scalar())
