"""What the monitoring login needs on each flavour, the error SQL Server gives without it, and the T-SQL that
grants it (``procedures --print --grants``).

From Microsoft's documentation of each view (``catalog.View.doc``) and of the permissions: server-scoped DMVs
need VIEW SERVER STATE; SQL Server 2022 (16.x) and later, and Managed Instance, split it and VIEW SERVER
PERFORMANCE STATE suffices (VIEW SERVER STATE still implies it); Azure SQL Database checks VIEW DATABASE STATE
on the database, except that server-level DMVs in elastic pools (and on Basic, S0, S1) need the server role
##MS_ServerStateReader##. Without it a query fails with error 300 (server level) or 262 (database level), then
297; a few views (sys.dm_exec_sessions) return only the caller's own rows instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from supervisor.procedures.catalog import (
    AZURE_SQL_DATABASE,
    BOXED,
    DATABASE_OR_POOL_SERVER,
    FLAVOUR_TITLES,
    FLAVOURS,
    GRANULAR_PERMISSIONS_MAJOR,
    PUBLIC,
    SERVER,
    VIEWS,
)
from supervisor.procedures.resultsets import PROCEDURE_QUALIFIED_NAME
from supervisor.procedures.selects import VIEWS_READ

VIEW_SERVER_STATE = "VIEW SERVER STATE"
VIEW_SERVER_PERFORMANCE_STATE = "VIEW SERVER PERFORMANCE STATE"
VIEW_DATABASE_STATE = "VIEW DATABASE STATE"
VIEW_DATABASE_PERFORMANCE_STATE = "VIEW DATABASE PERFORMANCE STATE"
SERVER_STATE_READER = "##MS_ServerStateReader##"
#: Holders of everything (the simulator's fleet file may grant these too).
SYSADMIN = "sysadmin"
CONTROL_SERVER = "CONTROL SERVER"
SERVER_ADMIN = "server admin"
DB_OWNER = "db_owner"


@dataclass(frozen=True)
class Requirement:
    permission: str  # what the error and the grants name
    satisfied_by: frozenset[str]
    error_number: int  # 300 (server level) or 262 (database level); 297 follows either

    def message(self, database: str) -> str:
        if self.error_number == 262:
            return f"{self.permission} permission denied in database '{database}'."
        return f"{self.permission} permission was denied on object 'server', database 'master'."


_SERVER_ALL = frozenset({SYSADMIN, CONTROL_SERVER, SERVER_ADMIN})


def required(scope: str, flavour: str, major: int, *, elastic_pool: bool = False) -> Requirement | None:
    """What reading a view of ``scope`` (``catalog``) needs on ``flavour`` (``major``: boxed only)."""
    if scope == PUBLIC:
        return None
    granular = flavour != BOXED or major >= GRANULAR_PERMISSIONS_MAJOR
    server_level = frozenset({VIEW_SERVER_STATE}) | _SERVER_ALL
    if granular:
        server_level |= {VIEW_SERVER_PERFORMANCE_STATE}
    if scope == SERVER:
        name = VIEW_SERVER_PERFORMANCE_STATE if granular else VIEW_SERVER_STATE
        return Requirement(name, server_level, 300)
    if scope == DATABASE_OR_POOL_SERVER and flavour == AZURE_SQL_DATABASE and elastic_pool:
        return Requirement(VIEW_SERVER_PERFORMANCE_STATE, frozenset({SERVER_STATE_READER, SERVER_ADMIN}), 300)
    database_level = frozenset({VIEW_DATABASE_STATE, VIEW_DATABASE_PERFORMANCE_STATE, DB_OWNER})
    if flavour != AZURE_SQL_DATABASE:
        database_level |= server_level  # server-level state permissions imply the database-level ones
    return Requirement(VIEW_DATABASE_STATE, database_level | {SERVER_ADMIN}, 262)


def views_needing(flavour: str, major: int) -> dict[str, list[str]]:
    """permission → the views the collection reads on ``flavour`` that need it."""
    needs: dict[str, list[str]] = {}
    for name in VIEWS_READ[flavour]:
        requirement = required(VIEWS[name].scope(flavour, major), flavour, major)
        if requirement is not None:
            needs.setdefault(requirement.permission, []).append(name)
    return needs


def _views(flavour: str, major: int) -> str:
    lines = []
    for permission, names in views_needing(flavour, major).items():
        lines.append(f"-- {permission}: {', '.join(names)}")
    return "\n".join(lines)


def grants_script() -> str:
    """For each flavour: what the collection reads, the permission it needs, and the statements that grant it
    to a login named ``collector_monitor`` (rename as you like; passwords are placeholders)."""
    execute = f"GRANT EXECUTE ON OBJECT::{PROCEDURE_QUALIFIED_NAME} TO collector_monitor;"
    procedure = (
        "-- Only where the procedure is deployed (procedures deploy), in the server's --database (master):\n"
        f"-- CREATE USER collector_monitor FOR LOGIN collector_monitor;\n-- {execute}"
    )
    database_procedure = f"-- Only where the procedure is deployed (procedures deploy):\n-- {execute}"
    sections = [
        f"""\
-- ==== {FLAVOUR_TITLES[BOXED]}, versions before 2022 (13.x-15.x) ====
{_views(BOXED, 15)}
USE master;
CREATE LOGIN collector_monitor WITH PASSWORD = N'<a strong password>';
GRANT VIEW SERVER STATE TO collector_monitor;
{procedure}
""",
        f"""\
-- ==== {FLAVOUR_TITLES[BOXED]}, 2022 (16.x) and later ====
{_views(BOXED, 16)}
-- VIEW SERVER STATE also works (it includes VIEW SERVER PERFORMANCE STATE).
USE master;
CREATE LOGIN collector_monitor WITH PASSWORD = N'<a strong password>';
GRANT VIEW SERVER PERFORMANCE STATE TO collector_monitor;
{procedure}
""",
        f"""\
-- ==== {FLAVOUR_TITLES["managed_instance"]} ====
{_views("managed_instance", 16)}
USE master;
CREATE LOGIN collector_monitor WITH PASSWORD = N'<a strong password>';
-- or, for an Entra ID identity (server add --auth entra-token): CREATE LOGIN [name] FROM EXTERNAL PROVIDER;
GRANT VIEW SERVER PERFORMANCE STATE TO collector_monitor;
{procedure}
""",
        f"""\
-- ==== {FLAVOUR_TITLES[AZURE_SQL_DATABASE]} (collected per database: server add --database) ====
{_views(AZURE_SQL_DATABASE, 16)}
-- In each monitored database (not master), a contained user:
CREATE USER collector_monitor WITH PASSWORD = N'<a strong password>';
-- or, for an Entra ID identity (server add --auth entra-token): CREATE USER [name] FROM EXTERNAL PROVIDER;
GRANT VIEW DATABASE STATE TO collector_monitor;
-- Elastic pools (and Basic, S0, S1): server-level DMVs need a server role instead; the views above do not,
-- but if a collection fails with error 300 naming VIEW SERVER PERFORMANCE STATE, in master:
--   CREATE LOGIN collector_monitor WITH PASSWORD = N'<a strong password>';
--   ALTER SERVER ROLE {SERVER_STATE_READER} ADD MEMBER collector_monitor;
-- The procedure can be deployed in the database (procedures deploy); else the ad-hoc batch is used.
{database_procedure}
""",
    ]
    assert len(sections) == len(FLAVOURS) + 1
    return "\n".join(sections)


#: SQL Server's own texts that name the permission (errors 300, 262 and 229).
_NAMES_IT = re.compile(r"permission (?:was )?denied", re.IGNORECASE)
PERMISSION_HINT = (
    "the monitoring login lacks the permission to read the server's state: VIEW SERVER STATE (SQL Server "
    "2016-2019), VIEW SERVER PERFORMANCE STATE (2022 and later, Managed Instance) or VIEW DATABASE STATE (Azure "
    "SQL Database); 'collector-supervisor procedures --print --grants' prints what to grant"
)


def with_permission_hint(message: str) -> str:
    """A permission failure's text, naming the permission when the driver's text does not (FreeTDS reports only
    the last error, 297, which names none)."""
    if _NAMES_IT.search(message):
        return message
    return f"{message} ({PERMISSION_HINT})"


#: What ``procedures deploy`` adds when the server refused to create the procedure (no permission to create it,
#: a read-only database or replica, …): the collection does not need it.
DEPLOY_REFUSED_HINT = (
    "the procedure cannot be created on this server or database; collections do not need it: with "
    "collection_mode auto (the default) or adhoc they send the same T-SQL as one ad-hoc batch"
)
