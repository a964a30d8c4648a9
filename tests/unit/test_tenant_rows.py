"""The one conversion of a ``tenants`` row, the checks across rows (one DB per tenant, never the system DB), where a
tenant's URL points, and a tenant child refusing a DB whose ``schema_info`` is another schema's."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect

from supervisor import databases
from supervisor.config import Settings, resolve_sqlite_url
from supervisor.errors import CollectorError, ConfigError
from supervisor.storage.engine import make_engine
from supervisor.storage.migrations import upgrade_system, upgrade_tenant
from supervisor.tenants import Tenant, tenant_from_row


def row(**values: object) -> dict[str, object]:
    return {"id": 1, "slug": "acme", "name": "Acme", "status": "active", "db_url": None, **values}


def tenant(tenant_id: int, slug: str, db_url: str | None = None) -> Tenant:
    return Tenant(id=tenant_id, slug=slug, name=slug, status="active", db_url=db_url)


def settings_in(folder: Path) -> Settings:
    return Settings(
        system_db=f"sqlite:///{folder}/var/system.db",
        tenant_db_url=f"sqlite:///{folder}/var/tenants/{{slug}}.db",
        config_path=str(folder / "collector.ini"),
    )


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"slug": b"ab"}, "slug b'ab'"),
        ({"slug": "Upper"}, "slug 'Upper'"),
        ({"slug": 5}, "slug 5"),
        ({"db_url": b"postgresql://u:secret@h/db"}, "db_url is bytes, not text"),
        ({"db_url": "mysql://u:secret@h/db"}, "mysql://u:***@h/db"),
        ({"db_url": ""}, "not a database URL"),
    ],
)
def test_a_row_that_cannot_be_run_says_why_without_secrets(values: dict[str, object], problem: str) -> None:
    converted = tenant_from_row(row(**values))
    assert converted.problem is not None and problem in converted.problem
    assert "secret" not in converted.problem


def test_names_and_statuses_are_shown_not_refused() -> None:
    converted = tenant_from_row(row(name=b"\x00\xff", status=b"\x00"))
    assert converted.usable
    assert (converted.name, converted.status) == (repr(b"\x00\xff"), repr(b"\x00"))
    huge = tenant_from_row(row(name="n" * 300_000))
    assert huge.usable and len(huge.name) < 100


def test_shared_db_goes_to_the_running_tenant_else_the_lowest_id(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    shared = f"sqlite:///{tmp_path}/shared.db"
    rows = [tenant(5, "late", shared), tenant(2, "early", f"sqlite:///{tmp_path}/./shared.db"), tenant(3, "alone")]
    by_lowest = {t.slug: t.problem for t in databases.checked_tenants(settings, rows)}
    assert by_lowest["early"] is None and by_lowest["alone"] is None
    assert "also the DB of tenant early (row 2)" in str(by_lowest["late"])
    by_running = {t.slug: t.problem for t in databases.checked_tenants(settings, rows, keep={5})}
    assert by_running["late"] is None and "tenant late (row 5)" in str(by_running["early"])
    # Both running, "early"'s row changed to late's DB while its child still uses its own: late keeps its DB.
    using = {5: shared, 2: f"sqlite:///{tmp_path}/early.db"}
    by_use = {t.slug: t.problem for t in databases.checked_tenants(settings, rows, keep={2, 5}, using=using)}
    assert by_use["late"] is None and "tenant late (row 5)" in str(by_use["early"]), by_use


def test_template_url_of_a_slug_can_be_another_tenants_db(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    rows = [tenant(1, "owner", f"sqlite:///{tmp_path}/var/tenants/other.db"), tenant(2, "other")]
    assert [t.problem is None for t in databases.checked_tenants(settings, rows)] == [True, False]


def test_the_system_db_is_no_tenant_db(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    (tmp_path / "link").symlink_to(tmp_path / "var")
    sysdb = tenant(1, "sysdb", f"sqlite:///{tmp_path}/link/system.db")
    [checked] = databases.checked_tenants(settings, [sysdb])
    assert "is the system DB" in str(checked.problem)
    with pytest.raises(ConfigError, match="is the system DB"):
        databases.tenant_url(settings, sysdb)


def test_same_postgresql_db_whoever_logs_in() -> None:
    assert databases.same_db("postgresql+psycopg://a:x@DB.example/t1", "postgresql://b@db.example:5432/t1?sslmode=require")
    assert not databases.same_db("postgresql://a@db.example/t1", "postgresql://a@db.example/t2")
    assert not databases.same_db("postgresql://a@db.example/t1", "postgresql://a@db.example:5433/t1")


def test_relative_sqlite_db_url_resolves_against_the_config_folder(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    assert settings.tenant_url("x", "sqlite:///tenants/x.db") == f"sqlite:///{tmp_path}/tenants/x.db"
    assert settings.tenant_url("x", "sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert settings.tenant_url("x", "postgresql://h/x") == "postgresql://h/x"
    assert resolve_sqlite_url("sqlite+pysqlite:///rel.db", tmp_path) == f"sqlite+pysqlite:///{tmp_path}/rel.db"


def test_a_tenant_child_refuses_a_db_with_another_schema(tmp_path: Path) -> None:
    """The system DB has a ``schema_info`` too (its ``system`` row): without the ``tenant`` row it has no tenant
    schema, and a child (``create=False``) writes nothing into it."""
    engine = make_engine(f"sqlite:///{tmp_path}/system.db", pooled=False)
    upgrade_system(engine)
    before = set(inspect(engine).get_table_names())
    with pytest.raises(CollectorError, match="has no collector schema"):
        upgrade_tenant(engine, create=False)
    assert set(inspect(engine).get_table_names()) == before
    engine.dispose()
