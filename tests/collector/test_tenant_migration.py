"""Tenant schema version 2 (per-server database, auth, token source) and addition 1 (``counter_baselines.checked_at``):
an existing version 1 DB is upgraded in place on SQLite and PostgreSQL, its servers keep their ids and settings and
read as ``master`` / ``sql``, its rate baselines are kept (without this host's time: no clock check for them). An
addition leaves the version as it is, so collectors that know only version 2 go on using the DB."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Column, Engine, MetaData, Table, UniqueConstraint, inspect, select

from supervisor.children.stored_state import load_baselines
from supervisor.children.targets import read_servers
from supervisor.config import Settings
from supervisor.secret_box import SecretBox
from supervisor.storage import tenant_schema
from supervisor.storage.engine import make_engine
from supervisor.storage.migrations import TENANT_VERSION, upgrade_tenant

NEW_COLUMNS = ("database", "auth", "token_command", "token_file")
NEW_BASELINE_COLUMNS = ("checked_at",)


def version_1_metadata() -> MetaData:
    """The tenant schema as version 1 had it: today's tables without the columns steps 2 and 3 add."""
    old = MetaData()
    for table in tenant_schema.metadata.sorted_tables:
        if table.name == "servers":
            columns = [column._copy() for column in table.columns if column.name not in NEW_COLUMNS]
            Table("servers", old, *columns, UniqueConstraint("name", name="uq_servers_name"))
        elif table.name == "counter_baselines":
            Table(table.name, old, *(c._copy() for c in table.columns if c.name not in NEW_BASELINE_COLUMNS))
        else:
            table.to_metadata(old)
    return old


def make_version_1(engine: Engine, box: SecretBox) -> None:
    old = version_1_metadata()
    old.create_all(engine)
    with engine.begin() as conn:
        conn.execute(old.tables["schema_info"].insert().values(name="tenant", version=1))
        conn.execute(
            old.tables["servers"].insert().values(
                id=7, name="old-box", host="db1", port=1433, username="monitor",
                password_encrypted=box.encrypt("pw"), encrypt="no", status="online", consecutive_failures=0,
                created_at=dt.datetime(2024, 1, 1),
            )
        )  # fmt: skip
        conn.execute(old.tables["collection_configs"].insert().values(server_id=7, enabled=True, interval_seconds=30))
        conn.execute(old.tables["counter_baselines"].insert().values(
            server_id=7, sqlserver_start_time=dt.datetime(2024, 1, 1), sample_time=dt.datetime(2024, 1, 2),
            batch_requests_total=5, waits_json="{}",
        ))  # fmt: skip


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def tenant_url(request: pytest.FixtureRequest, tmp_path: Path, pg_database: Callable[[], str]) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/tenant.db"
    return pg_database()


def test_version_1_db_is_upgraded_in_place(tenant_url: str, tmp_path: Path) -> None:
    assert TENANT_VERSION == 2
    box = SecretBox.load(str(tmp_path / "secret.key"))
    engine = make_engine(tenant_url, pooled=False)
    try:
        make_version_1(engine, box)
        assert not set(NEW_COLUMNS) & {c["name"] for c in inspect(engine).get_columns("servers")}

        upgrade_tenant(engine, create=False)  # what a child does with the DB it finds
        upgrade_tenant(engine)  # idempotent

        assert set(NEW_COLUMNS) <= {c["name"] for c in inspect(engine).get_columns("servers")}
        assert set(NEW_BASELINE_COLUMNS) <= {c["name"] for c in inspect(engine).get_columns("counter_baselines")}
        info = tenant_schema.schema_info
        with engine.connect() as conn:
            numbers = dict(conn.execute(select(info.c.name, info.c.version)).all())
            assert (numbers["tenant"], numbers["tenant_additions"]) == (2, 1)
            (baseline,) = load_baselines(conn).values()
            assert (baseline.batch_requests_total, baseline.checked_at) == (5, None)
            row = conn.execute(select(tenant_schema.servers).where(tenant_schema.servers.c.id == 7)).mappings().one()
            assert [row[name] for name in NEW_COLUMNS] == [None] * 4
            rows = read_servers(conn, Settings(), box)
        assert not rows.invalid
        (target,) = rows.targets
        assert (target.server_id, target.name, target.endpoint.host, target.endpoint.username) == (
            7, "old-box", "db1", "monitor"
        )
        assert (target.endpoint.database, target.endpoint.auth, target.endpoint.password) == ("master", "sql", "pw")

        # The new columns work as any other: written, read back.
        with engine.begin() as conn:
            conn.execute(
                tenant_schema.servers.update().where(tenant_schema.servers.c.id == 7)
                .values(database="sales", auth="entra-token", username=None, token_file="/run/token")
            )  # fmt: skip
            (target,) = read_servers(conn, Settings(), box).targets
        assert (target.endpoint.database, target.endpoint.auth, target.endpoint.token_file) == (
            "sales", "entra-token", "/run/token"
        )
    finally:
        engine.dispose()


def test_fresh_db_is_created_at_the_current_version(tenant_url: str) -> None:
    engine = make_engine(tenant_url, pooled=False)
    try:
        upgrade_tenant(engine)
        assert set(NEW_COLUMNS) <= {c["name"] for c in inspect(engine).get_columns("servers")}
        info = tenant_schema.schema_info
        with engine.connect() as conn:
            assert conn.execute(select(info.c.version).where(info.c.name == "tenant")).scalar() == TENANT_VERSION
    finally:
        engine.dispose()


def test_new_columns_are_nullable_without_default() -> None:
    columns: list[Column] = [tenant_schema.servers.c[name] for name in NEW_COLUMNS]
    columns += [tenant_schema.counter_baselines.c[name] for name in NEW_BASELINE_COLUMNS]
    for column in columns:
        assert column.nullable and column.server_default is None and column.default is None
