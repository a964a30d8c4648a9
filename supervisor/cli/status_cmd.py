"""``status [--json]``: supervisor instances, each tenant's child and lease, server counts per tenant
(online + offline + unknown + disabled = servers; a suspended tenant's statuses are not counted: stale).

Reads only: the system DB's tables, then each tenant DB's ``servers`` and ``metric_snapshots``
(an unreachable tenant DB is reported with a note, never fails the command). A child's recorded state is checked
as an instance's is: on this host by its process, else by whether its supervisor is alive (``GONE`` if not).
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from sqlalchemy import Connection, Engine, RowMapping, func, select, type_coerce
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.types import NullType

from supervisor import databases
from supervisor.cli.context import CliContext
from supervisor.cli.output import age, print_json, print_table
from supervisor.clock import stored_utc, utcnow
from supervisor.config import Settings
from supervisor.errors import CollectorError
from supervisor.lease_term import shared_term
from supervisor.parent.instances import RUNNING, process_alive
from supervisor.storage.db_clock import db_utcnow
from supervisor.storage.engine import describe_db_error
from supervisor.storage.raw import raw
from supervisor.storage.system_schema import supervisor_instances, tenant_children, tenant_leases, tenants
from supervisor.storage.tenant_schema import collection_configs, metric_snapshots, servers
from supervisor.tenants import ACTIVE, Tenant, tenant_from_row, tenant_query

TENANT_COLUMNS = (
    "tenant", "status", "child", "pid", "restarts", "owner", "online", "offline", "unknown", "disabled", "servers",
    "newest", "note",
)  # fmt: skip
#: The state shown for a child whose row says it runs (or will be restarted) when it does not: its process is gone,
#: or its supervisor is not running (the row is as that supervisor left it). The row's state is ``recorded_state``.
CHILD_GONE = "GONE"
#: A child that exited because its tenant DB needs a newer collector: its supervisor gave the tenant up (the row's
#: ``last_error`` says why) until another instance runs it.
CHILD_NEWER_SCHEMA = "NEWER_SCHEMA"


def status(args: argparse.Namespace, ctx: CliContext) -> int:
    now = utcnow()
    report = collect_status(ctx, now)
    if args.json:
        print_json(report)
    else:
        _print_report(report, now)
    return 0


def collect_status(ctx: CliContext, now: dt.datetime) -> dict[str, list[dict[str, Any]]]:
    settings = ctx.settings
    engine = ctx.system_engine
    instances = _instances(engine, settings, now)
    return {"instances": instances, "tenants": _tenants(ctx, engine, instances, now)}


def _seconds(moment: dt.datetime | None, now: dt.datetime) -> float | None:
    return None if moment is None else round(max(0.0, (now - moment).total_seconds()), 1)


def _instances(engine: Engine, settings: Settings, now: dt.datetime) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(supervisor_instances).order_by(supervisor_instances.c.started_at)).mappings().all()
        db_now = db_utcnow(conn)  # the clock the instances' heartbeats are written by
    result = []
    for row in rows:
        heartbeat_age = _seconds(row["heartbeat_at"], db_now)
        # On this host the process itself tells; an instance elsewhere is alive while its heartbeat is recent
        # (as recent as its peers require).
        running = row["status"] == RUNNING
        local = process_alive(row["host"], row["pid"], row["started_at"], row["process_key"]) if running else None
        recent = heartbeat_age is not None and heartbeat_age <= shared_term(settings.lease_duration)
        alive = local if local is not None else row["status"] == RUNNING and recent
        result.append(
            {
                "id": row["id"],
                "host": row["host"],
                "pid": row["pid"],
                "status": row["status"],
                "started_at": row["started_at"],
                "heartbeat_age_s": heartbeat_age,
                "alive": alive,
                "stopped_at": row["stopped_at"],
            }
        )
    return result


def _tenants(
    ctx: CliContext, engine: Engine, instances: list[dict[str, Any]], now: dt.datetime
) -> list[dict[str, Any]]:
    query = (
        tenant_query()
        .add_columns(
            tenant_leases.c.owner,
            tenant_leases.c.expires_at,
            tenant_children.c.pid.label("child_pid"),
            tenant_children.c.state,
            tenant_children.c.restarts,
            tenant_children.c.last_exit_code,
            tenant_children.c.last_error,
            tenant_children.c.heartbeat_at,
            tenant_children.c.instance_id,
            tenant_children.c.started_at.label("child_started_at"),
            tenant_children.c.process_key.label("child_process_key"),
        )
        .outerjoin(tenant_leases, tenant_leases.c.tenant_id == tenants.c.id)
        .outerjoin(tenant_children, tenant_children.c.tenant_id == tenants.c.id)
        .order_by(tenants.c.id)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
        db_now = db_utcnow(conn)  # the clock lease expiries are written by
    leased = {row["id"] for row in rows if _leased(row, db_now)}
    checked = databases.checked_tenants(ctx.settings, [tenant_from_row(row) for row in rows], leased)
    instances_by_id = {instance["id"]: instance for instance in instances}
    result = []
    for tenant, row in sorted(zip(checked, rows, strict=True), key=lambda pair: (pair[0].slug, pair[0].id)):
        state, child_alive, child_note = _judge_child(row, instances_by_id.get(row["instance_id"]))
        entry: dict[str, Any] = {
            "slug": tenant.slug,
            "status": tenant.status,
            "owner": row["owner"] if tenant.id in leased else None,
            "state": state,
            "recorded_state": row["state"],
            "child_alive": child_alive,
            "pid": row["child_pid"],
            "restarts": row["restarts"],
            "last_exit_code": row["last_exit_code"],
            "last_error": row["last_error"],
            "child_heartbeat_age_s": _seconds(row["heartbeat_at"], now),
        }
        entry.update(_server_summary(ctx, tenant, now))
        entry["note"] = "; ".join(note for note in (child_note, entry["note"]) if note) or None
        result.append(entry)
    return result


def _judge_child(row: RowMapping, instance: dict[str, Any] | None) -> tuple[str | None, bool | None, str | None]:
    """(state to show, whether its process runs if known, note) of a tenant's child row. A row not STOPPED is the
    last word of the supervisor named by ``instance_id``: on this host its process tells whether the child runs
    (an orphan may still finish a collection); else it stands while that supervisor is alive."""
    recorded = row["state"]
    if recorded is None or recorded == "STOPPED":
        return recorded, None, None
    if recorded == CHILD_NEWER_SCHEMA:  # no process to look for: the row stands until another instance runs it
        return recorded, False, row["last_error"]
    supervisor_alive = instance is not None and instance["alive"] is True
    child_alive = None
    if row["child_pid"] is not None and (row["child_process_key"] is not None or row["child_started_at"] is not None):
        host = instance["host"] if instance is not None else ""
        child_alive = process_alive(host, row["child_pid"], row["child_started_at"], row["child_process_key"])
    if child_alive is True:
        return recorded, True, None if supervisor_alive else "its supervisor is not running: the child is exiting"
    if not supervisor_alive:
        return CHILD_GONE, child_alive, f"its supervisor is not running (recorded {recorded})"
    if child_alive is False:
        return CHILD_GONE, False, f"its process is gone (recorded {recorded})"
    return recorded, None, None


def _leased(row: RowMapping, now: dt.datetime) -> bool:
    return row["owner"] is not None and row["expires_at"] is not None and row["expires_at"] >= now


def _server_summary(ctx: CliContext, tenant: Tenant, now: dt.datetime) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "servers_online": None,
        "servers_offline": None,
        "servers_unknown": None,
        "servers_disabled": None,
        "servers_total": None,
        "newest_snapshot_age_s": None,
        "note": None,
    }
    if tenant.problem is not None:
        summary["note"] = f"cannot be run: {tenant.problem}"
        return summary
    try:
        if databases.missing_sqlite_file(ctx.settings, tenant) is not None:
            summary["note"] = "tenant DB file does not exist"
            return summary
        engine = ctx.tenant_engine(tenant)
        with engine.connect() as conn:
            counts = _server_counts(conn)
            newest = _newest_snapshot(conn, now)
        engine.dispose()
    except (SQLAlchemyError, CollectorError) as exc:
        summary["note"] = f"tenant DB unreachable: {describe_db_error(exc)}"
        return summary
    summary["servers_disabled"] = counts["disabled"]
    summary["servers_total"] = sum(counts.values())
    summary["newest_snapshot_age_s"] = _seconds(newest, now)
    if tenant.status == ACTIVE:
        for status in ("online", "offline", "unknown"):
            summary[f"servers_{status}"] = counts[status]
    else:  # nobody collects: the stored statuses are stale, so they are not counted
        summary["note"] = "suspended: not collected"
    return summary


def _newest_snapshot(conn: Connection, now: dt.datetime) -> dt.datetime | None:
    """The newest ``collected_at`` that is a time, read raw: SQLite keeps whatever another program wrote. Text that
    is not a time (``'bogus'``) sorts after every time there, so only values up to a day ahead are looked at."""
    collected_at = metric_snapshots.c.collected_at
    bound = now + dt.timedelta(days=1)
    newest = conn.execute(select(func.max(type_coerce(collected_at, NullType()))).where(collected_at <= bound)).scalar()
    return stored_utc(newest)


def _server_counts(conn: Connection) -> dict[str, int]:
    """Servers not removed: disabled ones apart, the others by status (a value the collector would not have
    written counts as unknown), so online + offline + unknown + disabled = servers."""
    query = (
        select(raw(servers.c.status), raw(collection_configs.c.enabled))
        .outerjoin(collection_configs, collection_configs.c.server_id == servers.c.id)
        .where(servers.c.removed_at.is_(None))
    )
    counts = {"online": 0, "offline": 0, "unknown": 0, "disabled": 0}
    for status, enabled in conn.execute(query):
        if enabled is False or (isinstance(enabled, int) and enabled == 0):
            counts["disabled"] += 1  # a child leaves it out (README: enabled false skips the other checks)
        else:
            key = status if isinstance(status, str) and status in ("online", "offline") else "unknown"
            counts[key] += 1
    return counts


def _print_report(report: dict[str, list[dict[str, Any]]], now: dt.datetime) -> None:
    print_table(
        ["instance", "host", "pid", "status", "heartbeat", "alive"],
        [
            [i["id"], i["host"], i["pid"], i["status"], _age_text(i["heartbeat_age_s"]), i["alive"]]
            for i in report["instances"]
        ],
    )
    print()
    print_table(
        [*TENANT_COLUMNS],
        [
            [
                t["slug"],
                t["status"],
                t["state"],
                t["pid"],
                t["restarts"],
                t["owner"],
                t["servers_online"],
                t["servers_offline"],
                t["servers_unknown"],
                t["servers_disabled"],
                t["servers_total"],
                _age_text(t["newest_snapshot_age_s"]),
                t["note"],
            ]
            for t in report["tenants"]
        ],
    )


def _age_text(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    now = utcnow()
    return age(now - dt.timedelta(seconds=seconds), now)
