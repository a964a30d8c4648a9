"""System schema versions 2 (``tenant_leases.servers``, the tenants' weights) and 3 (``process_key`` of instances and
children): a version 1 system DB is upgraded in place on SQLite and PostgreSQL, its leases kept, and weighted
leases work on it at once."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, MetaData, Table, inspect, select

from supervisor.parent.leases import sync_leases
from supervisor.storage import system_schema
from supervisor.storage.engine import make_engine
from supervisor.storage.migrations import SYSTEM_VERSION, upgrade_system

T0 = dt.datetime(2024, 5, 1, 12, 0, 0)


def make_version_1(engine: Engine) -> None:
    """The system schema as version 1 had it: today's tables without ``tenant_leases.servers`` and ``process_key``."""
    old = MetaData()
    for table in system_schema.metadata.sorted_tables:
        Table(table.name, old, *[c._copy() for c in table.columns if c.name not in ("servers", "process_key")])
    old.create_all(engine)
    with engine.begin() as conn:
        conn.execute(old.tables["schema_info"].insert().values(name="system", version=1))
        conn.execute(old.tables["tenants"].insert(), [
            {"id": n, "slug": f"t{n}", "name": f"T{n}", "status": "active", "created_at": T0, "updated_at": T0}
            for n in (1, 2)
        ])  # fmt: skip
        conn.execute(old.tables["tenant_leases"].insert().values(
            tenant_id=1, owner="old-instance", acquired_at=T0, expires_at=T0 + dt.timedelta(seconds=60)
        ))  # fmt: skip


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def system_url(request: pytest.FixtureRequest, tmp_path: Path, pg_database: Callable[[], str]) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/system.db"
    return pg_database()


def test_version_1_system_db_is_upgraded_in_place(system_url: str) -> None:
    assert SYSTEM_VERSION == 3
    engine = make_engine(system_url, pooled=False)
    try:
        make_version_1(engine)
        assert "servers" not in {c["name"] for c in inspect(engine).get_columns("tenant_leases")}

        upgrade_system(engine)
        upgrade_system(engine)  # idempotent

        assert "servers" in {c["name"] for c in inspect(engine).get_columns("tenant_leases")}
        for table in ("supervisor_instances", "tenant_children"):
            assert "process_key" in {c["name"] for c in inspect(engine).get_columns(table)}
        leases, info = system_schema.tenant_leases, system_schema.schema_info
        with engine.connect() as conn:
            assert conn.execute(select(info.c.version).where(info.c.name == "system")).scalar() == 3
            row = conn.execute(select(leases).where(leases.c.tenant_id == 1)).mappings().one()
        assert (row["owner"], row["servers"]) == ("old-instance", None)  # the lease an old instance holds stays

        # A new instance next to the old one (still live): it takes tenant 2 and stores its weight.
        with engine.begin() as conn:
            assert sync_leases(conn, "new", [1, 2], [], 2, T0 + dt.timedelta(seconds=1), 60.0) == {2}
        with engine.begin() as conn:
            sync_leases(conn, "new", [1, 2], [2], 2, T0 + dt.timedelta(seconds=2), 60.0, servers={2: 12})
        with engine.connect() as conn:
            stored = dict(conn.execute(select(leases.c.tenant_id, leases.c.servers)).all())
        assert stored == {1: None, 2: 12}
    finally:
        engine.dispose()
