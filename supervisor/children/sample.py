"""A collection's result sets (``supervisor.procedures.resultsets``) parsed into a typed Sample."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from supervisor.children.errors import CollectionFailure
from supervisor.errors import PROTOCOL
from supervisor.procedures.benign_waits import benign_wait_types
from supervisor.procedures.resultsets import CONTRACT_VERSION, COUNTERS, INSTANCE, RESULT_SETS, ResultSet

LINUX = "Linux"
_KB_PER_MB = 1024


@dataclass(frozen=True)
class WaitCounts:
    waiting_tasks_count: int
    wait_time_ms: int
    signal_wait_time_ms: int


@dataclass(frozen=True)
class Sample:
    server_name: str | None
    product_version: str | None
    host_platform: str
    sqlserver_start_time: dt.datetime
    sample_time: dt.datetime  # server UTC, naive
    cpu_percent: int | None
    system_cpu_percent: int | None
    memory_percent: float | None
    sql_memory_mb: int | None
    sql_target_memory_mb: int | None
    connection_count: int | None
    batch_requests_total: int | None
    waits: dict[str, WaitCounts] = field(default_factory=dict)
    engine_edition: int | None = None
    database_name: str | None = None


RawSets = Sequence[tuple[Sequence[str], Sequence[Sequence[Any]]]]


def clamp_percent(value: float | None) -> int | None:
    if value is None:
        return None
    return round(min(100.0, max(0.0, float(value))))


def parse_sample(raw: RawSets) -> Sample:
    """``raw``: (column names, rows) per result set, in contract order. Raises CollectionFailure."""
    if len(raw) != len(RESULT_SETS):
        raise CollectionFailure(PROTOCOL, f"expected {len(RESULT_SETS)} result sets, got {len(raw)}")
    sets = {spec.name: _as_dicts(spec, names, rows) for spec, (names, rows) in zip(RESULT_SETS, raw, strict=True)}
    instance = _exactly_one(INSTANCE, sets["instance"])
    counters = _exactly_one(COUNTERS, sets["counters"])
    if instance["contract_version"] != CONTRACT_VERSION:
        raise CollectionFailure(
            PROTOCOL,
            f"server returns contract version {instance['contract_version']}, expected {CONTRACT_VERSION}: "
            "redeploy with 'collector-supervisor procedures deploy'",
        )
    platform = instance["host_platform"] or "Windows"
    cpu_percent, system_cpu_percent = _cpu(sets["cpu"], platform)
    return Sample(
        server_name=instance["server_name"],
        product_version=instance["product_version"],
        host_platform=platform,
        sqlserver_start_time=_required_time(instance, "sqlserver_start_time"),
        sample_time=_required_time(instance, "sample_time_utc"),
        cpu_percent=cpu_percent,
        system_cpu_percent=system_cpu_percent,
        memory_percent=_memory_percent(counters),
        sql_memory_mb=_mb(counters["total_server_memory_kb"]),
        sql_target_memory_mb=_mb(counters["target_server_memory_kb"]),
        connection_count=counters["user_connections"],
        batch_requests_total=counters["batch_requests_total"],
        waits=_waits(sets["waits"]),
        engine_edition=instance["engine_edition"],
        database_name=instance["database_name"],
    )


def _as_dicts(spec: ResultSet, names: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    lowered = tuple(name.lower() for name in names)
    missing = [name for name in spec.column_names if name not in lowered]
    if missing:
        raise CollectionFailure(PROTOCOL, f"result set {spec.name!r} lacks columns {', '.join(missing)}")
    return [dict(zip(lowered, row, strict=True)) for row in rows]


def _exactly_one(spec: ResultSet, rows: list[dict[str, Any]]) -> dict[str, Any]:
    if len(rows) != 1:
        raise CollectionFailure(PROTOCOL, f"result set {spec.name!r} has {len(rows)} rows, expected 1")
    return rows[0]


def _required_time(row: dict[str, Any], name: str) -> dt.datetime:
    value = row[name]
    if not isinstance(value, dt.datetime):
        raise CollectionFailure(PROTOCOL, f"{name} is {value!r}, expected a datetime")
    return value.replace(tzinfo=None) if value.tzinfo is None else value.astimezone(dt.UTC).replace(tzinfo=None)


def _cpu(rows: list[dict[str, Any]], platform: str) -> tuple[int | None, int | None]:
    """(SQL Server CPU, whole-host CPU) from the newest record. The host figure is the source's own where it
    gives one (Azure SQL Database: the instance hosting the database), else 100 - idle, unknown on Linux (idle is
    always 0 there) and where the source has no idle figure (Managed Instance)."""
    if not rows:
        return None, None
    newest = max(rows, key=_record_order)
    sql = clamp_percent(newest["sql_cpu_percent"])
    host = newest.get("host_cpu_percent")
    if host is not None:
        return sql, clamp_percent(host)
    idle = newest["system_idle_percent"]
    if platform == LINUX or idle is None:
        return sql, None
    system = clamp_percent(100 - idle)
    # SQL + idle can exceed 100 on some NUMA/HT hosts: the host is at least as busy as SQL Server.
    if system is not None and sql is not None:
        system = max(system, sql)
    return sql, system


def _record_order(row: dict[str, Any]) -> tuple[int, dt.datetime]:
    time = row["record_time_utc"] if isinstance(row["record_time_utc"], dt.datetime) else dt.datetime.min
    return (row["record_id"] or 0, time)


def _memory_percent(counters: dict[str, Any]) -> float | None:
    """Host physical memory in use, from the KB figures; where a flavour has none (Azure SQL Database), the
    percentage it gives instead (memory used of the service tier's limit)."""
    total = counters["total_physical_memory_kb"]
    available = counters["available_physical_memory_kb"]
    if total and total > 0 and available is not None:
        used = 100.0 * (total - available) / total
    elif counters.get("memory_used_percent") is not None:
        used = float(counters["memory_used_percent"])
    else:
        return None
    if used != used:  # NaN
        return None
    return round(min(100.0, max(0.0, used)), 2)


def _mb(kilobytes: int | None) -> int | None:
    return None if kilobytes is None or kilobytes < 0 else int(kilobytes) // _KB_PER_MB


def _waits(rows: list[dict[str, Any]]) -> dict[str, WaitCounts]:
    benign = benign_wait_types()
    waits: dict[str, WaitCounts] = {}
    for row in rows:
        wait_type = (row["wait_type"] or "").strip().upper()
        if not wait_type or wait_type in benign or not row["waiting_tasks_count"]:
            continue
        waits[wait_type] = WaitCounts(
            int(row["waiting_tasks_count"]), int(row["wait_time_ms"] or 0), int(row["signal_wait_time_ms"] or 0)
        )
    return waits
