"""``tenant_children``: the last known state of each tenant's child, written by the instance running it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import Connection

from supervisor.child_handle import ChildHandle
from supervisor.storage.system_schema import tenant_children


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
        "updated_at": now,
    }


def record_children(conn: Connection, instance_id: str, handles: Iterable[ChildHandle], now: dt.datetime) -> None:
    for handle in handles:
        values = child_row(handle, instance_id, now)
        table = tenant_children
        updated = conn.execute(table.update().where(table.c.tenant_id == handle.tenant.id).values(**values)).rowcount
        if not updated:
            conn.execute(table.insert().values(tenant_id=handle.tenant.id, **values))
