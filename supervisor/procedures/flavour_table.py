"""Where each stored metric (CONTRACT §4 ``metric_snapshots``, ``wait_stats``) comes from on each flavour, and
which are NULL there and why: the one table README's "SQL Server flavours" section shows (``markdown()``) and
the collector's flavour tests check stored snapshots against.
"""

from __future__ import annotations

from supervisor.procedures import permissions
from supervisor.procedures.catalog import AZURE_SQL_DATABASE, BOXED, MANAGED_INSTANCE

BOXED_LINUX = "boxed_linux"
#: The table's columns: boxed SQL Server on Windows and on Linux, then the Azure flavours.
COLUMNS = (BOXED, BOXED_LINUX, MANAGED_INSTANCE, AZURE_SQL_DATABASE)
TITLES = {
    BOXED: "SQL Server 2016 SP1-2025, Windows",
    BOXED_LINUX: "SQL Server 2017-2025, Linux",
    MANAGED_INSTANCE: "Azure SQL Managed Instance (EngineEdition 8)",
    AZURE_SQL_DATABASE: "Azure SQL Database (EngineEdition 5), per database",
}
_RING = "newest `RING_BUFFER_SCHEDULER_MONITOR` record of `sys.dm_os_ring_buffers` (one a minute)"
_COUNTER = "`sys.dm_os_performance_counters`"
_NULL = None

#: metric -> flavour -> where the value comes from (text), or None: always NULL there (reason in NULL_REASONS).
SOURCES: dict[str, dict[str, str | None]] = {
    "cpu_percent": {
        BOXED: f"SQL Server process: `ProcessUtilization` of the {_RING}",
        BOXED_LINUX: f"SQL Server process: `ProcessUtilization` of the {_RING}",
        MANAGED_INSTANCE: "`sys.server_resource_stats.avg_cpu_percent`, newest 15 s interval: the instance's CPU as "
        "% of its vCore limit (published a few minutes late)",
        AZURE_SQL_DATABASE: "`sys.dm_db_resource_stats.avg_cpu_percent`, newest 15 s interval: the database's CPU "
        "as % of its service tier's limit",
    },
    "system_cpu_percent": {
        BOXED: "whole host: max(100 - `SystemIdle`, SQL CPU) of the same record",
        BOXED_LINUX: _NULL,
        MANAGED_INSTANCE: _NULL,
        AZURE_SQL_DATABASE: "`sys.dm_db_resource_stats.avg_instance_cpu_percent`: the instance hosting the database "
        "(an elastic pool's) as % of its limit",
    },
    "memory_percent": {
        BOXED: "host physical memory in use: `sys.dm_os_sys_memory` (total - available) / total",
        BOXED_LINUX: "host physical memory in use: `sys.dm_os_sys_memory` (total - available) / total",
        MANAGED_INSTANCE: "`sys.dm_os_sys_memory` of the instance's virtual machine, (total - available) / total",
        AZURE_SQL_DATABASE: "`sys.dm_db_resource_stats.avg_memory_usage_percent`: memory used as % of the service "
        "tier's limit",
    },
    "sql_memory_mb": {
        flavour: f"`Total Server Memory (KB)` of {_COUNTER}" + (
            " (the instance hosting the database)" if flavour == AZURE_SQL_DATABASE else "")
        for flavour in COLUMNS
    },
    "sql_target_memory_mb": {
        flavour: f"`Target Server Memory (KB)` of {_COUNTER}" + (
            " (the instance hosting the database)" if flavour == AZURE_SQL_DATABASE else "")
        for flavour in COLUMNS
    },
    "connection_count": {
        BOXED: f"`User Connections` of {_COUNTER}",
        BOXED_LINUX: f"`User Connections` of {_COUNTER}",
        MANAGED_INSTANCE: f"`User Connections` of {_COUNTER}",
        AZURE_SQL_DATABASE: "user sessions in this database: `sys.dm_exec_sessions` (`is_user_process = 1`, "
        "`database_id = DB_ID()`)",
    },
    "batch_requests_per_sec": {
        flavour: f"Δ `Batch Requests/sec` of {_COUNTER} / Δ server time" + (
            " (the hosting instance's: in an elastic pool, the pool's)" if flavour == AZURE_SQL_DATABASE else "")
        for flavour in COLUMNS
    },
    "wait_stats": {
        BOXED: "increments of `sys.dm_os_wait_stats`",
        BOXED_LINUX: "increments of `sys.dm_os_wait_stats`",
        MANAGED_INSTANCE: "increments of `sys.dm_os_wait_stats`",
        AZURE_SQL_DATABASE: "increments of `sys.dm_db_wait_stats` (this database's waits)",
    },
}  # fmt: skip

NULL_REASONS: dict[tuple[str, str], str] = {
    ("system_cpu_percent", BOXED_LINUX): "`SystemIdle` is always 0 on Linux, so the host's other load is unknown",
    ("system_cpu_percent", MANAGED_INSTANCE): "the host is hidden (no idle figure, no host view)",
}

#: The permission each flavour's collection needs (``permissions.py``; ``procedures --print --grants``).
PERMISSIONS = {
    BOXED: f"{permissions.VIEW_SERVER_STATE} (2016-2019); {permissions.VIEW_SERVER_PERFORMANCE_STATE} (2022+)",
    BOXED_LINUX: f"{permissions.VIEW_SERVER_STATE} (2017-2019); {permissions.VIEW_SERVER_PERFORMANCE_STATE} (2022+)",
    MANAGED_INSTANCE: permissions.VIEW_SERVER_PERFORMANCE_STATE,
    AZURE_SQL_DATABASE: f"{permissions.VIEW_DATABASE_STATE} in the database",
}


def null_metrics(flavour: str) -> set[str]:
    """The stored metrics that are always NULL on ``flavour`` (a ``COLUMNS`` key)."""
    return {metric for metric, sources in SOURCES.items() if sources[flavour] is None}


def markdown() -> str:
    """The flavours x metrics table (with the permission row), as README shows it."""
    header = "| metric | " + " | ".join(TITLES[flavour] for flavour in COLUMNS) + " |"
    lines = [header, "|---" * (len(COLUMNS) + 1) + "|"]
    for metric, sources in SOURCES.items():
        cells = [sources[f] or f"NULL: {NULL_REASONS[(metric, f)]}" for f in COLUMNS]
        lines.append(f"| `{metric}` | " + " | ".join(cells) + " |")
    lines.append("| permission | " + " | ".join(PERMISSIONS[f] for f in COLUMNS) + " |")
    return "\n".join(lines)
