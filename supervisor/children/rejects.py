"""A batch the tenant DB will not take whole: stored item by item, each item it rejects dropped with its
reason on the server's row. And which DB errors are an outage (worth retrying the batch) at all."""

from __future__ import annotations

import logging
import re
from dataclasses import replace

from sqlalchemy import Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, ProgrammingError, SQLAlchemyError, StatementError

from supervisor.children.persist import write_items
from supervisor.children.records import WriteItem
from supervisor.errors import INTERNAL, STORAGE
from supervisor.logs import log_event
from supervisor.storage import tenant_schema
from supervisor.storage.engine import describe_db_error

log = logging.getLogger("supervisor.child.writer")


def is_outage(exc: BaseException) -> bool:
    """Connection trouble, locks, missing tables or columns, missing privileges, a required column the collector
    does not know: worth retrying. Other integrity/data errors are not, nor a value SQLAlchemy cannot bind (a
    ``StatementError`` that is no DBAPI error: the statement never reached the DB), nor an error that is not the
    DB's."""
    if isinstance(exc, IntegrityError) and _required_column_not_ours(exc):
        return True
    if not isinstance(exc, SQLAlchemyError) or isinstance(exc, IntegrityError | DataError):
        return False
    if isinstance(exc, StatementError) and not isinstance(exc, DBAPIError):
        return False
    if isinstance(exc, ProgrammingError):
        # SQLSTATE class 42 (PostgreSQL): a missing table or column, a revoked privilege: the schema or the grants,
        # which an operator mends, not this item's values (a value the driver cannot adapt has no SQLSTATE).
        sqlstate = str(getattr(exc.orig, "sqlstate", None) or "")
        return sqlstate.startswith("42") or "does not exist" in str(exc) or "no such table" in str(exc)
    return True


def _required_column_not_ours(exc: IntegrityError) -> bool:
    """A NOT NULL column added by another program's migration (the web app's): every result fails alike, so this
    is the schema, mended by an operator, not the values of one result."""
    diag = getattr(exc.orig, "diag", None)  # PostgreSQL: SQLSTATE 23502 names the table and column
    if diag is not None and str(getattr(exc.orig, "sqlstate", "")) == "23502":
        table, column = diag.table_name, diag.column_name
    else:  # SQLite: "NOT NULL constraint failed: metric_snapshots.source"
        found = re.search(r"NOT NULL constraint failed: (\w+)\.(\w+)", str(exc.orig))
        if found is None:
            return False
        table, column = found.groups()
    ours = tenant_schema.metadata.tables.get(table or "")
    return ours is not None and column not in ours.columns


def store_one_by_one(engine: Engine, batch: list[WriteItem], tenant: str) -> int:
    """A batch the DB rejects as data (not an outage), or that fails unexpectedly: keep every item that can be
    stored, drop the rest with one line each. Returns the snapshots written; an outage is raised."""
    written = 0
    for item in batch:
        try:
            with engine.begin() as conn:
                written += write_items(conn, [item])
        except Exception as exc:
            if is_outage(exc):
                raise
            _drop(engine, item, exc, tenant)
    return written


def _drop(engine: Engine, item: WriteItem, exc: Exception, tenant: str) -> None:
    """One ERROR line, and the reason on the server's row."""
    if isinstance(exc, SQLAlchemyError):
        error, error_class, reason = describe_db_error(exc), STORAGE, "the tenant DB rejected its result"
    else:
        error, error_class, reason = f"{type(exc).__name__}: {exc}", INTERNAL, "its result could not be stored"
    log_event(log, logging.ERROR, "writer.rejected", "dropping a result of server id %s: %s: %s", item.server_id,
              reason, error, tenant=tenant, error_class=error_class, error=error)  # fmt: skip
    if error_class == INTERNAL:
        log.debug("why the result could not be stored", exc_info=exc, extra={"tenant": tenant})
    status = replace(item.status, success=False, error=f"{reason}: {error}", error_class=STORAGE)
    try:
        with engine.begin() as conn:
            write_items(conn, [WriteItem(server_id=item.server_id, status=status)])
    except Exception as status_exc:
        if is_outage(status_exc):
            raise
        log.debug("the status of server id %s was not stored either", item.server_id, exc_info=True,
                  extra={"tenant": tenant})  # fmt: skip
