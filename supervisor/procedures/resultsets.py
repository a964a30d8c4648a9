"""The one definition of what the collection procedure returns.

One call of ``collector.usp_collect_snapshot`` (or the same body sent as an ad-hoc batch) returns
the result sets below, in this order. The T-SQL in ``tsql.py``, the collector's parser in
``supervisor/children`` and the SQL Server simulator all follow this module; change it here first.

Units are in the column names (``_kb``, ``_ms``, ``_percent``); times are ``datetime2`` values.

The sets are the same on every flavour (``catalog.FLAVOURS``: boxed SQL Server, Azure SQL Managed Instance,
Azure SQL Database); each column's ``doc`` says where its value comes from on each, and a value a flavour
cannot give is NULL there (the column is ``nullable`` and its doc says why).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import Enum

PROCEDURE_SCHEMA = "collector"
PROCEDURE_NAME = "usp_collect_snapshot"
PROCEDURE_QUALIFIED_NAME = f"{PROCEDURE_SCHEMA}.{PROCEDURE_NAME}"
#: First line of the ad-hoc batch; lets a server (or the simulator) recognise the batch.
ADHOC_BATCH_MARKER = "-- collector-supervisor snapshot batch v2"
#: Version of this contract; the procedure returns it in the ``instance`` set. 2: per-flavour collection
#: (``host_cpu_percent``, ``memory_used_percent``, ``database_name``; host memory and ring-buffer ids nullable).
CONTRACT_VERSION = 2


class SqlType(Enum):
    """The SQL Server types the result sets use (what the simulator must encode)."""

    INT = "int"
    BIGINT = "bigint"
    FLOAT = "float"
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
            SqlType.FLOAT: float,
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
        Column("host_platform", SqlType.NVARCHAR, length=32, doc="'Windows' or 'Linux' (from @@VERSION)"),
        Column("database_name", SqlType.NVARCHAR, length=128, doc="DB_NAME(): the database the login went to"),
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
        Column(
            "record_id",
            SqlType.INT,
            nullable=True,
            doc="boxed: Record/@id of the newest scheduler-monitor record; NULL where the source has no id",
        ),
        Column(
            "record_time_utc",
            SqlType.DATETIME2,
            doc="when the engine wrote the record (boxed) or when its interval ended (end_time: MI, Azure SQL DB)",
        ),
        Column(
            "sql_cpu_percent",
            SqlType.INT,
            doc="boxed: SystemHealth/ProcessUtilization (may exceed 100); MI: sys.server_resource_stats."
            "avg_cpu_percent (of the instance's vCore limit); Azure SQL DB: sys.dm_db_resource_stats."
            "avg_cpu_percent (of the service tier's limit)",
        ),
        Column(
            "system_idle_percent",
            SqlType.INT,
            nullable=True,
            doc="boxed: SystemHealth/SystemIdle (always 0 on Linux); NULL on MI and Azure SQL DB (no host view)",
        ),
        Column(
            "host_cpu_percent",
            SqlType.INT,
            nullable=True,
            doc="Azure SQL DB: sys.dm_db_resource_stats.avg_instance_cpu_percent (the instance hosting the "
            "database, of its limit); NULL elsewhere (boxed: derived from system_idle_percent; MI: hidden)",
        ),
    ),
    rows="zero_or_one",
    doc="Newest CPU record: boxed RING_BUFFER_SCHEDULER_MONITOR (one a minute, none right after start); MI "
    "sys.server_resource_stats and Azure SQL DB sys.dm_db_resource_stats (a row per 15 s interval).",
)

COUNTERS = ResultSet(
    "counters",
    (
        Column(
            "total_physical_memory_kb",
            SqlType.BIGINT,
            nullable=True,
            doc="sys.dm_os_sys_memory (boxed; MI: its virtual machine); NULL on Azure SQL DB (no such view)",
        ),
        Column(
            "available_physical_memory_kb",
            SqlType.BIGINT,
            nullable=True,
            doc="sys.dm_os_sys_memory, as total_physical_memory_kb",
        ),
        Column(
            "total_server_memory_kb",
            SqlType.BIGINT,
            nullable=True,
            doc="Memory Manager counter (Azure SQL DB: the instance hosting the database)",
        ),
        Column("target_server_memory_kb", SqlType.BIGINT, nullable=True, doc="Memory Manager counter, as above"),
        Column(
            "user_connections",
            SqlType.BIGINT,
            nullable=True,
            doc="General Statistics 'User Connections' counter; Azure SQL DB: user sessions in this database "
            "(sys.dm_exec_sessions)",
        ),
        Column(
            "batch_requests_total",
            SqlType.BIGINT,
            nullable=True,
            doc="SQL Statistics 'Batch Requests/sec': cumulative since start (PERF_COUNTER_BULK_COUNT); Azure SQL "
            "DB: of the instance hosting the database (in an elastic pool: the pool's)",
        ),
        Column(
            "memory_used_percent",
            SqlType.FLOAT,
            nullable=True,
            doc="Azure SQL DB: sys.dm_db_resource_stats.avg_memory_usage_percent (of the service tier's limit), "
            "where there are no host memory figures; NULL elsewhere",
        ),
    ),
    rows="one",
    doc="Memory and performance counters; a counter is NULL when the counter is not exposed.",
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
    doc="sys.dm_os_wait_stats (Azure SQL DB: sys.dm_db_wait_stats, this database's) without benign types and "
    "without waiting_tasks_count = 0.",
)

#: The result sets in the order the procedure returns them.
RESULT_SETS: tuple[ResultSet, ...] = (INSTANCE, CPU, COUNTERS, WAITS)
