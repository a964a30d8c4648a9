"""Which ``sys.*`` views exist on which SQL Server flavour and version, with which columns, needing which
permission: the facts the collection T-SQL (``tsql.py``) is checked against (``tests/test_catalog.py``) and the
simulator plays (``sqlserver_sim``). Gathered from Microsoft's documentation, the page of each view beside it
(``View.doc``); nothing here is guessed from a running server.

Flavours are chosen by ``SERVERPROPERTY('EngineEdition')``: 5 Azure SQL Database, 8 Azure SQL Managed Instance,
anything else boxed SQL Server (2 Standard, 3 Enterprise/Developer, 4 Express; Windows or Linux). Versions
matter for boxed SQL Server only (the major of ProductVersion: 13 = 2016 … 17 = 2025); the Azure flavours are
versionless (they report 12.0.2000.8 or the major of their update policy and have every view listed for them).

A view listed for a flavour exists there; elsewhere a query of it fails with error 208 (invalid object name),
which SQL Server raises when the statement runs (deferred name resolution), not when the batch is compiled. A
column a view lacks fails the whole batch at compile time (error 207), whether its statement runs or not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

BOXED = "boxed"
MANAGED_INSTANCE = "managed_instance"
AZURE_SQL_DATABASE = "azure_sql_database"
FLAVOURS = (BOXED, MANAGED_INSTANCE, AZURE_SQL_DATABASE)
FLAVOUR_TITLES = {
    BOXED: "SQL Server 2016 SP1 - 2025 (Windows, Linux)",
    MANAGED_INSTANCE: "Azure SQL Managed Instance",
    AZURE_SQL_DATABASE: "Azure SQL Database",
}
ENGINE_EDITIONS = {5: AZURE_SQL_DATABASE, 8: MANAGED_INSTANCE}
#: Boxed majors the collection supports: 2016 (SP1 and later), 2017, 2019, 2022, 2025.
BOXED_MAJORS = (13, 14, 15, 16, 17)
#: From this boxed major on, the granular permissions (VIEW SERVER PERFORMANCE STATE, …) exist.
GRANULAR_PERMISSIONS_MAJOR = 16

#: What reading a view needs (``permissions.required``): a server-level permission (VIEW SERVER STATE; 2022+
#: and MI: VIEW SERVER PERFORMANCE STATE), a database-level one (VIEW DATABASE STATE), none, or on Azure SQL
#: Database a database-level one that becomes the server role ##MS_ServerStateReader## in elastic pools (and on
#: the Basic, S0 and S1 service objectives).
SERVER = "server"
DATABASE = "database"
DATABASE_OR_POOL_SERVER = "database, server role in elastic pools"
PUBLIC = "public"
#: What a query gets without the permission: an error (300 or 262, then 297), or only the caller's own rows.
ERROR = "error"
OWN_ROWS = "own rows"

_DMV = "https://learn.microsoft.com/en-us/sql/relational-databases/system-dynamic-management-views/"
_CATALOG = "https://learn.microsoft.com/en-us/sql/relational-databases/system-catalog-views/"


@dataclass(frozen=True)
class Availability:
    scope: str
    #: Boxed only: the first major that has the view (None: every supported version).
    since: int | None = None
    #: Boxed only: below this major the view needs no permission (``PUBLIC``).
    public_before: int | None = None
    denied: str = ERROR


@dataclass(frozen=True)
class View:
    name: str
    doc: str
    columns: tuple[str, ...]
    flavours: Mapping[str, Availability]
    #: Boxed: the first major that has a column (others: every version the view exists in).
    column_since: Mapping[str, int] = field(default_factory=dict)

    def exists(self, flavour: str, major: int) -> bool:
        availability = self.flavours.get(flavour)
        if availability is None:
            return False
        return flavour != BOXED or availability.since is None or major >= availability.since

    def has_column(self, column: str, flavour: str, major: int) -> bool:
        if column not in self.columns or not self.exists(flavour, major):
            return False
        since = self.column_since.get(column)
        return flavour != BOXED or since is None or major >= since

    def scope(self, flavour: str, major: int) -> str:
        availability = self.flavours[flavour]
        if flavour == BOXED and availability.public_before is not None and major < availability.public_before:
            return PUBLIC
        return availability.scope


_WAIT_COLUMNS = ("wait_type", "waiting_tasks_count", "wait_time_ms", "max_wait_time_ms", "signal_wait_time_ms")

VIEWS: dict[str, View] = {
    view.name: view
    for view in (
        View(
            "sys.dm_os_sys_info",
            _DMV + "sys-dm-os-sys-info-transact-sql",
            ("cpu_ticks", "ms_ticks", "cpu_count", "hyperthread_ratio", "physical_memory_kb", "committed_kb",
             "committed_target_kb", "max_workers_count", "scheduler_count", "sqlserver_start_time_ms_ticks",
             "sqlserver_start_time", "virtual_machine_type", "virtual_machine_type_desc"),
            {BOXED: Availability(SERVER), MANAGED_INSTANCE: Availability(SERVER),
             AZURE_SQL_DATABASE: Availability(DATABASE)},
        ),
        View(
            "sys.dm_os_ring_buffers",
            _DMV + "sys-dm-os-ring-buffers-transact-sql",
            ("ring_buffer_address", "ring_buffer_type", "timestamp", "record", "ring_buffer_group", "create_time"),
            {BOXED: Availability(SERVER), MANAGED_INSTANCE: Availability(SERVER),
             AZURE_SQL_DATABASE: Availability(DATABASE_OR_POOL_SERVER)},
            column_since={"ring_buffer_group": 17, "create_time": 17},
        ),
        View(
            "sys.dm_os_sys_memory",
            _DMV + "sys-dm-os-sys-memory-transact-sql",
            ("total_physical_memory_kb", "available_physical_memory_kb", "total_page_file_kb",
             "available_page_file_kb", "system_cache_kb", "kernel_paged_pool_kb", "kernel_nonpaged_pool_kb",
             "system_high_memory_signal_state", "system_low_memory_signal_state", "system_memory_state_desc"),
            {BOXED: Availability(SERVER), MANAGED_INSTANCE: Availability(SERVER)},
        ),
        View(
            "sys.dm_os_performance_counters",
            _DMV + "sys-dm-os-performance-counters-transact-sql",
            ("object_name", "counter_name", "instance_name", "cntr_value", "cntr_type"),
            {BOXED: Availability(SERVER), MANAGED_INSTANCE: Availability(SERVER),
             AZURE_SQL_DATABASE: Availability(DATABASE)},
        ),
        View(
            "sys.dm_os_wait_stats",
            _DMV + "sys-dm-os-wait-stats-transact-sql",
            _WAIT_COLUMNS,
            {BOXED: Availability(SERVER), MANAGED_INSTANCE: Availability(SERVER),
             AZURE_SQL_DATABASE: Availability(DATABASE_OR_POOL_SERVER)},
        ),
        View(
            "sys.dm_db_wait_stats",
            _DMV + "sys-dm-db-wait-stats-azure-sql-database",
            _WAIT_COLUMNS,
            {AZURE_SQL_DATABASE: Availability(DATABASE), MANAGED_INSTANCE: Availability(DATABASE)},
        ),
        View(
            "sys.dm_db_resource_stats",
            _DMV + "sys-dm-db-resource-stats-azure-sql-database",
            ("end_time", "avg_cpu_percent", "avg_data_io_percent", "avg_log_write_percent",
             "avg_memory_usage_percent", "xtp_storage_percent", "max_worker_percent", "max_session_percent",
             "dtu_limit", "cpu_limit", "avg_instance_cpu_percent", "avg_instance_memory_percent",
             "avg_login_rate_percent", "replica_role"),
            {AZURE_SQL_DATABASE: Availability(DATABASE)},
        ),
        View(
            "sys.server_resource_stats",
            _CATALOG + "sys-server-resource-stats-azure-sql-database",
            ("start_time", "end_time", "resource_type", "resource_name", "sku", "hardware_generation",
             "virtual_core_count", "avg_cpu_percent", "reserved_storage_mb", "storage_space_used_mb", "io_request",
             "io_bytes_read", "io_bytes_written"),
            {MANAGED_INSTANCE: Availability(SERVER)},
        ),
        View(
            "sys.dm_exec_sessions",
            _DMV + "sys-dm-exec-sessions-transact-sql",
            ("session_id", "login_time", "host_name", "program_name", "login_name", "status", "cpu_time",
             "memory_usage", "last_request_start_time", "last_request_end_time", "is_user_process",
             "database_id", "open_transaction_count"),
            {BOXED: Availability(SERVER, denied=OWN_ROWS), MANAGED_INSTANCE: Availability(SERVER, denied=OWN_ROWS),
             AZURE_SQL_DATABASE: Availability(DATABASE, denied=OWN_ROWS)},
        ),
        View(
            "sys.dm_os_host_info",
            _DMV + "sys-dm-os-host-info-transact-sql",
            ("host_platform", "host_distribution", "host_release", "host_service_pack_level", "host_sku",
             "os_language_version"),
            {BOXED: Availability(SERVER, since=14, public_before=GRANULAR_PERMISSIONS_MAJOR)},
        ),
    )
}  # fmt: skip


def flavour_of(engine_edition: int) -> str:
    return ENGINE_EDITIONS.get(engine_edition, BOXED)


def view(name: str) -> View | None:
    """The catalog entry of ``name`` (``sys.x``, brackets and case ignored), or None when no flavour has it."""
    parts = [part.strip().strip("[]").lower() for part in name.split(".")]
    return VIEWS.get(".".join(parts[-2:]))
