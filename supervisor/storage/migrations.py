"""Creates and upgrades the system and tenant schemas: the one place schema changes live.

Each schema has two numbers in its ``schema_info`` table. Its **version** (row ``system`` / ``tenant``) counts
changes an older collector cannot live with: a collector refuses a DB whose version is above its own, and only
``init-db`` and ``run`` (its children for their tenant DBs) move it up. Its **additions** (row ``system_additions``
/ ``tenant_additions``) count changes older collectors do not notice (a nullable column they never name, a
table they never read): any process that opens the DB makes them, and older collectors keep working beside them,
so one host at a time can be upgraded. ``upgrade`` creates missing tables and then runs the numbered steps of
both above the stored numbers, in one transaction that holds the DB's schema lock (``_lock_schema``): processes
racing on a fresh install take turns, the later ones find the work done. Idempotent.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, MetaData, Table, inspect, select, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from supervisor.errors import CollectorError
from supervisor.rules import printable
from supervisor.storage import system_schema, tenant_schema
from supervisor.storage.engine import describe_db_error, ensure_database, shown_engine_url, sqlite_file_of

Step = Callable[[Connection], None]


class NewerSchemaError(CollectorError):
    """The DB was upgraded by a newer collector: this one must not use it (nor wait for it to change)."""


def _add_columns(table: Table, *names: str) -> Step:
    """A step that adds ``names`` (as ``table`` defines them, all nullable, no default) to an existing table;
    a column already there is left alone."""

    def step(conn: Connection) -> None:
        present = {column["name"] for column in inspect(conn).get_columns(table.name)}
        quote = conn.dialect.identifier_preparer.quote
        for name in names:
            column = table.c[name]
            assert column.nullable and column.server_default is None, column
            if name not in present:
                kind = column.type.compile(dialect=conn.dialect)
                conn.execute(text(f"ALTER TABLE {quote(table.name)} ADD COLUMN {quote(name)} {kind}"))

    return step


def _in_turn(*steps: Step) -> Step:
    def step(conn: Connection) -> None:
        for each in steps:
            each(conn)

    return step


SYSTEM_STEPS: dict[int, Step] = {
    # 2: each tenant's weight (its collection-enabled servers) on its lease row: instances share by servers.
    2: _add_columns(system_schema.tenant_leases, "servers"),
    # 3: which process an instance or a child is (boot, PID namespace, start ticks): same-host checks that survive
    # a wall-clock step and tell apart hosts with one hostname.
    3: _in_turn(
        _add_columns(system_schema.supervisor_instances, "process_key"),
        _add_columns(system_schema.tenant_children, "process_key"),
    ),
}
TENANT_STEPS: dict[int, Step] = {
    # 2: per-server database, authentication (sql / entra-token) and the access token's source.
    2: _add_columns(tenant_schema.servers, "database", "auth", "token_command", "token_file"),
}
SYSTEM_VERSION = 3
TENANT_VERSION = 2
SYSTEM_ADDITIONS: dict[int, Step] = {}
TENANT_ADDITIONS: dict[int, Step] = {
    # 1: this host's clock on each rate baseline: a server clock that stepped between two samples gives no rate.
    1: _add_columns(tenant_schema.counter_baselines, "checked_at"),
}


@dataclass(frozen=True)
class _Schema:
    name: str
    metadata: MetaData
    info: Table
    version: int
    steps: dict[int, Step]
    additions: dict[int, Step]

    @property
    def additions_row(self) -> str:
        return f"{self.name}_additions"

    @property
    def additions_level(self) -> int:
        return max(self.additions, default=0)


_SYSTEM = _Schema("system", system_schema.metadata, system_schema.schema_info, SYSTEM_VERSION, SYSTEM_STEPS,
                  SYSTEM_ADDITIONS)  # fmt: skip
_TENANT = _Schema("tenant", tenant_schema.metadata, tenant_schema.schema_info, TENANT_VERSION, TENANT_STEPS,
                  TENANT_ADDITIONS)  # fmt: skip
#: The PostgreSQL advisory lock (per database) that upgrades take in turn: b"cs-schem", a key no other program uses.
SCHEMA_LOCK_KEY = int.from_bytes(b"cs-schem", "big")


def upgrade_system(engine: Engine, *, beside_other_tables: bool = True, new_version: bool = True) -> None:
    """``beside_other_tables=False`` (the CLI but ``init-db``): a DB that holds tables but no collector schema is
    another program's (a ``system_db`` pointing at the wrong file): refused, not filled with the collector's tables.
    ``new_version=False`` (the CLI but ``init-db``): an older version is refused, not moved up (the instances still
    on it would stop)."""
    if not beside_other_tables:
        try:
            state = _schema_state(engine, _SYSTEM)
        except SQLAlchemyError as exc:
            raise _schema_error(engine, "system", True, exc) from None
        if state == _CURRENT:
            return  # the common case: one query
        _refuse_foreign(engine)
    _upgrade(engine, _SYSTEM, create=True, new_version=new_version)


def refuse_newer_system(conn: Connection) -> None:
    """NewerSchemaError when the system schema's version is above this collector's (one cheap query)."""
    info = system_schema.schema_info
    stored = conn.execute(select(info.c.version).where(info.c.name == "system")).scalar()
    if isinstance(stored, int) and stored > SYSTEM_VERSION:
        raise _newer("system", conn.engine, stored, SYSTEM_VERSION)


def _newer(name: str, engine: Engine, stored: int, version: int) -> NewerSchemaError:
    return NewerSchemaError(
        f"{name} DB {shown_engine_url(engine)} has schema version {stored}, "
        f"newer than this collector's {version}: upgrade collector-supervisor"
    )


def _refuse_foreign(engine: Engine) -> None:
    try:
        with engine.connect() as conn:
            tables = sorted(inspect(conn).get_table_names())
            if not tables or ("schema_info" in tables and _has_schema(conn, system_schema.schema_info, "system")):
                return
    except SQLAlchemyError:
        return  # _upgrade reports it
    shown = ", ".join(tables[:5]) + (", …" if len(tables) > 5 else "")
    raise CollectorError(
        f"system DB {shown_engine_url(engine)} holds tables of another program ({shown}) and no collector schema: "
        "check collector.system_db (or run 'collector-supervisor init-db' to add the collector's tables to it)"
    )


def upgrade_tenant(engine: Engine, *, create: bool = True, new_version: bool = True) -> None:
    """``create=False`` (the tenant child, the CLI but ``init-db`` and ``tenant add``): upgrade an existing tenant
    schema, never create one: a DB that lost its schema (deleted, replaced) is an error, not a fresh start with no
    servers. ``new_version=False`` (the CLI but ``init-db``): an older version is refused, not moved up."""
    _upgrade(engine, _TENANT, create=create, new_version=new_version)


def _upgrade(engine: Engine, schema: _Schema, *, create: bool, new_version: bool) -> None:
    name, info = schema.name, schema.info
    try:
        state = _schema_state(engine, schema)
        if state == _CURRENT:
            return
        if create and state == _NO_DATABASE:
            ensure_database(str(engine.url.render_as_string(hide_password=False)))
        with engine.begin() as conn:
            _lock_schema(conn)
            if not create and not _has_schema(conn, info, name):
                raise CollectorError(
                    f"{name} DB {shown_engine_url(engine)} has no collector schema (it was never created, or "
                    "was deleted or replaced): 'collector-supervisor init-db' creates it"
                )
            schema.metadata.create_all(conn, checkfirst=True)
            stored = _stored_numbers(conn, schema)
            version = stored.get(name)
            if version is None:
                conn.execute(info.insert().values(name=name, version=schema.version))
                _set_number(conn, schema, schema.additions_row, schema.additions_level, stored)
                return
            _move_version(conn, engine, schema, version, new_version)
            added = stored.get(schema.additions_row, 0)
            for step in range(added + 1, schema.additions_level + 1):
                schema.additions[step](conn)
            _set_number(conn, schema, schema.additions_row, max(added, schema.additions_level), stored)
    except SQLAlchemyError as exc:
        raise _schema_error(engine, name, create, exc) from None


def _move_version(conn: Connection, engine: Engine, schema: _Schema, stored: int, new_version: bool) -> None:
    if stored > schema.version:
        raise _newer(schema.name, engine, stored, schema.version)
    if stored == schema.version:
        return
    if not new_version:
        raise CollectorError(
            f"{schema.name} DB {shown_engine_url(engine)} has schema version {stored}, older than this collector's "
            f"{schema.version}: run 'collector-supervisor init-db' once every collector that uses it is upgraded "
            "(the older ones refuse the new version)"
        )
    for step in range(stored + 1, schema.version + 1):
        schema.steps[step](conn)
    _set_number(conn, schema, schema.name, schema.version, {schema.name: stored})


def _stored_numbers(conn: Connection, schema: _Schema) -> dict[str, int]:
    info = schema.info
    rows = conn.execute(select(info.c.name, info.c.version).where(info.c.name.in_([schema.name, schema.additions_row])))
    return {row_name: number for row_name, number in rows if isinstance(number, int)}


def _set_number(conn: Connection, schema: _Schema, row: str, number: int, stored: dict[str, int]) -> None:
    info = schema.info
    if row not in stored:
        conn.execute(info.delete().where(info.c.name == row))  # a value that was no number
        conn.execute(info.insert().values(name=row, version=number))
    elif stored[row] != number:
        conn.execute(info.update().where(info.c.name == row).values(version=number))


def _schema_error(engine: Engine, name: str, create: bool, exc: SQLAlchemyError) -> CollectorError:
    doing = "create or upgrade" if create else "read or upgrade"
    return CollectorError(
        f"cannot {doing} the {name} schema in {shown_engine_url(engine)}: {describe_db_error(exc)}"
        f"{_sqlite_access_hint(engine, exc)}"
    )


def _lock_schema(conn: Connection) -> None:
    """Until the transaction ends, this process alone upgrades the DB: two racing ``create_all`` would both create
    a table ("already exists") or insert the version row (a duplicate key). SQLite: the write lock, taken at once
    (pysqlite would begin the transaction only at the first INSERT, and run the CREATE TABLEs outside it, visible
    one by one: a half-created schema another process reads as another program's tables)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
    elif conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_access_hint(engine: Engine, exc: SQLAlchemyError) -> str:
    """What SQLite's error leaves unsaid. ``unable to open`` a file that is not there (deleted, moved, a typo in its
    path) says just that. A file the process may read but not write (another user's, a read-only mount) fails even
    a read (its journal or WAL beside it), which reads like a write the command never meant. A full file system
    fails even opening it (its WAL index beside it), as a bare ``disk I/O error``."""
    text = str(exc)
    if engine.dialect.name != "sqlite":
        return ""
    path = sqlite_file_of(engine) or ""
    if "unable to open" in text and path and not _sqlite_file_exists(path):
        return " (the file does not exist)"
    if any(m in text for m in ("readonly database", "unable to open")):
        return " (SQLite needs write access to the file and its folder even to read it: its journal lives beside it)"
    folder = os.path.dirname(os.path.abspath(path or "."))
    if any(m in text for m in ("disk I/O error", "disk is full")) and _is_full(folder):
        return f" (the file system of {printable(folder)} is full)"
    return ""


def _sqlite_file_exists(path: str) -> bool:
    """Whether something is at ``path``; a path that cannot be looked at (a folder without search permission) is
    taken as existing: the access hint applies to it."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return True
    return True


def _is_full(folder: str) -> bool:
    try:
        usage = os.statvfs(folder)
    except OSError:
        return False
    return usage.f_bavail == 0 if os.geteuid() else usage.f_bfree == 0


def _has_schema(conn: Connection, info: Table, name: str) -> bool:
    """``name``'s row in ``schema_info``: a ``schema_info`` of another schema (the system DB's) is not this one."""
    if not inspect(conn).has_table(info.name):
        return False
    return conn.execute(select(info.c.version).where(info.c.name == name)).first() is not None


_CURRENT, _BEHIND, _NO_DATABASE = "current", "behind", "no database"


def _schema_state(engine: Engine, schema: _Schema) -> str:
    """One cheap query for the common case (every child start): the schema is at this collector's version with
    at least its additions (_CURRENT; more additions are a newer collector's, harmless). _NO_DATABASE: a PostgreSQL
    database that does not exist yet. Any other failure to connect is raised: a DB that does not answer is not
    asked again by each later step, each waiting out its timeout (`status` against a hung host took three connect
    timeouts and then a connect without one)."""
    try:
        conn = engine.connect()
    except OperationalError as exc:
        if "does not exist" in str(exc.orig) and engine.dialect.name == "postgresql":
            return _NO_DATABASE
        raise
    try:
        with conn:
            stored = _stored_numbers(conn, schema)
    except SQLAlchemyError:
        return _BEHIND  # no schema_info yet: the full path creates it or says why
    additions = stored.get(schema.additions_row, 0)
    return _CURRENT if stored.get(schema.name) == schema.version and additions >= schema.additions_level else _BEHIND
