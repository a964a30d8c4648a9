"""Which tenant a tenant DB belongs to: a ``schema_info`` row (name ``owner_tenant_id``, the tenant's id in the
system DB as its number), stamped by ``tenant add``, ``init-db`` and a child's start.

A running child checks it on every new connection (``guard``): a DB replaced under it by another tenant's (a wrong
backup restored, a file copied over, a PostgreSQL DB recreated from another tenant's dump) is an unavailable DB to
it, never written to nor read as its own. A DB stamped for a tenant id the system DB no longer has (the system DB
was recreated) is adopted by ``tenant add`` or ``init-db``.
"""

from __future__ import annotations

from collections.abc import Collection
from functools import partial
from typing import Any

from sqlalchemy import Connection, Engine, event, select
from sqlalchemy.exc import IntegrityError

from supervisor.errors import CollectorError
from supervisor.storage.engine import shown_engine_url
from supervisor.storage.tenant_schema import schema_info

OWNER = "owner_tenant_id"
_READ = f"SELECT version FROM schema_info WHERE name = '{OWNER}'"


def owner(conn: Connection) -> int | None:
    value = conn.execute(select(schema_info.c.version).where(schema_info.c.name == OWNER)).scalar()
    return value if isinstance(value, int) else None


def stamp(engine: Engine, tenant_id: int, *, tenant_ids: Collection[int] | None = None) -> None:
    """Mark the DB as ``tenant_id``'s. A DB already stamped for another tenant is refused, unless ``tenant_ids``
    (every id of the system DB's tenants) is given and lacks that id: then it is adopted. Two processes stamping at
    once (``init-db`` and ``tenant add``, a child starting meanwhile) both insert the row: the later one's duplicate
    key is answered by looking again."""
    try:
        _stamp(engine, tenant_id, tenant_ids)
    except IntegrityError:
        _stamp(engine, tenant_id, tenant_ids)


def _stamp(engine: Engine, tenant_id: int, tenant_ids: Collection[int] | None) -> None:
    with engine.begin() as conn:
        stored = owner(conn)
        if stored == tenant_id:
            return
        if stored is not None and (tenant_ids is None or stored in tenant_ids):
            raise CollectorError(
                f"tenant DB {shown_engine_url(engine)} belongs to tenant id {stored}, not {tenant_id} (another "
                "tenant's DB, or a copy of it restored here): point each tenant at its own DB"
            )
        conn.execute(schema_info.delete().where(schema_info.c.name == OWNER))
        conn.execute(schema_info.insert().values(name=OWNER, version=tenant_id))


def guard(engine: Engine, tenant_id: int) -> None:
    """From now on, every new connection of ``engine`` checks the stamp: another tenant's DB, or one with no stamp,
    fails the connect as the DB driver's OperationalError (an outage: results are kept and retried)."""
    error = engine.dialect.loaded_dbapi.OperationalError
    event.listen(engine, "connect", partial(_check, tenant_id=tenant_id, error=error, url=shown_engine_url(engine)))


def _check(dbapi_connection: Any, _record: Any, *, tenant_id: int, error: type[Exception], url: str) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(_READ)
        row = cursor.fetchone()
    finally:
        cursor.close()
        dbapi_connection.rollback()
    stored = row[0] if row else None
    if stored != tenant_id:
        whose = f"tenant id {stored}'s" if stored is not None else "a DB that names no tenant"
        raise error(f"tenant DB {url} was replaced: it is now {whose}, not tenant id {tenant_id}'s")
