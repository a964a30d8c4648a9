"""Engines: SQLite gets WAL, a busy timeout and foreign keys on every connection."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, DisconnectionError, NoSuchModuleError
from sqlalchemy.pool import NullPool

from supervisor.errors import ConfigError
from supervisor.storage.stall_cut import GRACE, StallCut

SQLITE_BUSY_TIMEOUT_MS = 10_000


def masked_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid URL>"


def url_problem(url: str, *, persistent: bool = False) -> str | None:
    """Why ``url`` cannot be used (None if it can): a control character (a NUL would end the path in the
    driver), not a URL, an unknown database type, a driver module that is not installed, with ``persistent``
    an in-memory SQLite DB (each process would get its own, empty one: the system DB and tenant DBs must be
    shared), or a SQLite URI filename: its path would escape ``make_engine``'s ``must_exist`` checks."""
    if not url.isprintable():
        return "contains a control character"
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return "not a database URL (e.g. sqlite:///var/system.db or postgresql+psycopg://user@host/db)"
    try:
        dialect = parsed.get_dialect()
    except (NoSuchModuleError, ArgumentError, ValueError):
        return f"unsupported database type {parsed.drivername!r} (tested: sqlite, postgresql+psycopg)"
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        module = getattr(exc, "name", None) or str(exc)
        return (
            f"the driver module {module!r} for {parsed.drivername!r} is not installed "
            "(tested: sqlite, postgresql+psycopg)"
        )
    if persistent and parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or "mode=memory" in database or parsed.query.get("mode") == "memory":
            return "an in-memory SQLite database would be private to each process: name a file"
    if parsed.get_backend_name() == "sqlite" and (parsed.database or "").startswith("file:"):
        return "a SQLite URI filename (file:...) is not supported: give the file's path (sqlite:////path/to/file.db)"
    if parsed.get_backend_name() == "sqlite" and parsed.query:
        options = ", ".join(sorted(parsed.query))
        return f"a SQLite URL takes no options (?{options}): the collector sets its own (WAL, timeouts, read-write)"
    return None


def shown_engine_url(engine: Engine) -> str:
    """The engine's URL as configured, password masked."""
    return _configured_url(engine).render_as_string(hide_password=True)


def sqlite_file_of(engine: Engine) -> str | None:
    """The path of a SQLite engine's file, as configured."""
    url = _configured_url(engine)
    return url.database if url.get_backend_name() == "sqlite" else None


def _configured_url(engine: Engine) -> URL:
    """A tenant child's SQLite file is opened as a URI (``make_engine(must_exist=True)``), which is not what the
    user wrote."""
    url = engine.url
    database = url.database or ""
    if url.get_backend_name() == "sqlite" and database.startswith("file:") and url.query.get("uri") == "true":
        query = {key: value for key, value in url.query.items() if key not in ("mode", "uri")}
        url = url.set(database=database.removeprefix("file:"), query=query)
    return url


def describe_db_error(exc: BaseException) -> str:
    """The first line of a driver error, without SQLAlchemy's background links."""
    original = getattr(exc, "orig", None) or exc
    text = str(original).strip().splitlines()
    return text[0] if text else type(original).__name__


def check_url(url: str, what: str, *, persistent: bool = False) -> None:
    problem = url_problem(url, persistent=persistent)
    if problem is not None:
        raise ConfigError(f"invalid {what} {masked_url(url)!r}: {problem}")


def make_engine(
    url: str,
    *,
    pooled: bool = True,
    what: str = "database URL",
    call_timeout: float | None = None,
    statements_unbounded: bool = False,
    must_exist: bool = False,
    cut_stalled: bool = False,
) -> Engine:
    """An engine for ``url``; ``pooled=False`` keeps no connection open between uses (fork-safe).

    ``call_timeout`` bounds how long one statement may wait (a locked SQLite file, a PostgreSQL lock or
    statement) and how long a connect may take; without it SQLite waits up to 10 s for a lock.
    ``statements_unbounded``: ``call_timeout`` bounds lock waits and connects only (a command: an upgrade of a
    large DB or a long report may run longer, but a lock held by another program fails it instead of hanging).
    ``cut_stalled``: a PostgreSQL statement or commit with no answer ``stall_cut.GRACE`` seconds after
    ``call_timeout`` has its connection cut (a hung host answers nothing, so no server-side timeout fires).
    ``must_exist``: a SQLite file is never created (opened read-write only), and a pooled connection to
    a file that was deleted or replaced since it was opened is not used again (writes to an unlinked
    file would vanish): the tenant child's engine, since only ``init-db`` and ``tenant add`` create DBs."""
    check_url(url, what)
    parsed = make_url(url)
    sqlite_file = _sqlite_file(parsed)
    if must_exist and sqlite_file is not None:
        parsed = parsed.set(database=f"file:{sqlite_file}", query={**parsed.query, "mode": "rw", "uri": "true"})
    kwargs: dict[str, Any] = {}
    if not pooled:
        kwargs["poolclass"] = NullPool
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if sqlite_file is not None and not must_exist:
            _make_folder(Path(sqlite_file).parent, what)
        busy_ms = SQLITE_BUSY_TIMEOUT_MS if call_timeout is None else max(1, round(call_timeout * 1000))
        kwargs["connect_args"] = {"timeout": busy_ms / 1000}
    else:
        kwargs["pool_pre_ping"] = not cut_stalled  # a ping is no statement the cut sees: it would hang unseen
        if backend == "postgresql" and call_timeout is not None:
            ms = max(1, round(call_timeout * 1000))
            kwargs["connect_args"] = {
                "connect_timeout": max(2, math.ceil(call_timeout)),  # libpq's minimum is 2 s
                "options": f"-c lock_timeout={ms}" + ("" if statements_unbounded else f" -c statement_timeout={ms}"),
            }
    engine = create_engine(parsed, **kwargs)
    if backend == "sqlite":
        event.listen(engine, "connect", partial(_configure_sqlite, busy_ms=busy_ms))
    if cut_stalled and call_timeout is not None and backend == "postgresql":
        StallCut(call_timeout + GRACE, parsed.render_as_string(hide_password=True)).attach(engine)
    if must_exist and sqlite_file is not None:
        path = Path(sqlite_file)
        event.listen(engine, "connect", partial(_remember_file, path=path))
        event.listen(engine, "checkout", partial(_check_file, path=path))
    return engine


def _make_folder(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"invalid {what}: cannot create the folder {folder}: part of its path is a file") from None
    except OSError as exc:
        raise ConfigError(f"invalid {what}: cannot create the folder {folder}: {exc.strerror or exc}") from None


def _sqlite_file(parsed: URL) -> str | None:
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _remember_file(_dbapi_connection: Any, record: Any, *, path: Path) -> None:
    record.info["file_identity"] = _file_identity(path)


def _check_file(_dbapi_connection: Any, record: Any, _proxy: Any, *, path: Path) -> None:
    if _file_identity(path) != record.info.get("file_identity"):
        raise DisconnectionError(f"database file {path} was deleted or replaced")


#: Seconds to connect to PostgreSQL's ``postgres`` database to create another: a host that answers nothing fails it.
MAINTENANCE_CONNECT_TIMEOUT = 10


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database named in ``url`` if it does not exist (SQLite creates its file)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql" or not parsed.database:
        return
    maintenance = create_engine(parsed.set(database="postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT",
                                connect_args={"connect_timeout": MAINTENANCE_CONNECT_TIMEOUT})  # fmt: skip
    try:
        with maintenance.connect() as conn:
            exists_query = text("SELECT 1 FROM pg_database WHERE datname = :name")
            exists = conn.execute(exists_query, {"name": parsed.database})
            if exists.first() is None:
                quoted = conn.dialect.identifier_preparer.quote(parsed.database)
                try:
                    conn.execute(text(f"CREATE DATABASE {quoted}"))
                except DBAPIError:  # another process created it meanwhile: a DuplicateDatabase or a UniqueViolation
                    if conn.execute(exists_query, {"name": parsed.database}).first() is None:
                        raise
    finally:
        maintenance.dispose()


def _decode_text(value: bytes) -> str:
    """SQLite stores any bytes as TEXT (another program may write invalid UTF-8): such a value reads with U+FFFD
    where its bad bytes were, and the checks of its row judge it, instead of failing the whole query."""
    return value.decode("utf-8", "replace")


def _configure_sqlite(dbapi_connection: Any, _record: Any, *, busy_ms: int) -> None:
    dbapi_connection.text_factory = _decode_text
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms:d}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()
