"""The simulated state of one SQL Server instance: start time, counters, CPU ring buffer, waits.

Everything is a pure function of (profile, start time, now), so reading costs no background work
and 2,000 instances need no timers. Cumulative counters grow exactly linearly from the start.
"""

from __future__ import annotations

import datetime as dt
import math
import time
import zlib
from dataclasses import dataclass

from sqlserver_sim.fleet import ServerSpec
from sqlserver_sim.tokens import ColumnDef, Kind, ResultTable
from supervisor.procedures import resultsets as contract
from supervisor.procedures.benign_waits import benign_wait_types
from supervisor.procedures.tsql import body as shipped_body

CPU_RECORD_INTERVAL_S = 60.0
RESOURCE_STATS_INTERVAL_S = 15.0

RING_BUFFERS = "sys.dm_os_ring_buffers"
SYS_MEMORY = "sys.dm_os_sys_memory"
PERFORMANCE_COUNTERS = "sys.dm_os_performance_counters"
SESSIONS = "sys.dm_exec_sessions"
OS_WAIT_STATS = "sys.dm_os_wait_stats"
DB_WAIT_STATS = "sys.dm_db_wait_stats"
DB_RESOURCE_STATS = "sys.dm_db_resource_stats"
SERVER_RESOURCE_STATS = "sys.server_resource_stats"
#: Counters-set column -> the views that hold its value.
VALUE_SOURCES: dict[str, frozenset[str]] = {
    "total_physical_memory_kb": frozenset({SYS_MEMORY}),
    "available_physical_memory_kb": frozenset({SYS_MEMORY}),
    "total_server_memory_kb": frozenset({PERFORMANCE_COUNTERS}),
    "target_server_memory_kb": frozenset({PERFORMANCE_COUNTERS}),
    "user_connections": frozenset({PERFORMANCE_COUNTERS}),
    "batch_requests_total": frozenset({PERFORMANCE_COUNTERS}),
    "memory_used_percent": frozenset({DB_RESOURCE_STATS}),
    "user_sessions": frozenset({SESSIONS}),
}


@dataclass(frozen=True)
class WaitModel:
    wait_type: str
    tasks_per_sec: float  # per batch request/s for load waits, absolute for background waits
    avg_wait_ms: float
    signal_fraction: float
    scales_with_load: bool = True


WAIT_MODELS: tuple[WaitModel, ...] = (
    WaitModel("PAGEIOLATCH_SH", 0.05, 4.0, 0.02),
    WaitModel("WRITELOG", 0.10, 1.5, 0.05),
    WaitModel("LCK_M_X", 0.002, 120.0, 0.01),
    WaitModel("CXPACKET", 0.02, 30.0, 0.10),
    WaitModel("SOS_SCHEDULER_YIELD", 0.5, 0.2, 0.99),
    WaitModel("ASYNC_NETWORK_IO", 0.03, 8.0, 0.05),
    WaitModel("PAGELATCH_EX", 0.01, 0.5, 0.20),
    # Benign background waits, as an older deployed procedure that does not filter them returns.
    WaitModel("SLEEP_TASK", 20.0, 50.0, 0.01, scales_with_load=False),
    WaitModel("LAZYWRITER_SLEEP", 1.0, 1000.0, 0.0, scales_with_load=False),
    WaitModel("SQLTRACE_INCREMENTAL_FLUSH_SLEEP", 0.25, 4000.0, 0.0, scales_with_load=False),
)
assert all(m.scales_with_load != (m.wait_type in benign_wait_types()) for m in WAIT_MODELS)

_KINDS = {
    contract.SqlType.INT: Kind.INT,
    contract.SqlType.BIGINT: Kind.BIGINT,
    contract.SqlType.FLOAT: Kind.FLOAT,
    contract.SqlType.NVARCHAR: Kind.NVARCHAR,
    contract.SqlType.DATETIME2: Kind.DATETIME2,
}


def columns_of(result_set: contract.ResultSet) -> tuple[ColumnDef, ...]:
    return tuple(ColumnDef(c.name, _KINDS[c.sql_type], c.nullable, c.length) for c in result_set.columns)


COLUMNS: dict[str, tuple[ColumnDef, ...]] = {rs.name: columns_of(rs) for rs in contract.RESULT_SETS}


def utc_datetime(epoch_seconds: float) -> dt.datetime:
    """Naive UTC datetime (what a datetime2 column carries)."""
    return dt.datetime.fromtimestamp(epoch_seconds, dt.UTC).replace(tzinfo=None)


class SimulatedInstance:
    """One instance's engine state; ``spec`` may be replaced while it runs (profile changes apply)."""

    def __init__(self, spec: ServerSpec, now: float | None = None) -> None:
        self.spec = spec
        self.seed = zlib.crc32(spec.name.encode())
        started = time.time() if now is None else now
        self.start_time = started - spec.profile.uptime_seconds
        self.procedure_installed = spec.procedure_installed
        #: The body ``procedures deploy`` installed (None: the shipped one, when ``procedure_installed``).
        self.procedure_body: str | None = None
        self.applied_restart = spec.faults.restart

    def install_procedure(self, body: str) -> None:
        self.procedure_installed = True
        self.procedure_body = body

    def procedure_text(self) -> str:
        return self.procedure_body if self.procedure_body is not None else shipped_body()

    def restart(self, now: float | None = None) -> None:
        self.start_time = time.time() if now is None else now
        self.seed = (self.seed * 1103515245 + 12345) & 0xFFFFFFFF

    def _wave(self, salt: int, x: float) -> float:
        """A smooth pseudo-random value in [0, 1] for position x."""
        phase = ((self.seed ^ (salt * 2654435761)) & 0xFFFF) / 0xFFFF * 2 * math.pi
        value = 0.5 + 0.3 * math.sin(x / 7.3 + phase) + 0.2 * math.sin(x / 2.1 + 2 * phase)
        return min(1.0, max(0.0, value))

    def _in_range(self, bounds: tuple[float, float], salt: int, x: float) -> float:
        low, high = bounds
        return low + (high - low) * self._wave(salt, x)

    def _server_clock(self, now: float) -> float:
        """What the server's clock reads at the host's ``now`` (the ``clock_offset_s`` fault)."""
        return now + self.spec.faults.clock_offset_s

    def batch_requests_total(self, now: float) -> int:
        return int(self.spec.profile.batch_requests_per_sec * max(0.0, now - self.start_time))

    def rows(self, result_set: str, reads: frozenset[str], now: float, database: str = "master",
             own_rows_only: frozenset[str] = frozenset()) -> list[dict[str, object]]:
        """The rows of a contract result set at ``now`` as a statement reading the views ``reads`` gets them:
        a value comes from the view that holds it (``VALUE_SOURCES``), and a column whose view the statement
        does not read is NULL. ``own_rows_only``: views the login may only see its own rows of."""
        if result_set == contract.INSTANCE.name:
            return [self._instance_row(now, database)]
        if result_set == contract.CPU.name:
            if RING_BUFFERS in reads:
                return self._cpu_rows(now)
            if DB_RESOURCE_STATS in reads or SERVER_RESOURCE_STATS in reads:
                return self._resource_cpu_rows(now, host=DB_RESOURCE_STATS in reads)
            return []
        if result_set == contract.COUNTERS.name:
            values = self._counters_row(now)
            row: dict[str, object] = {}
            for column, value in values.items():
                row[column] = value if VALUE_SOURCES[column] & reads else None
            if SESSIONS in reads:
                row["user_connections"] = 1 if SESSIONS in own_rows_only else values["user_sessions"]
            row.pop("user_sessions")
            return [row]
        if result_set == contract.WAITS.name:
            return self._wait_rows(now) if reads & {OS_WAIT_STATS, DB_WAIT_STATS} else []
        raise KeyError(result_set)

    def snapshot(self, now: float | None = None) -> list[ResultTable]:
        """The result sets of the shipped collection on a boxed server reading every view it has (tests)."""
        now = time.time() if now is None else now
        reads = frozenset({RING_BUFFERS, SYS_MEMORY, PERFORMANCE_COUNTERS, OS_WAIT_STATS})
        tables = []
        for result_set in contract.RESULT_SETS:
            rows = self.rows(result_set.name, reads, now)
            values = [[row[name] for name in result_set.column_names] for row in rows]
            tables.append(ResultTable(COLUMNS[result_set.name], values))
        return tables

    def _instance_row(self, now: float, database: str = "master") -> dict[str, object]:
        spec = self.spec
        local_start = utc_datetime(self.start_time) + dt.timedelta(minutes=spec.timezone_offset_minutes)
        return {
            "contract_version": contract.CONTRACT_VERSION,
            "server_name": spec.name,
            "product_version": spec.version,
            "edition": spec.edition,
            "engine_edition": spec.effective_engine_edition,
            "host_platform": spec.host_platform,
            "database_name": database,
            "cpu_count": spec.profile.cpu_count,
            "sqlserver_start_time": local_start.replace(microsecond=local_start.microsecond // 1000 * 1000),
            "sample_time_utc": utc_datetime(self._server_clock(now)),
        }

    def _resource_cpu_rows(self, now: float, *, host: bool) -> list[dict[str, object]]:
        """The newest 15-second interval of sys.dm_db_resource_stats (``host``: with the hosting instance's CPU)
        or sys.server_resource_stats; none in the first interval unless ``cpu_record_on_start``."""
        profile = self.spec.profile
        interval = int(max(0.0, now - self.start_time) // RESOURCE_STATS_INTERVAL_S)
        if interval == 0 and not profile.cpu_record_on_start:
            return []
        end = self.start_time + max(1, interval) * RESOURCE_STATS_INTERVAL_S
        cpu = round(self._in_range(profile.cpu_percent, 1, interval), 2)
        busy = 100.0 - self._in_range(profile.system_idle_percent, 2, interval)
        return [{
            "record_id": None,
            "record_time_utc": utc_datetime(self._server_clock(min(end, now))),
            "sql_cpu_percent": round(cpu),
            "system_idle_percent": None,
            "host_cpu_percent": round(max(cpu, busy)) if host else None,
        }]

    def _cpu_rows(self, now: float) -> list[dict[str, object]]:
        profile = self.spec.profile
        minutes = int(max(0.0, now - self.start_time) // CPU_RECORD_INTERVAL_S)
        record_id = minutes + (1 if profile.cpu_record_on_start else 0)
        if record_id == 0:
            return []
        written = self.start_time + (minutes * CPU_RECORD_INTERVAL_S)
        sql_cpu = round(self._in_range(profile.cpu_percent, 1, record_id))
        if self.spec.host_platform == "Linux":
            idle = 0
        else:
            idle = min(round(self._in_range(profile.system_idle_percent, 2, record_id)), 100 - sql_cpu)
        return [{
            "record_id": record_id,
            "record_time_utc": utc_datetime(self._server_clock(written)),
            "sql_cpu_percent": sql_cpu,
            "system_idle_percent": max(0, idle),
            "host_cpu_percent": None,
        }]

    def _counters_row(self, now: float) -> dict[str, object]:
        profile = self.spec.profile
        x = now / 10.0
        total_kb = profile.memory_total_mb * 1024
        used = self._in_range(profile.memory_used_percent, 3, x) / 100.0
        connections = round(self._in_range(profile.user_connections, 4, x))
        return {
            "total_physical_memory_kb": total_kb,
            "available_physical_memory_kb": int(total_kb * (1.0 - used)),
            "total_server_memory_kb": profile.sql_memory_mb * 1024,
            "target_server_memory_kb": profile.sql_target_memory_mb * 1024,
            "user_connections": connections,
            "batch_requests_total": self.batch_requests_total(now),
            "memory_used_percent": round(used * 100.0, 2),
            "user_sessions": max(1, connections // 2),  # of one database (Azure SQL Database), not the instance
        }

    def _wait_rows(self, now: float) -> list[dict[str, object]]:
        elapsed = max(0.0, now - self.start_time)
        load = max(1.0, self.spec.profile.batch_requests_per_sec)
        rows: list[dict[str, object]] = []
        for model in WAIT_MODELS:
            rate = model.tasks_per_sec * (load if model.scales_with_load else 1.0)
            count = int(rate * elapsed)
            if count == 0:
                continue
            wait_ms = int(rate * elapsed * model.avg_wait_ms)
            rows.append({
                "wait_type": model.wait_type,
                "waiting_tasks_count": count,
                "wait_time_ms": wait_ms,
                "signal_wait_time_ms": int(wait_ms * model.signal_fraction),
            })
        return rows
