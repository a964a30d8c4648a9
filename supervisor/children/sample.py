"""A collection's result sets (``supervisor.procedures.resultsets``) parsed into a typed Sample.

Every value is checked against its contract column before it is used (``supervisor.children.column_checks``):
a value that fails is the server's fault, a PROTOCOL failure naming ``set.column`` and the value. The two
instance times are checked where they are read (``_required_time``): they are required, and the sample
time must be plausible.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from supervisor.children.column_checks import COLUMN_CHECKS
from supervisor.children.errors import CollectionFailure
from supervisor.errors import PROTOCOL
from supervisor.procedures.benign_waits import benign_wait_types
from supervisor.procedures.resultsets import CONTRACT_VERSION, RESULT_SETS, WAITS, ResultSet
from supervisor.rules import shown

LINUX = "Linux"
_KB_PER_MB = 1024
#: Sample times before this, or further than MAX_CLOCK_SKEW from the collector's clock, are a broken clock.
EARLIEST_SAMPLE_TIME = dt.datetime(2000, 1, 1)
MAX_CLOCK_SKEW = dt.timedelta(days=1)


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


_WAIT_COLUMNS = WAITS.column_names


@dataclass(frozen=True)
class _Table:
    """One result set's contract columns, checked: column name → its values, in row order."""

    spec: ResultSet
    columns: dict[str, Sequence[Any]]
    count: int

    def one(self) -> dict[str, Any]:
        if self.count != 1:
            raise CollectionFailure(PROTOCOL, f"result set {self.spec.name!r} has {self.count} rows, expected 1")
        return {name: values[0] for name, values in self.columns.items()}

    def rows(self) -> list[dict[str, Any]]:
        names = tuple(self.columns)
        return [dict(zip(names, values, strict=True)) for values in zip(*self.columns.values(), strict=True)]


def clamp_percent(value: float | None) -> int | None:
    if value is None:
        return None
    return round(min(100.0, max(0.0, float(value))))


def parse_sample(raw: RawSets, *, now: dt.datetime | None = None) -> Sample:
    """``raw``: (column names, rows) per result set, in contract order; ``now``: the collector's UTC clock
    (naive), to refuse an implausible sample time (None: no such check). Raises CollectionFailure."""
    if len(raw) != len(RESULT_SETS):
        raise CollectionFailure(PROTOCOL, f"expected {len(RESULT_SETS)} result sets, got {len(raw)}")
    sets = {spec.name: _table(spec, names, rows) for spec, (names, rows) in zip(RESULT_SETS, raw, strict=True)}
    instance = sets["instance"].one()
    counters = sets["counters"].one()
    if instance["contract_version"] != CONTRACT_VERSION:
        raise CollectionFailure(
            PROTOCOL,
            f"server returns contract version {instance['contract_version']}, expected {CONTRACT_VERSION}: "
            "redeploy with 'collector-supervisor procedures deploy'",
        )
    platform = instance["host_platform"] or "Windows"
    cpu_percent, system_cpu_percent = _cpu(sets["cpu"].rows(), platform)
    sample_time = _required_time(instance, "sample_time_utc")
    _check_sample_time(sample_time, now)
    return Sample(
        server_name=instance["server_name"],
        product_version=instance["product_version"],
        host_platform=platform,
        sqlserver_start_time=_required_time(instance, "sqlserver_start_time"),
        sample_time=sample_time,
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


def _table(spec: ResultSet, names: Sequence[str], rows: Sequence[Sequence[Any]]) -> _Table:
    positions = {name.lower(): index for index, name in enumerate(names)}  # a repeated name: the last one
    checks = COLUMN_CHECKS[spec.name]
    missing = [name for name, _check in checks if name not in positions]
    if missing:
        raise CollectionFailure(PROTOCOL, f"result set {spec.name!r} lacks columns {', '.join(missing)}")
    if len(rows) == 1:  # most sets: value by value is quicker
        row = rows[0]
        if len(row) != len(names):
            raise ValueError(f"result set {spec.name!r}: a row of {len(row)} values for {len(names)} columns")
        return _Table(spec, {name: (check.one(row[positions[name]]),) for name, check in checks}, 1)
    by_position: list[Sequence[Any]] = list(zip(*rows, strict=True)) if rows else [()] * len(names)
    if len(by_position) != len(names):
        raise ValueError(f"result set {spec.name!r}: rows of {len(by_position)} values for {len(names)} columns")
    columns: dict[str, Sequence[Any]] = {}
    for name, check in checks:
        values = by_position[positions[name]]
        fixed = check.column(values)
        columns[name] = values if fixed is None else fixed
    return _Table(spec, columns, len(rows))


def _required_time(row: dict[str, Any], name: str) -> dt.datetime:
    value = row[name]
    if not isinstance(value, dt.datetime):
        raise CollectionFailure(PROTOCOL, f"{name} is {shown(value)}, expected a datetime")
    return value.replace(tzinfo=None) if value.tzinfo is None else value.astimezone(dt.UTC).replace(tzinfo=None)


def _check_sample_time(sample_time: dt.datetime, now: dt.datetime | None) -> None:
    """A sample time from a broken server clock would be stored as the newest snapshot for years (far future)
    or purged at once (far past): refused."""
    if sample_time < EARLIEST_SAMPLE_TIME:
        raise CollectionFailure(
            PROTOCOL, f"sample_time_utc is {_when(sample_time)}, before {EARLIEST_SAMPLE_TIME.year}: check the "
            "server's clock",
        )  # fmt: skip
    if now is not None and abs(sample_time - now) > MAX_CLOCK_SKEW:
        raise CollectionFailure(
            PROTOCOL, f"sample_time_utc is {_when(sample_time)}, more than a day from the collector's clock "
            f"({_when(now)} UTC): check the server's clock",
        )  # fmt: skip


def _when(moment: dt.datetime) -> str:
    return moment.isoformat(sep=" ", timespec="seconds")


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
    time = row["record_time_utc"]
    if time is None:
        time = dt.datetime.min
    elif time.tzinfo is not None:
        time = time.astimezone(dt.UTC).replace(tzinfo=None)
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
    return round(min(100.0, max(0.0, used)), 2)


def _mb(kilobytes: int | None) -> int | None:
    return None if kilobytes is None or kilobytes < 0 else kilobytes // _KB_PER_MB


def _waits(table: _Table) -> dict[str, WaitCounts]:
    """Non-benign waits with a count, by upper-case name; a name twice (after trimming) is refused: the
    increments of one of them would be lost."""
    benign = benign_wait_types()
    waits: dict[str, WaitCounts] = {}
    rows = zip(*(table.columns[name] for name in _WAIT_COLUMNS), strict=True)
    for name, count, wait_ms, signal_ms in rows:
        wait_type = (name or "").strip().upper()
        if not wait_type or wait_type in benign or not count:
            continue
        if wait_type in waits:
            raise CollectionFailure(PROTOCOL, f"result set 'waits' has wait type {shown(wait_type)} more than once")
        waits[wait_type] = WaitCounts(count, wait_ms or 0, signal_ms or 0)
    return waits
