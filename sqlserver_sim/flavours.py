"""Each simulated server plays one SQL Server flavour: which ``sys.*`` views exist, with which columns, and
what reading them needs, from the documented catalog (``supervisor.procedures.catalog`` / ``permissions``).

Fleet fields (``fleet.py``): ``engine_edition`` (5 Azure SQL Database, 8 Managed Instance, anything else boxed),
``version`` (boxed: its major picks the views and permission names, 13 = 2016 … 17 = 2025), ``host_platform``,
``grants`` (the permissions the login holds; default ``VIEW SERVER STATE`` on boxed and MI, ``VIEW DATABASE
STATE`` on Azure SQL Database; ``sysadmin`` / ``server admin`` hold everything, ``[]`` nothing),
``elastic_pool`` (Azure SQL Database: server-level DMVs need ``##MS_ServerStateReader##``) and ``databases``
(the databases a login may go to; any name when absent). The ``permission_denied`` fault is a login without
any grant for the collection.

What the real engine does and the simulator does too: a view the flavour lacks fails its statement with error
208 when the statement runs (deferred name resolution: a branch that does not run never fails); a column a
view lacks fails the whole batch (or ``CREATE PROCEDURE``) with error 207 before anything runs; a view the
login may not read fails with 300 (server level: ``VIEW SERVER STATE``, on 2022+ and MI ``VIEW SERVER
PERFORMANCE STATE``) or 262 (``VIEW DATABASE STATE``), then 297; ``sys.dm_exec_sessions`` shows only the
login's own session instead.
"""

from __future__ import annotations

from functools import lru_cache

from sqlserver_sim.fleet import ServerSpec
from sqlserver_sim.statements import Step, error_step
from sqlserver_sim.tokens import DONE_ERROR
from supervisor.procedures import catalog, permissions

#: Without ``grants`` in the fleet entry: the flavour's state permission, and db_owner (so deploys work).
DEFAULT_GRANTS = {
    catalog.BOXED: (permissions.VIEW_SERVER_STATE, permissions.DB_OWNER),
    catalog.MANAGED_INSTANCE: (permissions.VIEW_SERVER_STATE, permissions.DB_OWNER),
    catalog.AZURE_SQL_DATABASE: (permissions.VIEW_DATABASE_STATE, permissions.DB_OWNER),
}
#: What lets a login create the collector schema and procedure.
CREATORS = frozenset({permissions.DB_OWNER, "db_ddladmin", "CREATE PROCEDURE", permissions.SYSADMIN,
                      permissions.CONTROL_SERVER, permissions.SERVER_ADMIN})


def grants(spec: ServerSpec) -> frozenset[str]:
    if spec.faults.permission_denied:
        return frozenset()
    return frozenset(spec.grants if spec.grants is not None else DEFAULT_GRANTS[spec.flavour])


def view_of(spec: ServerSpec, name: str) -> catalog.View | None:
    """The view ``name`` if this server has it."""
    return _view_of(name, spec.flavour, spec.major)


@lru_cache(maxsize=1024)
def _view_of(name: str, flavour: str, major: int) -> catalog.View | None:
    view = catalog.view(name)
    return view if view is not None and view.exists(flavour, major) else None


def has_column(spec: ServerSpec, name: str, column: str) -> bool:
    view = view_of(spec, name)
    return view is not None and view.has_column(column.lower(), spec.flavour, spec.major)


def access(spec: ServerSpec, name: str) -> permissions.Requirement | None:
    """What reading the view ``name`` needs and the login lacks, or None when it may read it."""
    return _access(name, spec.flavour, spec.major, spec.elastic_pool, grants(spec))


@lru_cache(maxsize=4096)
def _access(
    name: str, flavour: str, major: int, elastic_pool: bool, held: frozenset[str]
) -> permissions.Requirement | None:
    view = _view_of(name, flavour, major)
    if view is None:
        return None
    requirement = permissions.required(view.scope(flavour, major), flavour, major, elastic_pool=elastic_pool)
    if requirement is None or held & requirement.satisfied_by:
        return None
    return requirement


def sees_own_rows_only(spec: ServerSpec, name: str) -> bool:
    view = view_of(spec, name)
    return view is not None and view.flavours[spec.flavour].denied == catalog.OWN_ROWS


def create_denied(spec: ServerSpec, what: str, database: str) -> Step | None:
    """Error 262 when the login may not create ``what`` (SCHEMA, PROCEDURE) in ``database``, else None."""
    if grants(spec) & CREATORS:
        return None
    return error_step(262, f"CREATE {what} permission denied in database '{database}'.", severity=14)


def invalid_object(name: str, procedure: str = "") -> Step:
    return error_step(208, f"Invalid object name '{name}'.", state=1, procedure=procedure)


def invalid_column(column: str, procedure: str = "") -> Step:
    return error_step(207, f"Invalid column name '{column}'.", state=1, procedure=procedure)


def permission_denied(requirement: permissions.Requirement, database: str, procedure: str = "") -> Step:
    severity = 14
    first = error_step(requirement.error_number, requirement.message(database), severity=severity,
                       state=1, procedure=procedure)
    second = error_step(297, "The user does not have permission to perform this action.", procedure=procedure)
    return Step(first.tokens + second.tokens, DONE_ERROR)


def database_refused(spec: ServerSpec, database: str) -> bool:
    """True when a login may not go to ``database`` (then error 4060 and 18456, as SQL Server answers)."""
    return spec.databases is not None and database.lower() not in {name.lower() for name in spec.databases}
