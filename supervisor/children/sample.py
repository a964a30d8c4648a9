"""A collection's result sets (``supervisor.procedures.resultsets``) parsed into a typed Sample.

Every value is checked against its contract column before it is used (``supervisor.children.column_checks``):
a value that fails is the server's fault, a PROTOCOL failure naming ``set.column`` and the value. The two
instance times are checked where they are read (``_required_time``): they are required, and the sample
time must be plausible. A figure that passes its column's check but cannot be what it claims (a CPU record
that is not current, more memory available than there is, a wait counter that is NULL) is unknown: None, or
left out of the waits; never the whole sample's failure.
"""

from __future__ import annotations

import datetime as dt
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from supervisor.children.column_checks import COLUMN_CHECKS
from supervisor.children.errors import CollectionFailure
from supervisor.errors import PROTOCOL
from supervisor.procedures.benign_waits import benign_wait_types
from supervisor.procedures.catalog import ENGINE_EDITIONS, MANAGED_INSTANCE
from supervisor.procedures.resultsets import CONTRACT_VERSION, RESULT_SETS, WAITS, ResultSet
from supervisor.rules import shown

LINUX = "Linux"
_KB_PER_MB = 1024
#: Sample times before this, or further than MAX_CLOCK_SKEW from the collector's clock, are a broken clock.
EARLIEST_SAMPLE_TIME = dt.datetime(2000, 1, 1)
MAX_CLOCK_SKEW = dt.timedelta(days=1)
#: A CPU record older than this at the sample time is no current figure: the scheduler monitor writes one a
#: minute (Azure SQL Database a row per 15 s), so five minutes without one means it stopped writing. Managed
#: Instance publishes its 15 s rows 5-10 minutes late, so it gets 15.
MAX_CPU_RECORD_AGE = dt.timedelta(minutes=5)
MAX_MANAGED_INSTANCE_CPU_RECORD_AGE = dt.timedelta(minutes=15)
#: A record ahead of the sample time by more than this (beyond a 15 s interval's end) is no current figure.
MAX_CPU_RECORD_LEAD = dt.timedelta(minutes=1)
_ASCII_UPPER = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)


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
    #: Wait types the answer gave with a NULL counter: unknown, so not in ``waits``.
    unknown_waits: frozenset[str] = frozenset()


RawSets = Sequence[tuple[Sequence[str], Sequence[Sequence[Any]]]]


_WAIT_COLUMNS = WAITS.column_names
_WAIT_TYPE_LENGTH = next(column.length for column in WAITS.columns if column.name == "wait_type")


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
    sample_time = _required_time(instance, "sample_time_utc")
    _check_sample_time(sample_time, now)
    cpu_percent, system_cpu_percent = _cpu(sets["cpu"].rows(), platform, sample_time, instance["engine_edition"])
    physical_kb = counters["total_physical_memory_kb"]
    waits, unknown_waits = _waits(sets["waits"])
    return Sample(
        server_name=instance["server_name"],
        product_version=instance["product_version"],
        host_platform=platform,
        sqlserver_start_time=_required_time(instance, "sqlserver_start_time"),
        sample_time=sample_time,
        cpu_percent=cpu_percent,
        system_cpu_percent=system_cpu_percent,
        memory_percent=_memory_percent(counters),
        sql_memory_mb=_sql_memory_mb(counters["total_server_memory_kb"], physical_kb),
        sql_target_memory_mb=_sql_memory_mb(counters["target_server_memory_kb"], physical_kb),
        connection_count=counters["user_connections"],
        batch_requests_total=counters["batch_requests_total"],
        waits=waits,
        engine_edition=instance["engine_edition"],
        database_name=instance["database_name"],
        unknown_waits=unknown_waits,
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
    return _naive_utc(value)


def _naive_utc(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo is None else moment.astimezone(dt.UTC).replace(tzinfo=None)


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


def _cpu(
    rows: list[dict[str, Any]], platform: str, sample_time: dt.datetime, engine_edition: int | None
) -> tuple[int | None, int | None]:
    """(SQL Server CPU, whole-host CPU) from the newest record, both unknown when that record is not current
    (``_is_current``). The host figure is the source's own where it gives one (Azure SQL Database: the instance
    hosting the database), else 100 - idle, unknown on Linux (idle is always 0 there) and where the source has
    no idle figure (Managed Instance)."""
    if not rows:
        return None, None
    newest = max(rows, key=_record_order)
    if not _is_current(newest["record_time_utc"], sample_time, engine_edition):
        return None, None
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


def _is_current(record_time: dt.datetime | None, sample_time: dt.datetime, engine_edition: int | None) -> bool:
    """Whether a record written at ``record_time`` gives the CPU at ``sample_time``: not older than
    MAX_CPU_RECORD_AGE (MAX_MANAGED_INSTANCE_CPU_RECORD_AGE), nor ahead by more than MAX_CPU_RECORD_LEAD. A
    record without a time cannot be judged and is taken as it is."""
    if record_time is None:
        return True
    is_managed_instance = ENGINE_EDITIONS.get(engine_edition or 0) == MANAGED_INSTANCE
    oldest = MAX_MANAGED_INSTANCE_CPU_RECORD_AGE if is_managed_instance else MAX_CPU_RECORD_AGE
    return -MAX_CPU_RECORD_LEAD <= sample_time - _naive_utc(record_time) <= oldest


def _record_order(row: dict[str, Any]) -> tuple[int, dt.datetime]:
    time = row["record_time_utc"]
    return (row["record_id"] or 0, dt.datetime.min if time is None else _naive_utc(time))


def _memory_percent(counters: dict[str, Any]) -> float | None:
    """Host physical memory in use, from the KB figures, unknown when available memory is negative or more
    than the total; where a flavour has none (Azure SQL Database), the percentage it gives instead (memory
    used of the service tier's limit)."""
    total = counters["total_physical_memory_kb"]
    available = counters["available_physical_memory_kb"]
    if total and total > 0 and available is not None:
        return round(100.0 * (total - available) / total, 2) if 0 <= available <= total else None
    if counters.get("memory_used_percent") is not None:
        return round(min(100.0, max(0.0, float(counters["memory_used_percent"]))), 2)
    return None


def _sql_memory_mb(kilobytes: int | None, physical_kb: int | None) -> int | None:
    """SQL Server memory in MB, unknown when negative or more than the host's physical memory (where the answer
    has a positive figure for it)."""
    if kilobytes is None or kilobytes < 0 or (physical_kb is not None and 0 < physical_kb < kilobytes):
        return None
    return kilobytes // _KB_PER_MB


def stored_wait_type(name: str | None) -> str | None:
    """A wait type's name as stored: trimmed, ASCII letters upper-cased (SQL Server's names are ASCII upper case;
    other letters stay as they are, so a name never grows); None when empty or unstorable (longer than its
    column, not printable)."""
    wait_type = (name or "").strip().translate(_ASCII_UPPER)
    if not wait_type or len(wait_type) > _WAIT_TYPE_LENGTH or not wait_type.isprintable():
        return None
    return wait_type


def _waits(table: _Table) -> tuple[dict[str, WaitCounts], frozenset[str]]:
    """Non-benign waits with a count, by stored name (``stored_wait_type``), and the wait types with a NULL
    counter (unknown, not zero). A row without a storable name is left out, as one with a zero count is; a name
    twice is refused: the increments of one of them would be lost."""
    benign = benign_wait_types()
    waits: dict[str, WaitCounts] = {}
    unknown: set[str] = set()
    rows = zip(*(table.columns[name] for name in _WAIT_COLUMNS), strict=True)
    for name, count, wait_ms, signal_ms in rows:
        wait_type = stored_wait_type(name)
        if wait_type is None or wait_type in benign or count == 0:
            continue
        if wait_type in waits or wait_type in unknown:
            raise CollectionFailure(PROTOCOL, f"result set 'waits' has wait type {shown(wait_type)} more than once")
        if count is None or wait_ms is None or signal_ms is None:
            unknown.add(wait_type)
        else:
            waits[wait_type] = WaitCounts(count, wait_ms, signal_ms)
    return waits, frozenset(unknown)
