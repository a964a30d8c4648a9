"""``tenant_children``: the last known state of each tenant's child, written by the instance running it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import Connection, bindparam, insert, select

from supervisor.parent.handle import ChildHandle
from supervisor.storage.system_schema import tenant_children, tenants

_COLUMNS = tuple(column.name for column in tenant_children.c if column.name != "tenant_id")


def child_row(handle: ChildHandle, instance_id: str, now: dt.datetime) -> dict[str, object]:
    beat = handle.last_heartbeat
    return {
        "instance_id": instance_id,
        "pid": handle.pid,
        "state": handle.state.value,
        "restarts": handle.restarts,
        "started_at": handle.started_wall,
        "heartbeat_at": dt.datetime.fromtimestamp(beat.sent_at, dt.UTC).replace(tzinfo=None) if beat else None,
        "last_exit_code": handle.last_exit_code,
        "last_exit_at": handle.last_exit_wall,
        "last_error": handle.last_error,
        "rss_mb": handle.rss_mb,
        "process_key": handle.process_key,
        "updated_at": now,
    }


_UPDATE_ROW = (
    tenant_children.update()
    .where(tenant_children.c.tenant_id == bindparam("tid"))
    .values({name: bindparam(name) for name in _COLUMNS})
)


def record_children(conn: Connection, instance_id: str, handles: Iterable[ChildHandle], now: dt.datetime) -> None:
    """Every child's row in one update and one insert (for children not in the table yet)."""
    rows = {handle.tenant.id: child_row(handle, instance_id, now) for handle in handles}
    if not rows:
        return
    present = set(
        conn.execute(select(tenant_children.c.tenant_id).where(tenant_children.c.tenant_id.in_(rows))).scalars()
    )
    if present:
        conn.execute(_UPDATE_ROW, [{"tid": tenant_id, **rows[tenant_id]} for tenant_id in sorted(present)])
    # A tenant whose row was deleted (by the web app, say) has no children row either (ON DELETE CASCADE), and
    # gets none: its child runs on until it is stopped (it is no longer active), and the poll must not fail.
    missing = sorted(set(rows) - present)
    if missing:
        missing = sorted(conn.execute(select(tenants.c.id).where(tenants.c.id.in_(missing))).scalars())
    if missing:
        conn.execute(insert(tenant_children), [{"tenant_id": tenant_id, **rows[tenant_id]} for tenant_id in missing])
