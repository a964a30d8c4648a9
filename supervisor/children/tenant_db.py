"""The tenant DB as the child's start meets it: how long one statement may wait, how a failure reads, and the
one failure that is no outage (a schema newer than this collector's)."""

from __future__ import annotations

import logging

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from supervisor.config import Settings
from supervisor.errors import STORAGE, CollectorError
from supervisor.ipc import CHILD_EXIT_NEWER_SCHEMA
from supervisor.logs import log_event
from supervisor.storage.engine import describe_db_error, shown_engine_url
from supervisor.storage.migrations import TENANT_VERSION, NewerSchemaError

#: Longest wait of one tenant-DB statement (see ``db_call_timeout``): SQLite's busy timeout, PostgreSQL's
#: lock, statement and connect timeouts.
TENANT_DB_CALL_TIMEOUT = 10.0


def db_call_timeout(settings: Settings) -> float:
    """How long one tenant-DB statement may wait (a lock, a statement, a connect): bounded so that a stuck
    DB fails a read or a write, which is retried, and short enough that the first load's retries still send
    heartbeats in time."""
    return min(TENANT_DB_CALL_TIMEOUT, settings.heartbeat_timeout / 4)


def describe_failure(exc: BaseException) -> str:
    if isinstance(exc, CollectorError | SQLAlchemyError):
        return describe_db_error(exc) if isinstance(exc, SQLAlchemyError) else str(exc)
    return f"{type(exc).__name__}: {exc}"


def refuse_newer_schema(log: logging.Logger, engine: Engine, tenant: str, exc: NewerSchemaError) -> int:
    """A newer collector upgraded the tenant DB: waiting changes nothing, so say so once and give the exit code
    that has the parent release the tenant to an instance that can run it."""
    shown = shown_engine_url(engine)
    log_event(
        log, logging.ERROR, "child.newer_schema",
        "cannot use tenant DB %s: %s. Upgrade collector-supervisor on this host (its tenant schema is version %d); "
        "the child stops and leaves the tenant to an instance that can run it", shown, exc, TENANT_VERSION,
        tenant=tenant, db=shown, collector_schema_version=TENANT_VERSION, error=str(exc), error_class=STORAGE,
    )  # fmt: skip
    return CHILD_EXIT_NEWER_SCHEMA
