"""This supervisor's row in ``supervisor_instances``: registration, heartbeat, live peers, stop."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import socket
from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from supervisor.storage.system_schema import supervisor_instances

RUNNING = "running"
STOPPED = "stopped"


@dataclass(frozen=True)
class InstanceIdentity:
    id: str
    host: str
    pid: int

    @classmethod
    def create(cls) -> InstanceIdentity:
        host = socket.gethostname()
        pid = os.getpid()
        return cls(id=f"{host[:40]}-{pid}-{secrets.token_hex(4)}", host=host, pid=pid)


def heartbeat(conn: Connection, me: InstanceIdentity, started_at: dt.datetime, now: dt.datetime) -> None:
    """Refresh this instance's heartbeat; (re)insert the row if it is missing (first poll, restored DB)."""
    updated = conn.execute(
        supervisor_instances.update()
        .where(supervisor_instances.c.id == me.id)
        .values(heartbeat_at=now, status=RUNNING, stopped_at=None)
    ).rowcount
    if not updated:
        conn.execute(
            supervisor_instances.insert().values(
                id=me.id, host=me.host, pid=me.pid, started_at=started_at, heartbeat_at=now, status=RUNNING
            )
        )


def count_live(conn: Connection, now: dt.datetime, window_seconds: float) -> int:
    """Instances running with a heartbeat within ``window_seconds`` (this one included)."""
    since = now - dt.timedelta(seconds=window_seconds)
    query = (
        select(func.count())
        .select_from(supervisor_instances)
        .where(supervisor_instances.c.status == RUNNING, supervisor_instances.c.heartbeat_at >= since)
    )
    return int(conn.execute(query).scalar() or 0)


def mark_stopped(conn: Connection, me: InstanceIdentity, now: dt.datetime) -> None:
    conn.execute(
        supervisor_instances.update()
        .where(supervisor_instances.c.id == me.id)
        .values(status=STOPPED, stopped_at=now, heartbeat_at=now)
    )
