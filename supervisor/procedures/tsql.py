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

One body serves every flavour: after the sample clock and the instance set, ``IF @engine_edition = 5`` (Azure SQL
Database) / ``ELSE IF @engine_edition = 8`` (Managed Instance) / ``ELSE`` (boxed SQL Server) pick the statements
of result sets 2-4 (``selects.py``). A view a flavour lacks is only named inside the other flavours' branches:
SQL Server resolves it when the statement runs (deferred name resolution), so a branch that does not run
costs nothing. ``catalog.py`` names, for each view read, the flavours and versions that have it and the page of
Microsoft's documentation its columns and permissions were checked against.
"""

from __future__ import annotations

from functools import cache

from supervisor.procedures.catalog import AZURE_SQL_DATABASE, FLAVOURS, MANAGED_INSTANCE
from supervisor.procedures.resultsets import (
    ADHOC_BATCH_MARKER,
    CONTRACT_VERSION,
    PROCEDURE_NAME,
    PROCEDURE_QUALIFIED_NAME,
    PROCEDURE_SCHEMA,
)
from supervisor.procedures.selects import INSTANCE_SELECT, WAIT_TYPE_NAME, benign_wait_list_sql, flavour_selects

__all__ = ["WAIT_TYPE_NAME", "benign_wait_list_sql"]

_SESSION_SETTINGS = """\
SET NOCOUNT ON;
SET TRANSACTION ISOLATION LEVEL READ UNCOMMITTED;
SET DEADLOCK_PRIORITY LOW;
-- XML .value() fails unless ARITHABORT is ON.
SET ARITHABORT ON;"""

# The sample time and the millisecond tick count are taken once, together, before anything else: every
# result set is stamped with this one instant, and ring-buffer timestamps are converted with it. The flavour
# is read once too: it chooses the statements below (sys.dm_os_sys_info exists on every flavour).
_SAMPLE_CLOCK = """\
DECLARE @sample_time_utc datetime2(7) = SYSUTCDATETIME();
DECLARE @engine_edition int = CAST(SERVERPROPERTY(N'EngineEdition') AS int);
DECLARE @ms_ticks bigint = (SELECT si.ms_ticks FROM sys.dm_os_sys_info AS si);"""

#: The IF that picks each flavour's statements; boxed SQL Server is the ELSE (any other EngineEdition).
_CONDITIONS = {AZURE_SQL_DATABASE: "@engine_edition = 5", MANAGED_INSTANCE: "@engine_edition = 8"}
_BRANCH_ORDER = (AZURE_SQL_DATABASE, MANAGED_INSTANCE)
_FLAVOUR_NOTES = {
    AZURE_SQL_DATABASE: "-- Azure SQL Database: this database's resource stats and waits; no host figures.",
    MANAGED_INSTANCE: "-- Azure SQL Managed Instance: the boxed views where they exist, its resource stats for CPU.",
}
_BOXED_NOTE = "-- SQL Server 2016 SP1 - 2025, Windows and Linux."


def _indented(text: str, prefix: str = "    ") -> str:
    return "\n".join(f"{prefix}{line}" if line else "" for line in text.splitlines())


def flavour_statements(flavour: str) -> str:
    """Result sets 2-4 as ``flavour`` reads them (what its branch of the body holds)."""
    return "\n\n".join(flavour_selects(flavour))


def _branches() -> str:
    parts = []
    for index, flavour in enumerate(_BRANCH_ORDER):
        keyword = "IF" if index == 0 else "ELSE IF"
        inner = f"{_FLAVOUR_NOTES[flavour]}\n{flavour_statements(flavour)}"
        parts.append(f"{keyword} {_CONDITIONS[flavour]}\nBEGIN\n{_indented(inner)}\nEND")
    boxed = f"{_BOXED_NOTE}\n{flavour_statements('boxed')}"
    parts.append(f"ELSE\nBEGIN\n{_indented(boxed)}\nEND;")
    return "\n".join(parts)


@cache
def body() -> str:
    """The statements shared by the ad-hoc batch and the procedure (no marker, no CREATE)."""
    parts = (_SESSION_SETTINGS, _SAMPLE_CLOCK, INSTANCE_SELECT, _branches())
    return "\n\n".join(parts) + "\n"


def snapshot_batch() -> str:
    """The body as one ad-hoc batch (no ``GO``); its first line is ``ADHOC_BATCH_MARKER``.

    Unlike in the procedure, the batch's SET options stay on the connection after it runs.
    """
    return f"{ADHOC_BATCH_MARKER}\n{body()}"


def flavour_batch(flavour: str) -> str:
    """A batch with only ``flavour``'s statements, no IF: a collection written for that one flavour (what the
    tests send to the other flavours, which must refuse it as SQL Server would)."""
    assert flavour in FLAVOURS, flavour
    parts = (_SESSION_SETTINGS, _SAMPLE_CLOCK, INSTANCE_SELECT, flavour_statements(flavour))
    return f"{ADHOC_BATCH_MARKER}\n" + "\n\n".join(parts) + "\n"


_PERMISSIONS_NOTE = """\
-- Permissions: the caller needs EXECUTE on the procedure and, because DMV permissions are checked against
-- the caller (no ownership chaining), VIEW SERVER STATE on the server (SQL Server 2022 and later, Managed
-- Instance: VIEW SERVER PERFORMANCE STATE suffices); Azure SQL Database: VIEW DATABASE STATE on the database.
-- Without it: error 300 or 262, then 297. 'collector-supervisor procedures --print --grants' lists them."""


def _schema_batch() -> str:
    return f"""\
-- collector-supervisor: install {PROCEDURE_QUALIFIED_NAME} (contract v{CONTRACT_VERSION:d})
{_PERMISSIONS_NOTE}
IF SCHEMA_ID(N'{PROCEDURE_SCHEMA}') IS NULL
    EXEC (N'CREATE SCHEMA {PROCEDURE_SCHEMA}');
"""


def _procedure_batch() -> str:
    indented = _indented(body())
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
