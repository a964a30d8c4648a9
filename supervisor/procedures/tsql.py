"""The collection T-SQL: one body, shipped as an ad-hoc batch or as ``collector.usp_collect_snapshot``.

The body returns the result sets of :mod:`supervisor.procedures.resultsets`, in that order, every
column CAST to the contract's type and aliased with the contract's name.

Deployment choice: **separate batches, no EXEC wrapping.** ``CREATE OR ALTER PROCEDURE`` must be the
first statement of its batch, so :func:`install_batches` returns the schema batch and the procedure
batch as two strings that ``procedures deploy`` sends one after the other over ODBC (``GO`` is a
client-tool separator, never sent). The procedure text therefore stays readable in ``sys.sql_modules``
with no doubled quotes, and the very same body text is parsed and tested. :func:`install_script` is
those batches joined with ``GO`` lines, for humans (``procedures --print``, SSMS, sqlcmd).
``CREATE OR ALTER`` needs SQL Server 2016 SP1 or later.

Microsoft documentation for the objects read (column names and types checked against these pages):

- https://learn.microsoft.com/en-us/sql/t-sql/functions/serverproperty-transact-sql
- https://learn.microsoft.com/en-us/sql/relational-databases/system-dynamic-management-views/sys-dm-os-sys-info-transact-sql
- https://learn.microsoft.com/en-us/sql/relational-databases/system-dynamic-management-views/sys-dm-os-ring-buffers-transact-sql
- https://learn.microsoft.com/en-us/sql/relational-databases/system-dynamic-management-views/sys-dm-os-sys-memory-transact-sql
- https://learn.microsoft.com/en-us/sql/relational-databases/system-dynamic-management-views/sys-dm-os-performance-counters-transact-sql
- https://learn.microsoft.com/en-us/sql/relational-databases/system-dynamic-management-views/sys-dm-os-wait-stats-transact-sql
"""

from __future__ import annotations

import re
from functools import cache

from supervisor.procedures.benign_waits import benign_wait_types
from supervisor.procedures.resultsets import (
    ADHOC_BATCH_MARKER,
    CONTRACT_VERSION,
    PROCEDURE_NAME,
    PROCEDURE_QUALIFIED_NAME,
    PROCEDURE_SCHEMA,
)

#: What a wait type name may contain; anything else would be rendered into T-SQL unsafely.
WAIT_TYPE_NAME = re.compile(r"[A-Z0-9_]{1,60}")

_WAIT_LIST_WIDTH = 100

_SESSION_SETTINGS = """\
SET NOCOUNT ON;
SET TRANSACTION ISOLATION LEVEL READ UNCOMMITTED;
SET DEADLOCK_PRIORITY LOW;
-- XML .value() fails unless ARITHABORT is ON.
SET ARITHABORT ON;"""

# The sample time and the millisecond tick count are taken once, together, before anything else:
# every result set is stamped with this one instant, and ring-buffer timestamps are converted with it.
_SAMPLE_CLOCK = """\
DECLARE @sample_time_utc datetime2(7) = SYSUTCDATETIME();
DECLARE @ms_ticks bigint = (SELECT si.ms_ticks FROM sys.dm_os_sys_info AS si);"""

# SERVERPROPERTY returns sql_variant: cast to the contract's types. @@SERVERNAME is NULL on a
# renamed host until the server name is re-registered. sys.dm_os_host_info does not exist before
# SQL Server 2017, so the platform is read from @@VERSION.
_INSTANCE_SELECT = f"""\
-- result set 1: instance
SELECT
    CAST({CONTRACT_VERSION:d} AS int) AS contract_version,
    CAST(COALESCE(@@SERVERNAME, SERVERPROPERTY(N'ServerName')) AS nvarchar(128)) AS server_name,
    CAST(SERVERPROPERTY(N'ProductVersion') AS nvarchar(128)) AS product_version,
    CAST(SERVERPROPERTY(N'Edition') AS nvarchar(128)) AS edition,
    CAST(SERVERPROPERTY(N'EngineEdition') AS int) AS engine_edition,
    CAST(
        CASE WHEN @@VERSION LIKE N'%Linux%' THEN N'Linux' ELSE N'Windows' END AS nvarchar(32)
    ) AS host_platform,
    CAST(si.cpu_count AS int) AS cpu_count,
    CAST(si.sqlserver_start_time AS datetime2(7)) AS sqlserver_start_time,
    CAST(@sample_time_utc AS datetime2(7)) AS sample_time_utc
FROM sys.dm_os_sys_info AS si;"""

# `timestamp` and ms_ticks are both milliseconds since the computer started. DATEADD takes an int,
# so the bigint age is applied as whole seconds plus the millisecond remainder: no overflow, ever.
_CPU_SELECT = """\
-- result set 2: cpu
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
    CAST(rec.system_idle AS int) AS system_idle_percent
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

# object_name / counter_name are nchar(128), blank-padded, and object_name carries a
# 'SQLServer:' or 'MSSQL$<instance>:' prefix: trim, and match the object with LIKE only.
_COUNTER_PICKS: tuple[tuple[str, str, str], ...] = (
    ("total_server_memory_kb", "Memory Manager", "Total Server Memory (KB)"),
    ("target_server_memory_kb", "Memory Manager", "Target Server Memory (KB)"),
    ("user_connections", "General Statistics", "User Connections"),
    ("batch_requests_total", "SQL Statistics", "Batch Requests/sec"),
)


def _counter_pick(alias: str, object_suffix: str, counter: str) -> str:
    return f"""\
        MAX(CASE
            WHEN RTRIM(pc.[object_name]) LIKE N'%:{object_suffix}'
                AND RTRIM(pc.counter_name) = N'{counter}'
            THEN pc.cntr_value
        END) AS {alias}"""


def _counter_filter() -> str:
    objects = sorted({obj for _, obj, _ in _COUNTER_PICKS})
    return "\n        OR ".join(f"RTRIM(pc.[object_name]) LIKE N'%:{obj}'" for obj in objects)


def _counters_select() -> str:
    picks = ",\n".join(_counter_pick(*pick) for pick in _COUNTER_PICKS)
    outer = ",\n".join(f"    CAST(pcv.{alias} AS bigint) AS {alias}" for alias, _, _ in _COUNTER_PICKS)
    return f"""\
-- result set 3: counters
SELECT
    CAST(sm.total_physical_memory_kb AS bigint) AS total_physical_memory_kb,
    CAST(sm.available_physical_memory_kb AS bigint) AS available_physical_memory_kb,
{outer}
FROM sys.dm_os_sys_memory AS sm
CROSS JOIN (
    SELECT
{picks}
    FROM sys.dm_os_performance_counters AS pc
    WHERE
        {_counter_filter()}
) AS pcv;"""


def _checked_wait_types() -> list[str]:
    names = sorted(benign_wait_types())
    bad = [name for name in names if not WAIT_TYPE_NAME.fullmatch(name)]
    if bad:
        raise ValueError(f"benign wait type names must match [A-Z0-9_]{{1,60}}: {bad!r}")
    return names


def benign_wait_list_sql(indent: str = "        ") -> str:
    """The benign wait types as a sorted, comma-separated list of N'...' literals, wrapped."""
    lines: list[str] = []
    for literal in (f"N'{name}'" for name in _checked_wait_types()):
        if lines and len(indent) + len(lines[-1]) + len(literal) + 2 <= _WAIT_LIST_WIDTH:
            lines[-1] = f"{lines[-1]}, {literal}"
        else:
            lines.append(literal)
    return f",\n{indent}".join(lines)


def _waits_select() -> str:
    return f"""\
-- result set 4: waits
SELECT
    CAST(ws.wait_type AS nvarchar(60)) AS wait_type,
    CAST(ws.waiting_tasks_count AS bigint) AS waiting_tasks_count,
    CAST(ws.wait_time_ms AS bigint) AS wait_time_ms,
    CAST(ws.signal_wait_time_ms AS bigint) AS signal_wait_time_ms
FROM sys.dm_os_wait_stats AS ws
WHERE
    ws.waiting_tasks_count <> 0
    AND ws.wait_type NOT IN (
        {benign_wait_list_sql()}
    )
ORDER BY ws.wait_type;"""


@cache
def body() -> str:
    """The statements shared by the ad-hoc batch and the procedure (no marker, no CREATE)."""
    parts = (
        _SESSION_SETTINGS,
        _SAMPLE_CLOCK,
        _INSTANCE_SELECT,
        _CPU_SELECT,
        _counters_select(),
        _waits_select(),
    )
    return "\n\n".join(parts) + "\n"


def snapshot_batch() -> str:
    """The body as one ad-hoc batch (no ``GO``); its first line is ``ADHOC_BATCH_MARKER``.

    Unlike in the procedure, the batch's SET options stay on the connection after it runs.
    """
    return f"{ADHOC_BATCH_MARKER}\n{body()}"


_PERMISSIONS_NOTE = """\
-- Permissions: the caller needs EXECUTE on the procedure and, because server-level DMV permissions
-- are checked against the caller (no ownership chaining), VIEW SERVER STATE on the server.
-- SQL Server 2022 and later: VIEW SERVER PERFORMANCE STATE suffices. Without it: error 300 / 297."""


def _schema_batch() -> str:
    return f"""\
-- collector-supervisor: install {PROCEDURE_QUALIFIED_NAME} (contract v{CONTRACT_VERSION:d})
{_PERMISSIONS_NOTE}
IF SCHEMA_ID(N'{PROCEDURE_SCHEMA}') IS NULL
    EXEC (N'CREATE SCHEMA {PROCEDURE_SCHEMA}');
"""


def _procedure_batch() -> str:
    indented = "\n".join(f"    {line}" if line else "" for line in body().splitlines())
    return f"""\
CREATE OR ALTER PROCEDURE {PROCEDURE_SCHEMA}.{PROCEDURE_NAME}
AS
BEGIN
{indented}
END;
"""


@cache
def _install_batches() -> tuple[str, ...]:
    return (_schema_batch(), _procedure_batch())


def install_batches() -> list[str]:
    """The batches ``procedures deploy`` sends one by one (schema first, then the procedure)."""
    return list(_install_batches())


def install_script() -> str:
    """:func:`install_batches` joined with ``GO`` lines: for humans and client tools, not for ODBC."""
    return "".join(f"{batch.rstrip()}\nGO\n" for batch in _install_batches())


def exec_statement() -> str:
    """The ODBC call escape for the procedure (sent as an RPC by the driver)."""
    return f"{{CALL {PROCEDURE_QUALIFIED_NAME}}}"


def exec_batch() -> str:
    """The procedure call as a plain T-SQL batch."""
    return f"EXEC {PROCEDURE_QUALIFIED_NAME};"
