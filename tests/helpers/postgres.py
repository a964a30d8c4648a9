"""Throwaway PostgreSQL databases on the server ``scripts/setup.sh`` provides (or ``COLLECTOR_TEST_PG``)."""

from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

POSTGRES_ADMIN_URL = os.environ.get("COLLECTOR_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
PREFIX = "cs_test_"


def admin_engine() -> Engine:
    return create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")


def database_name(url: str) -> str:
    name = make_url(url).database
    assert name, url
    return name


class PostgresDatabases:
    """Creates fresh databases and drops them again, with the databases named after them (``<name>_<slug>``:
    the tenant DBs a test's CLI creates from a ``{slug}`` template)."""

    def __init__(self) -> None:
        self.admin = admin_engine()
        self.created: list[str] = []

    def create(self) -> str:
        name = f"{PREFIX}{uuid.uuid4().hex[:12]}"
        try:
            with self.admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        except Exception as exc:
            pytest.fail(f"PostgreSQL not available at {make_url(POSTGRES_ADMIN_URL)!r} (run scripts/setup.sh): {exc}")
        self.created.append(name)
        return make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        if self.created:
            with self.admin.connect() as conn:
                existing = conn.execute(
                    text("SELECT datname FROM pg_database WHERE datname LIKE :prefix"), {"prefix": f"{PREFIX}%"}
                ).scalars()
                doomed = [n for n in existing if any(n == c or n.startswith(c + "_") for c in self.created)]
                for name in doomed:
                    conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))  # a test may refuse them
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()
