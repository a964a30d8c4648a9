"""Deletes snapshots (and their wait rows) older than ``retention_days``, a small batch per transaction."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine, delete, select

from supervisor.clock import utcnow
from supervisor.storage.tenant_schema import metric_snapshots, wait_stats

BATCH_SIZE = 500


def purge_batch(engine: Engine, retention_days: int, now: dt.datetime | None = None) -> int:
    """Delete at most BATCH_SIZE expired snapshots; returns how many. 0 days keeps everything."""
    if retention_days <= 0:
        return 0
    cutoff = (now or utcnow()) - dt.timedelta(days=retention_days)
    with engine.begin() as conn:
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
