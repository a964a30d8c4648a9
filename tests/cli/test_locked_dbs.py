"""A PostgreSQL table locked by another program (a migration of the web app, a stuck session): a command waits at
most ``COMMAND_WAIT`` for the lock, then says so; before, ``status`` hung for as long as the lock was held."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests.cli.conftest import Workspace

pytestmark = pytest.mark.postgres


def pg_workspace(tmp_path: Path, pg_database: Callable[[], str]) -> Workspace:
    system_url = pg_database()
    template = system_url + "_{slug}"
    (tmp_path / "collector.ini").write_text(f"[collector]\nsystem_db = {system_url}\ntenant_db_url = {template}\n")
    ws = Workspace(tmp_path, system_url, template)
    ws.setup("init-db")
    ws.setup("tenant", "add", "acme")
    ws.setup("tenant", "add", "beta")
    return ws


def test_status_with_a_tenant_table_locked_notes_it_and_shows_the_others(
    tmp_path: Path, pg_database: Callable[[], str]
) -> None:
    ws = pg_workspace(tmp_path, pg_database)
    locker = create_engine(ws.tenant_url("acme"), poolclass=NullPool)
    with locker.connect() as conn:
        conn.execute(text("LOCK TABLE servers IN ACCESS EXCLUSIVE MODE"))  # held until this block ends
        result = ws.run("status", "--json")  # run_cli's timeout (120 s) fails the test if it hangs
        conn.rollback()
    locker.dispose()
    assert result.returncode == 0, result.stderr
    tenants = {t["slug"]: t for t in json.loads(result.stdout)["tenants"]}
    assert "lock timeout" in tenants["acme"]["note"], tenants["acme"]
    assert tenants["beta"]["note"] is None, tenants["beta"]


def test_a_command_with_a_system_table_locked_fails_with_one_line(
    tmp_path: Path, pg_database: Callable[[], str]
) -> None:
    ws = pg_workspace(tmp_path, pg_database)
    locker = create_engine(ws.system_url, poolclass=NullPool)
    with locker.connect() as conn:
        conn.execute(text("LOCK TABLE tenants IN ACCESS EXCLUSIVE MODE"))
        result = ws.run("tenant", "list")
        conn.rollback()
    locker.dispose()
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and "lock timeout" in result.stderr, result.stderr
