"""How write items become rows: a few statements per batch, inside the caller's transaction, idempotent.

Replaying an item already stored changes nothing: a snapshot whose (server_id, collected_at) exists
is skipped, a status update older than (or as old as) the stored ``last_checked_at`` is ignored
(so its status event is not added twice), and a baseline only ever moves forward.

Stored rows are input (the product's web app writes these tables too; SQLite stores any value in any column):
a stored time that is no time never blocks a write. A snapshot whose ``collected_at`` does not parse is no
duplicate of anything, and a ``last_checked_at`` or baseline ``sample_time`` no check of ours can have (text,
or a day ahead) is overwritten.

Statements are built once and run with executemany: building and caching a statement per item cost
more CPU than SQLite's own work (``bench/collection_cost.py`` prints the storage cost per batch size).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, insert, literal, or_, select, update

from supervisor.children.records import SnapshotRow, WriteItem, row_identity
from supervisor.children.status import StatusUpdate
from supervisor.clock import stored_utc, utcnow
from supervisor.storage.raw import raw
from supervisor.storage.tenant_schema import (
    counter_baselines,
    metric_snapshots,
    server_status_events,
    servers,
    wait_stats,
)
from supervisor.storage.upsert import conflict_insert

_INSERT_SNAPSHOTS = insert(metric_snapshots).returning(metric_snapshots.c.id, sort_by_parameter_order=True)
_INSERT_WAITS = insert(wait_stats)
_INSERT_STATUS_EVENT = insert(server_status_events)

_UPDATE_STATUS = (
    update(servers)
    .where(
        servers.c.id == bindparam("sid"),
        or_(
            servers.c.last_checked_at.is_(None),
            servers.c.last_checked_at < bindparam("checked_at"),
            # a time no check by this clock can have (a clock ahead, another program's, text in SQLite) blocks nothing
            servers.c.last_checked_at > bindparam("implausible_after", type_=servers.c.last_checked_at.type),
        ),
    )
    .values(
        status=bindparam("status"),
        last_checked_at=bindparam("checked_at"),
        consecutive_failures=bindparam("consecutive_failures"),
        last_error=bindparam("error"),
        last_error_class=bindparam("error_class"),
        last_success_at=func.coalesce(bindparam("success_at", type_=servers.c.last_success_at.type),
                                      servers.c.last_success_at),
        status_changed_at=func.coalesce(bindparam("changed_at", type_=servers.c.status_changed_at.type),
                                        servers.c.status_changed_at),
    )
)

#: A stored sample time further ahead of now than this was not written by a check: it is overwritten.
IMPLAUSIBLE_AHEAD = dt.timedelta(days=1)
#: A stored ``last_checked_at`` (a time of a collector's clock) further ahead of this clock than this was written
#: by a clock ahead of it (another host's, or this one's before a backward step): a check now is newer.
CHECKED_AHEAD = dt.timedelta(seconds=1)

_BASELINE_COLUMNS = ("sqlserver_start_time", "sample_time", "batch_requests_total", "waits_json", "checked_at")
_baseline_upserts: dict[str, Any] = {}
_IMPLAUSIBLE_SAMPLE = bindparam("implausible_after", type_=counter_baselines.c.sample_time.type)
_IMPLAUSIBLE_CHECK = bindparam("implausible_check", type_=counter_baselines.c.checked_at.type)


def _baseline_is_older(stored: Any, new: Any) -> Any:
    """Whether the stored baseline (columns ``stored``) was taken before the new one (``new``): by this host's clock
    where both rows say (``Baseline.newer_than``); a stored time no sample or check of ours can have is replaced."""
    both_checked = and_(stored.checked_at.isnot(None), new.checked_at.isnot(None))
    return or_(
        and_(both_checked, stored.checked_at < new.checked_at),
        and_(~both_checked, stored.sample_time < new.sample_time),
        stored.sample_time > _IMPLAUSIBLE_SAMPLE,
        stored.checked_at > _IMPLAUSIBLE_CHECK,
    )


def _baseline_upsert(dialect: str) -> Any:
    """The baseline upsert (moving only forward in time) for this dialect, built on first use; None
    where the dialect has no INSERT .. ON CONFLICT."""
    if dialect not in _baseline_upserts:
        insert_for = conflict_insert(dialect)
        if insert_for is None:
            return None
        statement = insert_for(counter_baselines)
        _baseline_upserts[dialect] = statement.on_conflict_do_update(
            index_elements=[counter_baselines.c.server_id],
            set_={name: statement.excluded[name] for name in _BASELINE_COLUMNS},
            where=_baseline_is_older(counter_baselines.c, statement.excluded),
        )
    return _baseline_upserts[dialect]


def current_items(conn: Connection, items: Sequence[WriteItem]) -> tuple[list[WriteItem], dict[int, tuple[str, int]]]:
    """The items whose server row is still the one they were collected for, and for each server id whose row is
    not: ``deleted`` or ``replaced`` (another server now has the id) and how many of its items are left out. Read in
    the transaction that writes them."""
    ids = sorted({item.server_id for item in items if item.row is not None})
    if not ids:
        return list(items), {}
    stored = dict(conn.execute(select(servers.c.id, raw(servers.c.created_at)).where(servers.c.id.in_(ids))).all())
    kept: list[WriteItem] = []
    gone: dict[int, tuple[str, int]] = {}
    for item in items:
        sid = item.server_id
        if item.row is None or (sid in stored and row_identity(stored[sid]) == item.row):
            kept.append(item)
        else:
            gone[sid] = ("replaced" if sid in stored else "deleted", gone.get(sid, ("", 0))[1] + 1)
    return kept, gone


def write_items(conn: Connection, items: Sequence[WriteItem]) -> int:
    """Returns how many snapshots were inserted."""
    inserted = _insert_snapshots(conn, [item.snapshot for item in items if item.snapshot is not None])
    _apply_statuses(conn, [item.status for item in items])
    latest: dict[int, WriteItem] = {}
    for item in items:
        if item.baseline is not None:
            current = latest.get(item.server_id)
            if current is None or item.baseline.newer_than(current.baseline):  # type: ignore[arg-type]
                latest[item.server_id] = item
    if latest:
        _store_baselines(conn, list(latest.values()))
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
    ids = [row_id for (row_id,) in conn.execute(_INSERT_SNAPSHOTS, [row.columns() for row in rows])]
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
        conn.execute(_INSERT_WAITS, wait_rows)
    return len(rows)


def _existing_keys(conn: Connection, snapshots: list[SnapshotRow]) -> set[tuple[int, object]]:
    """The stored (server_id, collected_at) keys these snapshots may repeat. ``collected_at`` is read raw and
    parsed here: SQLite compares text such as ``'bogus'`` greater than any time, so such a row is in the range,
    and SQLAlchemy's own conversion would raise on it."""
    server_ids = sorted({row.server_id for row in snapshots})
    oldest = min(row.collected_at for row in snapshots)
    collected_at = metric_snapshots.c.collected_at
    query = select(metric_snapshots.c.server_id, raw(collected_at)).where(
        metric_snapshots.c.server_id.in_(server_ids), collected_at >= oldest
    )
    return {
        (server_id, moment)
        for server_id, stored in conn.execute(query)
        if (moment := stored_utc(stored)) is not None
    }


def _apply_statuses(conn: Connection, updates: list[StatusUpdate]) -> None:
    """In batch order: runs of plain updates at once, each change alone (its event is added only if applied)."""
    plain: list[dict[str, object]] = []
    implausible_after = utcnow() + CHECKED_AHEAD
    for status in updates:
        if not status.status_changed:
            plain.append(_status_params(status, implausible_after))
            continue
        if plain:
            conn.execute(_UPDATE_STATUS, plain)
            plain = []
        if conn.execute(_UPDATE_STATUS, _status_params(status, implausible_after)).rowcount:
            event = {"server_id": status.server_id, "at": status.checked_at, "status": status.status}
            conn.execute(_INSERT_STATUS_EVENT, {**event, "error": status.error})
    if plain:
        conn.execute(_UPDATE_STATUS, plain)


def _status_params(status: StatusUpdate, implausible_after: dt.datetime) -> dict[str, object]:
    return {
        "implausible_after": implausible_after,
        "sid": status.server_id,
        "checked_at": status.checked_at,
        "status": status.status,
        "consecutive_failures": status.consecutive_failures,
        "error": status.error,
        "error_class": status.error_class,
        "success_at": status.checked_at if status.success else None,
        "changed_at": status.checked_at if status.status_changed else None,
    }


def _store_baselines(conn: Connection, items: list[WriteItem]) -> None:
    """One row per server, only ever moved forward in time (a stored time no sample of ours has is replaced)."""
    now = utcnow()
    implausible_after, implausible_check = now + IMPLAUSIBLE_AHEAD, now + CHECKED_AHEAD
    rows = []
    for item in items:
        baseline = item.baseline
        assert baseline is not None
        rows.append({
            "server_id": item.server_id,
            "sqlserver_start_time": baseline.sqlserver_start_time,
            "sample_time": baseline.sample_time,
            "batch_requests_total": baseline.batch_requests_total,
            "waits_json": baseline.waits_json(),
            "checked_at": baseline.checked_at,
            "implausible_after": implausible_after,
            "implausible_check": implausible_check,
        })
    upsert = _baseline_upsert(conn.dialect.name)
    if upsert is not None:
        conn.execute(upsert, rows)
        return
    for row in rows:
        _store_baseline_portably(conn, row)


def _store_baseline_portably(conn: Connection, row: dict[str, Any]) -> None:
    values = {name: row[name] for name in _BASELINE_COLUMNS}
    new = SimpleNamespace(**{name: literal(row[name], counter_baselines.c[name].type) for name in _BASELINE_COLUMNS})
    older = _baseline_is_older(counter_baselines.c, new)
    result = conn.execute(
        update(counter_baselines).where(counter_baselines.c.server_id == row["server_id"], older).values(**values),
        {"implausible_after": row["implausible_after"], "implausible_check": row["implausible_check"]},
    )
    if result.rowcount:
        return
    exists = conn.execute(
        select(counter_baselines.c.server_id).where(counter_baselines.c.server_id == row["server_id"])
    ).first()
    if exists is None:
        conn.execute(insert(counter_baselines).values(server_id=row["server_id"], **values))
