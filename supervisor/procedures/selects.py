"""The result-set statements of each flavour (``catalog.FLAVOURS``), assembled into one body by ``tsql.py``.

Every column is CAST to the contract's type and aliased with the contract's name (``resultsets.py``); a value
a flavour cannot give is ``CAST(NULL AS type)``. Every column of a ``sys.*`` view is qualified with the view's
alias, so the catalog test (``tests/test_catalog.py``) and the simulator can tell which view it comes from.
``VIEWS_READ`` names the views each flavour's statements read (the catalog test checks it against the text).
"""

from __future__ import annotations

import re

from supervisor.procedures.benign_waits import benign_wait_types
from supervisor.procedures.catalog import AZURE_SQL_DATABASE, BOXED, MANAGED_INSTANCE
from supervisor.procedures.resultsets import CONTRACT_VERSION

# SERVERPROPERTY returns sql_variant: cast to the contract's types. @@SERVERNAME is NULL on a renamed host until
# the server name is re-registered. sys.dm_os_host_info does not exist before SQL Server 2017 nor on the Azure
# flavours, so the platform is read from @@VERSION. sys.dm_os_sys_info exists on every flavour.
INSTANCE_SELECT = f"""\
-- result set 1: instance (every flavour)
SELECT
    CAST({CONTRACT_VERSION:d} AS int) AS contract_version,
    CAST(COALESCE(@@SERVERNAME, SERVERPROPERTY(N'ServerName')) AS nvarchar(128)) AS server_name,
    CAST(SERVERPROPERTY(N'ProductVersion') AS nvarchar(128)) AS product_version,
    CAST(SERVERPROPERTY(N'Edition') AS nvarchar(128)) AS edition,
    CAST(@engine_edition AS int) AS engine_edition,
    CAST(
        CASE WHEN @@VERSION LIKE N'%Linux%' THEN N'Linux' ELSE N'Windows' END AS nvarchar(32)
    ) AS host_platform,
    CAST(DB_NAME() AS nvarchar(128)) AS database_name,
    CAST(si.cpu_count AS int) AS cpu_count,
    CAST(si.sqlserver_start_time AS datetime2(7)) AS sqlserver_start_time,
    CAST(@sample_time_utc AS datetime2(7)) AS sample_time_utc
FROM sys.dm_os_sys_info AS si;"""

# `timestamp` and ms_ticks are both milliseconds since the computer started. DATEADD takes an int, so the
# bigint age is applied as whole seconds plus the millisecond remainder: no overflow, ever.
_RING_BUFFER_CPU = """\
-- result set 2: cpu (newest scheduler-monitor record, one a minute)
SELECT TOP (1)
    CAST(rec.record_id AS int) AS record_id,
    CAST(
        DATEADD(
            MILLISECOND,
            -CAST((@ms_ticks - rec.ring_timestamp) % 1000 AS int),
            DATEADD(SECOND, -CAST((@ms_ticks - rec.ring_timestamp) / 1000 AS int), @sample_time_utc)
        ) AS datetime2(7)
    ) AS record_time_utc,
    CAST(rec.process_utilization AS int) AS sql_cpu_percent,
    CAST(rec.system_idle AS int) AS system_idle_percent,
    CAST(NULL AS int) AS host_cpu_percent
FROM (
    SELECT
        rb.ring_timestamp,
        rb.record_xml.value(N'(Record/@id)[1]', 'int') AS record_id,
        rb.record_xml.value(
            N'(Record/SchedulerMonitorEvent/SystemHealth/ProcessUtilization)[1]', 'int'
        ) AS process_utilization,
        rb.record_xml.value(
            N'(Record/SchedulerMonitorEvent/SystemHealth/SystemIdle)[1]', 'int'
        ) AS system_idle
    FROM (
        SELECT
            r.[timestamp] AS ring_timestamp,
            CAST(r.record AS xml) AS record_xml
        FROM sys.dm_os_ring_buffers AS r
        WHERE
            r.ring_buffer_type = N'RING_BUFFER_SCHEDULER_MONITOR'
            AND r.record LIKE N'%<SystemHealth>%'
    ) AS rb
) AS rec
ORDER BY rec.record_id DESC;"""

# A row per 15-second interval, published some minutes late; of the instance's vCore limit. The host is hidden.
_MANAGED_INSTANCE_CPU = """\
-- result set 2: cpu (newest sys.server_resource_stats interval)
SELECT TOP (1)
    CAST(NULL AS int) AS record_id,
    CAST(srs.end_time AS datetime2(7)) AS record_time_utc,
    CAST(ROUND(srs.avg_cpu_percent, 0) AS int) AS sql_cpu_percent,
    CAST(NULL AS int) AS system_idle_percent,
    CAST(NULL AS int) AS host_cpu_percent
FROM sys.server_resource_stats AS srs
ORDER BY srs.end_time DESC;"""

# A row per 15 seconds for about an hour: the database's CPU of its service tier's limit, and the CPU of the
# instance hosting it (the pool's in an elastic pool).
_AZURE_CPU = """\
-- result set 2: cpu (newest sys.dm_db_resource_stats interval)
SELECT TOP (1)
    CAST(NULL AS int) AS record_id,
    CAST(rs.end_time AS datetime2(7)) AS record_time_utc,
    CAST(ROUND(rs.avg_cpu_percent, 0) AS int) AS sql_cpu_percent,
    CAST(NULL AS int) AS system_idle_percent,
    CAST(ROUND(rs.avg_instance_cpu_percent, 0) AS int) AS host_cpu_percent
FROM sys.dm_db_resource_stats AS rs
ORDER BY rs.end_time DESC;"""

# object_name / counter_name are nchar(128), blank-padded, and object_name carries a 'SQLServer:' or
# 'MSSQL$<instance>:' prefix: trim, and match the object with LIKE only.
_COUNTER_PICKS: tuple[tuple[str, str, str], ...] = (
    ("total_server_memory_kb", "Memory Manager", "Total Server Memory (KB)"),
    ("target_server_memory_kb", "Memory Manager", "Target Server Memory (KB)"),
    ("user_connections", "General Statistics", "User Connections"),
    ("batch_requests_total", "SQL Statistics", "Batch Requests/sec"),
)
_AZURE_PICKS = tuple(pick for pick in _COUNTER_PICKS if pick[0] != "user_connections")


def _counter_subquery(picks: tuple[tuple[str, str, str], ...]) -> str:
    columns = ",\n".join(
        f"""\
        MAX(CASE
            WHEN RTRIM(pc.[object_name]) LIKE N'%:{obj}'
                AND RTRIM(pc.counter_name) = N'{counter}'
            THEN pc.cntr_value
        END) AS {alias}"""
        for alias, obj, counter in picks
    )
    objects = sorted({obj for _, obj, _ in picks})
    where = "\n        OR ".join(f"RTRIM(pc.[object_name]) LIKE N'%:{obj}'" for obj in objects)
    return f"""(
    SELECT
{columns}
    FROM sys.dm_os_performance_counters AS pc
    WHERE
        {where}
) AS pcv"""


def _host_counters() -> str:
    outer = ",\n".join(f"    CAST(pcv.{alias} AS bigint) AS {alias}" for alias, _, _ in _COUNTER_PICKS)
    return f"""\
-- result set 3: counters (host memory, memory and activity counters)
SELECT
    CAST(sm.total_physical_memory_kb AS bigint) AS total_physical_memory_kb,
    CAST(sm.available_physical_memory_kb AS bigint) AS available_physical_memory_kb,
{outer},
    CAST(NULL AS float) AS memory_used_percent
FROM sys.dm_os_sys_memory AS sm
CROSS JOIN {_counter_subquery(_COUNTER_PICKS)};"""


# No host memory view; user sessions of this database instead of the instance's User Connections; memory as
# a percentage of the service tier's limit from the newest resource-stats interval (none right after a start).
def _azure_counters() -> str:
    return f"""\
-- result set 3: counters (no host memory; this database's user sessions)
SELECT
    CAST(NULL AS bigint) AS total_physical_memory_kb,
    CAST(NULL AS bigint) AS available_physical_memory_kb,
    CAST(pcv.total_server_memory_kb AS bigint) AS total_server_memory_kb,
    CAST(pcv.target_server_memory_kb AS bigint) AS target_server_memory_kb,
    CAST(ses.user_sessions AS bigint) AS user_connections,
    CAST(pcv.batch_requests_total AS bigint) AS batch_requests_total,
    CAST(mem.avg_memory_usage_percent AS float) AS memory_used_percent
FROM {_counter_subquery(_AZURE_PICKS)}
CROSS JOIN (
    SELECT COUNT_BIG(*) AS user_sessions
    FROM sys.dm_exec_sessions AS s
    WHERE s.is_user_process = 1 AND s.database_id = DB_ID()
) AS ses
OUTER APPLY (
    SELECT TOP (1) drs.avg_memory_usage_percent
    FROM sys.dm_db_resource_stats AS drs
    ORDER BY drs.end_time DESC
) AS mem;"""


_WAIT_LIST_WIDTH = 100


def benign_wait_list_sql(indent: str = "        ") -> str:
    """The benign wait types as a sorted, comma-separated list of N'...' literals, wrapped."""
    lines: list[str] = []
    for literal in (f"N'{name}'" for name in checked_wait_types()):
        if lines and len(indent) + len(lines[-1]) + len(literal) + 2 <= _WAIT_LIST_WIDTH:
            lines[-1] = f"{lines[-1]}, {literal}"
        else:
            lines.append(literal)
    return f",\n{indent}".join(lines)


#: What a wait type name may contain; anything else would be rendered into T-SQL unsafely.
WAIT_TYPE_NAME = re.compile(r"[A-Z0-9_]{1,60}")


def checked_wait_types() -> list[str]:
    names = sorted(benign_wait_types())
    bad = [name for name in names if not WAIT_TYPE_NAME.fullmatch(name)]
    if bad:
        raise ValueError(f"benign wait type names must match [A-Z0-9_]{{1,60}}: {bad!r}")
    return names


def _waits(view: str) -> str:
    return f"""\
-- result set 4: waits ({view})
SELECT
    CAST(ws.wait_type AS nvarchar(60)) AS wait_type,
    CAST(ws.waiting_tasks_count AS bigint) AS waiting_tasks_count,
    CAST(ws.wait_time_ms AS bigint) AS wait_time_ms,
    CAST(ws.signal_wait_time_ms AS bigint) AS signal_wait_time_ms
FROM {view} AS ws
WHERE
    ws.waiting_tasks_count <> 0
    AND ws.wait_type NOT IN (
        {benign_wait_list_sql()}
    )
ORDER BY ws.wait_type;"""


def flavour_selects(flavour: str) -> tuple[str, str, str]:
    """Result sets 2-4 (cpu, counters, waits) as ``flavour`` reads them."""
    if flavour == AZURE_SQL_DATABASE:
        return _AZURE_CPU, _azure_counters(), _waits("sys.dm_db_wait_stats")
    if flavour == MANAGED_INSTANCE:
        return _MANAGED_INSTANCE_CPU, _host_counters(), _waits("sys.dm_os_wait_stats")
    return _RING_BUFFER_CPU, _host_counters(), _waits("sys.dm_os_wait_stats")


#: The views each flavour's statements read, the common ones (the sample clock, result set 1) included.
VIEWS_READ: dict[str, tuple[str, ...]] = {
    BOXED: ("sys.dm_os_sys_info", "sys.dm_os_ring_buffers", "sys.dm_os_sys_memory",
            "sys.dm_os_performance_counters", "sys.dm_os_wait_stats"),
    MANAGED_INSTANCE: ("sys.dm_os_sys_info", "sys.server_resource_stats", "sys.dm_os_sys_memory",
                       "sys.dm_os_performance_counters", "sys.dm_os_wait_stats"),
    AZURE_SQL_DATABASE: ("sys.dm_os_sys_info", "sys.dm_db_resource_stats", "sys.dm_os_performance_counters",
                         "sys.dm_exec_sessions", "sys.dm_db_wait_stats"),
}  # fmt: skip
