"""The one definition of what the collection procedure returns.

One call of ``collector.usp_collect_snapshot`` (or the same body sent as an ad-hoc batch) returns
the result sets below, in this order. The T-SQL in ``tsql.py``, the collector's parser in
``supervisor/children`` and the SQL Server simulator all follow this module; change it here first.

Units are in the column names (``_kb``, ``_ms``, ``_percent``); times are ``datetime2`` values.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import Enum

PROCEDURE_SCHEMA = "collector"
PROCEDURE_NAME = "usp_collect_snapshot"
PROCEDURE_QUALIFIED_NAME = f"{PROCEDURE_SCHEMA}.{PROCEDURE_NAME}"
#: First line of the ad-hoc batch; lets a server (or the simulator) recognise the batch.
ADHOC_BATCH_MARKER = "-- collector-supervisor snapshot batch v1"
#: Version of this contract; the procedure returns it in the ``instance`` set.
CONTRACT_VERSION = 1


class SqlType(Enum):
    """The SQL Server types the result sets use (what the simulator must encode)."""

    INT = "int"
    BIGINT = "bigint"
    NVARCHAR = "nvarchar"  # length in Column.length (characters)
    DATETIME2 = "datetime2"  # scale 7


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: SqlType
    nullable: bool = False
    length: int = 0  # nvarchar only
    doc: str = ""

    @property
    def python_type(self) -> type:
        return {
            SqlType.INT: int,
            SqlType.BIGINT: int,
            SqlType.NVARCHAR: str,
            SqlType.DATETIME2: dt.datetime,
        }[self.sql_type]


@dataclass(frozen=True)
class ResultSet:
    name: str
    columns: tuple[Column, ...]
    rows: str  # "one", "zero_or_one" or "many"
    doc: str = ""

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


INSTANCE = ResultSet(
    "instance",
    (
        Column("contract_version", SqlType.INT, doc="CONTRACT_VERSION of the deployed T-SQL"),
        Column("server_name", SqlType.NVARCHAR, length=128, doc="@@SERVERNAME"),
        Column("product_version", SqlType.NVARCHAR, length=128, doc="SERVERPROPERTY('ProductVersion')"),
        Column("edition", SqlType.NVARCHAR, length=128, doc="SERVERPROPERTY('Edition')"),
        Column("engine_edition", SqlType.INT, doc="SERVERPROPERTY('EngineEdition'); 5 Azure SQL DB, 8 MI"),
        Column("host_platform", SqlType.NVARCHAR, length=32, doc="'Windows' or 'Linux'"),
        Column("cpu_count", SqlType.INT, doc="sys.dm_os_sys_info.cpu_count"),
        Column(
            "sqlserver_start_time",
            SqlType.DATETIME2,
            doc="sys.dm_os_sys_info.sqlserver_start_time as stored (server local time); "
            "a change means the instance restarted",
        ),
        Column("sample_time_utc", SqlType.DATETIME2, doc="SYSUTCDATETIME() when the counters were read"),
    ),
    rows="one",
    doc="Identity of the instance and the server-side time of the sample.",
)

CPU = ResultSet(
    "cpu",
    (
        Column("record_id", SqlType.INT, doc="Record/@id of the newest scheduler-monitor record"),
        Column("record_time_utc", SqlType.DATETIME2, doc="when the engine wrote that record"),
        Column("sql_cpu_percent", SqlType.INT, doc="SystemHealth/ProcessUtilization, may exceed 100"),
        Column("system_idle_percent", SqlType.INT, doc="SystemHealth/SystemIdle; always 0 on Linux"),
    ),
    rows="zero_or_one",
    doc="Newest RING_BUFFER_SCHEDULER_MONITOR record (one per minute); empty right after start.",
)

COUNTERS = ResultSet(
    "counters",
    (
        Column("total_physical_memory_kb", SqlType.BIGINT, doc="sys.dm_os_sys_memory"),
        Column("available_physical_memory_kb", SqlType.BIGINT, doc="sys.dm_os_sys_memory"),
        Column("total_server_memory_kb", SqlType.BIGINT, nullable=True, doc="Memory Manager counter"),
        Column("target_server_memory_kb", SqlType.BIGINT, nullable=True, doc="Memory Manager counter"),
        Column("user_connections", SqlType.BIGINT, nullable=True, doc="General Statistics counter"),
        Column(
            "batch_requests_total",
            SqlType.BIGINT,
            nullable=True,
            doc="SQL Statistics 'Batch Requests/sec': cumulative since start (PERF_COUNTER_BULK_COUNT)",
        ),
    ),
    rows="one",
    doc="Memory and performance counters; counters are NULL when the counter is not exposed.",
)

WAITS = ResultSet(
    "waits",
    (
        Column("wait_type", SqlType.NVARCHAR, length=60),
        Column("waiting_tasks_count", SqlType.BIGINT, doc="cumulative since start or CLEAR"),
        Column("wait_time_ms", SqlType.BIGINT, doc="cumulative"),
        Column("signal_wait_time_ms", SqlType.BIGINT, doc="cumulative"),
    ),
    rows="many",
    doc="sys.dm_os_wait_stats without benign types and without waiting_tasks_count = 0.",
)

#: The result sets in the order the procedure returns them.
RESULT_SETS: tuple[ResultSet, ...] = (INSTANCE, CPU, COUNTERS, WAITS)
