"""Engines: SQLite gets WAL, a busy timeout and foreign keys on every connection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, ProgrammingError
from sqlalchemy.pool import NullPool

from supervisor.errors import ConfigError

SQLITE_BUSY_TIMEOUT_MS = 10_000


def masked_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid URL>"


def check_url(url: str, what: str) -> None:
    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise ConfigError(f"invalid {what} {masked_url(url)!r}: {str(exc).splitlines()[0]}") from None


def make_engine(url: str, *, pooled: bool = True, what: str = "database URL") -> Engine:
    """An engine for ``url``; ``pooled=False`` keeps no connection open between uses (fork-safe)."""
    check_url(url, what)
    parsed = make_url(url)
    kwargs: dict[str, Any] = {}
    if not pooled:
        kwargs["poolclass"] = NullPool
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {})["timeout"] = SQLITE_BUSY_TIMEOUT_MS / 1000
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _configure_sqlite)
    return engine


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database named in ``url`` if it does not exist (SQLite creates its file)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql" or not parsed.database:
        return
    maintenance = create_engine(parsed.set(database="postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with maintenance.connect() as conn:
            exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": parsed.database})
            if exists.first() is None:
                quoted = conn.dialect.identifier_preparer.quote(parsed.database)
                try:
                    conn.execute(text(f"CREATE DATABASE {quoted}"))
                except ProgrammingError as exc:
                    if "already exists" not in str(exc):  # another process created it meanwhile
                        raise
    finally:
        maintenance.dispose()


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()
