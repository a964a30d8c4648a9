"""This supervisor's row in ``supervisor_instances``: registration, heartbeat, live peers, stop; peers of
this host whose process is gone (taken over at once), old rows pruned."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import socket
from dataclasses import dataclass

import psutil
from sqlalchemy import Connection, or_, select

from supervisor import process_identity
from supervisor.storage.system_schema import supervisor_instances, tenant_children, tenant_leases

RUNNING = "running"
STOPPED = "stopped"
#: An instance of this host whose process died without stopping (SIGKILL, OOM, power).
GONE = "gone"
#: A process started this long after an instance's recorded start is not that instance (a reused PID).
PROCESS_START_SLACK = 1.0
#: Rows of instances that stopped longer ago than this are deleted.
KEEP_STOPPED = dt.timedelta(hours=1)


@dataclass(frozen=True)
class InstanceIdentity:
    id: str
    host: str
    pid: int
    process_key: str | None = None  # process_identity.key of this process

    @classmethod
    def create(cls) -> InstanceIdentity:
        host = socket.gethostname()
        pid = os.getpid()
        return cls(f"{host[:40]}-{pid}-{secrets.token_hex(4)}", host, pid, process_identity.key(pid))


def heartbeat(conn: Connection, me: InstanceIdentity, started_at: dt.datetime, now: dt.datetime) -> None:
    """Refresh this instance's heartbeat; (re)insert the row if it is missing (first poll, restored DB)."""
    updated = conn.execute(
        supervisor_instances.update()
        .where(supervisor_instances.c.id == me.id)
        .values(heartbeat_at=now, status=RUNNING, stopped_at=None, process_key=me.process_key)
    ).rowcount
    if not updated:
        conn.execute(
            supervisor_instances.insert().values(
                id=me.id, host=me.host, pid=me.pid, started_at=started_at, heartbeat_at=now, status=RUNNING,
                process_key=me.process_key,
            )
        )


def live_ids(conn: Connection, now: dt.datetime, window_seconds: float) -> frozenset[str]:
    """Instances running with a heartbeat within ``window_seconds`` (this one included)."""
    since = now - dt.timedelta(seconds=window_seconds)
    query = select(supervisor_instances.c.id).where(
        supervisor_instances.c.status == RUNNING, supervisor_instances.c.heartbeat_at >= since
    )
    return frozenset(conn.execute(query).scalars())


def mark_stopped(conn: Connection, me: InstanceIdentity, now: dt.datetime) -> None:
    conn.execute(
        supervisor_instances.update()
        .where(supervisor_instances.c.id == me.id)
        .values(status=STOPPED, stopped_at=now, heartbeat_at=now)
    )


def process_alive(host: str, pid: int, started_at: dt.datetime, key: str | None = None) -> bool | None:
    """Whether the process of an instance or child still runs, if this process can tell; None when it cannot (a
    process of another host, boot or PID namespace: its heartbeat must tell). By its ``process_identity`` key when
    stored (a wall-clock step or a host sharing our hostname cannot fool it); rows written before schema 3 by
    host name and start time, where a PID reused by a process started after the instance does not count."""
    if key is not None:
        return process_identity.same_process_runs(key, pid)
    if host != socket.gethostname():
        return None
    try:
        process = psutil.Process(pid)
        created = process.create_time()
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
    except psutil.NoSuchProcess:
        return False
    except (psutil.AccessDenied, OSError):  # cannot tell (out of descriptors, say): not taken for dead
        return True
    return created <= started_at.replace(tzinfo=dt.UTC).timestamp() + PROCESS_START_SLACK


def take_over_dead_peers(conn: Connection, me: InstanceIdentity, now: dt.datetime) -> list[str]:
    """Instances of this host whose process is gone: their tenants are released for the taking now instead of
    when the leases expire, each as soon as its orphaned child has exited too (it gets SIGTERM when its
    parent dies and may still finish a collection: two children of one tenant must never run at once).
    An instance is marked gone, and returned, once none of its children is left."""
    instances = supervisor_instances.c
    rows = conn.execute(
        select(instances.id, instances.host, instances.pid, instances.started_at, instances.process_key).where(
            or_(instances.host == me.host, instances.process_key.is_not(None)),
            instances.status == RUNNING,
            instances.id != me.id,
        )
    ).all()
    dead = [row.id for row in rows if process_alive(row.host, row.pid, row.started_at, row.process_key) is False]
    if not dead:
        return []
    children = conn.execute(
        select(tenant_children.c.tenant_id, tenant_children.c.instance_id, tenant_children.c.pid,
               tenant_children.c.started_at, tenant_children.c.process_key)
        .where(tenant_children.c.instance_id.in_(dead))
    ).all()  # fmt: skip
    orphans = {
        child.tenant_id
        for child in children
        if child.pid is not None
        and child.started_at is not None
        and process_alive(me.host, child.pid, child.started_at, child.process_key)
    }
    released = [child.tenant_id for child in children if child.tenant_id not in orphans]
    conn.execute(
        tenant_leases.update()
        .where(tenant_leases.c.owner.in_(dead), tenant_leases.c.tenant_id.not_in(sorted(orphans)))
        .values(owner=None, acquired_at=None, expires_at=None)
    )
    if released:
        conn.execute(
            tenant_children.update()
            .where(tenant_children.c.tenant_id.in_(released), tenant_children.c.state != "STOPPED")
            .values(state="STOPPED", last_error="its supervisor process is gone", updated_at=now)
        )
    waiting = {child.instance_id for child in children if child.tenant_id in orphans}
    gone = [instance_id for instance_id in dead if instance_id not in waiting]
    if gone:
        conn.execute(
            supervisor_instances.update()
            .where(supervisor_instances.c.id.in_(gone))
            .values(status=GONE, stopped_at=now)
        )
    return gone


def prune(conn: Connection, now: dt.datetime, keep: dt.timedelta = KEEP_STOPPED) -> int:
    """Delete rows of instances stopped (or gone) longer than ``keep`` ago, or silent that long."""
    since = now - keep
    return conn.execute(
        supervisor_instances.delete().where(
            or_(
                (supervisor_instances.c.status != RUNNING) & (supervisor_instances.c.stopped_at < since),
                supervisor_instances.c.heartbeat_at < since,
            )
        )
    ).rowcount
