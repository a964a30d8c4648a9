"""Upgrading one host at a time. A schema's version counts changes older collectors cannot live with (they refuse a
newer one), its additions those they do not notice (a nullable column they never name). Additions are made by
whatever opens the DB, and leave the version alone, so older collectors go on using it: before, the baseline column
``checked_at`` was version 3, and every older host that claimed a tenant whose DB a newer one had touched stopped
collecting it for good. A version is moved only by ``init-db`` and ``run``; other commands refuse an older one
(before, a ``status`` on the first upgraded host moved the shared system DB and stopped every older instance)."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.pool import NullPool

from supervisor.storage.migrations import SYSTEM_VERSION, TENANT_VERSION
from tests.cli.conftest import Workspace


def numbers(url: str) -> dict[str, int]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return dict(conn.execute(text("SELECT name, version FROM schema_info")).all())  # type: ignore[arg-type]
    finally:
        engine.dispose()


def execute(url: str, *statements: str) -> None:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


def test_a_tenant_db_as_the_last_release_left_it_gets_its_additions_and_keeps_its_version(
    workspace: Workspace
) -> None:
    workspace.setup("init-db")
    workspace.setup("tenant", "add", "acme", "--name", "Acme")
    url = workspace.tenant_url("acme")
    execute(url, "ALTER TABLE counter_baselines DROP COLUMN checked_at", "DELETE FROM schema_info "
            "WHERE name = 'tenant_additions'")  # fmt: skip
    workspace.ok("server", "list", "acme")  # any command that opens the DB
    engine = create_engine(url, poolclass=NullPool)
    assert "checked_at" in {c["name"] for c in inspect(engine).get_columns("counter_baselines")}
    engine.dispose()
    stored = numbers(url)
    assert (stored["tenant"], stored["tenant_additions"]) == (TENANT_VERSION, 1)
    assert stored["tenant"] == 2, "an older collector (version 2) must still take this DB"
    execute(url, "UPDATE schema_info SET version = 7 WHERE name = 'tenant_additions'")  # a newer collector's
    workspace.ok("server", "list", "acme")
    assert numbers(url)["tenant_additions"] == 7


def test_only_init_db_moves_an_older_version(workspace: Workspace) -> None:
    workspace.setup("init-db")
    workspace.setup("tenant", "add", "acme", "--name", "Acme")
    execute(workspace.system_url, f"UPDATE schema_info SET version = {SYSTEM_VERSION - 1} WHERE name = 'system'")
    execute(workspace.tenant_url("acme"), f"UPDATE schema_info SET version = {TENANT_VERSION - 1} "
            "WHERE name = 'tenant'")  # fmt: skip
    for command in (("status",), ("tenant", "list")):
        refused = workspace.run(*command)
        assert refused.returncode != 0 and "Traceback" not in refused.stderr, refused.stderr
        [line] = refused.stderr.strip().splitlines()
        assert f"schema version {SYSTEM_VERSION - 1}, older than this collector's {SYSTEM_VERSION}" in line, line
        assert "run 'collector-supervisor init-db'" in line, line
    assert numbers(workspace.system_url)["system"] == SYSTEM_VERSION - 1

    execute(workspace.system_url, f"UPDATE schema_info SET version = {SYSTEM_VERSION} WHERE name = 'system'")
    refused = workspace.run("server", "list", "acme")
    assert refused.returncode != 0 and f"older than this collector's {TENANT_VERSION}" in refused.stderr
    assert numbers(workspace.tenant_url("acme"))["tenant"] == TENANT_VERSION - 1

    workspace.ok("init-db")
    assert numbers(workspace.tenant_url("acme"))["tenant"] == TENANT_VERSION
    workspace.ok("status")
    workspace.ok("server", "list", "acme")
