"""How write items become rows: one call per batch, inside the caller's transaction, idempotent.

Replaying an item already stored changes nothing: a snapshot whose (server_id, collected_at) exists
is skipped, a status update older than (or as old as) the stored ``last_checked_at`` is ignored
(so its status event is not added twice), and a baseline only ever moves forward.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, and_, insert, or_, select, update

from supervisor.children.records import SnapshotRow, WriteItem
from supervisor.children.status import StatusUpdate
from supervisor.storage.tenant_schema import (
    counter_baselines,
    metric_snapshots,
    server_status_events,
    servers,
    wait_stats,
)


def write_items(conn: Connection, items: Sequence[WriteItem]) -> int:
    """Returns how many snapshots were inserted."""
    inserted = _insert_snapshots(conn, [item.snapshot for item in items if item.snapshot is not None])
    for item in items:
        _apply_status(conn, item.status)
    latest: dict[int, WriteItem] = {}
    for item in items:
        if item.baseline is not None:
            current = latest.get(item.server_id)
            if current is None or current.baseline.sample_time < item.baseline.sample_time:  # type: ignore[union-attr]
                latest[item.server_id] = item
    for item in latest.values():
        _store_baseline(conn, item)
    return inserted


def _insert_snapshots(conn: Connection, snapshots: list[SnapshotRow]) -> int:
    if not snapshots:
        return 0
    existing = _existing_keys(conn, snapshots)
    fresh: dict[tuple[int, object], SnapshotRow] = {}
    for row in snapshots:
        key = (row.server_id, row.collected_at)
        if key not in existing:
            fresh.setdefault(key, row)
    if not fresh:
        return 0
    rows = list(fresh.values())
    statement = insert(metric_snapshots).returning(metric_snapshots.c.id, sort_by_parameter_order=True)
    ids = [row_id for (row_id,) in conn.execute(statement, [row.columns() for row in rows])]
    wait_rows = [
        {
            "snapshot_id": snapshot_id,
            "wait_type": wait_type,
            "waiting_tasks_count": counts.waiting_tasks_count,
            "wait_time_ms": counts.wait_time_ms,
            "signal_wait_time_ms": counts.signal_wait_time_ms,
        }
        for snapshot_id, row in zip(ids, rows, strict=True)
        for wait_type, counts in row.waits.items()
    ]
    if wait_rows:
        conn.execute(insert(wait_stats), wait_rows)
    return len(rows)


def _existing_keys(conn: Connection, snapshots: list[SnapshotRow]) -> set[tuple[int, object]]:
    server_ids = sorted({row.server_id for row in snapshots})
    oldest = min(row.collected_at for row in snapshots)
    query = select(metric_snapshots.c.server_id, metric_snapshots.c.collected_at).where(
        metric_snapshots.c.server_id.in_(server_ids), metric_snapshots.c.collected_at >= oldest
    )
    return {(server_id, collected_at) for server_id, collected_at in conn.execute(query)}


def _apply_status(conn: Connection, status: StatusUpdate) -> None:
    values: dict[str, object] = {
        "status": status.status,
        "last_checked_at": status.checked_at,
        "consecutive_failures": status.consecutive_failures,
        "last_error": status.error,
        "last_error_class": status.error_class,
    }
    if status.success:
        values["last_success_at"] = status.checked_at
    if status.status_changed:
        values["status_changed_at"] = status.checked_at
    result = conn.execute(
        update(servers)
        .where(
            servers.c.id == status.server_id,
            or_(servers.c.last_checked_at.is_(None), servers.c.last_checked_at < status.checked_at),
        )
        .values(**values)
    )
    if result.rowcount and status.status_changed:
        conn.execute(
            insert(server_status_events).values(
                server_id=status.server_id, at=status.checked_at, status=status.status, error=status.error
            )
        )


def _store_baseline(conn: Connection, item: WriteItem) -> None:
    baseline = item.baseline
    assert baseline is not None
    values = {
        "sqlserver_start_time": baseline.sqlserver_start_time,
        "sample_time": baseline.sample_time,
        "batch_requests_total": baseline.batch_requests_total,
        "waits_json": baseline.waits_json(),
    }
    result = conn.execute(
        update(counter_baselines)
        .where(
            and_(
                counter_baselines.c.server_id == item.server_id,
                counter_baselines.c.sample_time < baseline.sample_time,
            )
        )
        .values(**values)
    )
    if result.rowcount:
        return
    exists = conn.execute(
        select(counter_baselines.c.server_id).where(counter_baselines.c.server_id == item.server_id)
    ).first()
    if exists is None:
        conn.execute(insert(counter_baselines).values(server_id=item.server_id, **values))
