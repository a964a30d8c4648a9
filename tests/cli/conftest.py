"""A configured workspace for CLI tests, on SQLite or PostgreSQL."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import MetaData, create_engine, inspect, select, text
from sqlalchemy.pool import NullPool

from supervisor.cli.main import main
from tests.helpers.cli import run_cli


@dataclass
class Workspace:
    path: Path
    system_url: str
    tenant_template: str

    def run(self, *args: str, env: dict[str, str] | None = None, stdin: str | None = None):
        return run_cli("-c", str(self.path / "collector.ini"), *args, cwd=self.path, env=env, stdin=stdin)

    def ok(self, *args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> str:
        result = self.run(*args, env=env, stdin=stdin)
        assert result.returncode == 0, f"{args} failed: {result.stderr}"
        return result.stdout

    def setup(self, *args: str, env: dict[str, str] | None = None) -> None:
        """Run a command in this process: quick set-up for tests that exercise another command."""
        saved = {key: os.environ.get(key) for key in env or {}}
        os.environ.update(env or {})
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                code = main(["-c", str(self.path / "collector.ini"), *args])
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        assert code == 0, args

    def tenant_url(self, slug: str) -> str:
        return self.tenant_template.replace("{slug}", slug)

    def snapshot(self) -> dict[str, object]:
        """Every row of the system DB and of every tenant DB that exists, for 'nothing changed' checks."""
        state: dict[str, object] = {"system": dump(self.system_url)}
        for slug in tenant_slugs(self.system_url):
            state[slug] = dump(self.tenant_url(slug))
        return state


def dump(url: str) -> dict[str, list[tuple]]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        metadata = MetaData()
        metadata.reflect(engine)
        with engine.connect() as conn:
            return {
                name: sorted(tuple(map(repr, row)) for row in conn.execute(select(table)))
                for name, table in metadata.tables.items()
            }
    finally:
        engine.dispose()


def tenant_slugs(system_url: str) -> list[str]:
    engine = create_engine(system_url, poolclass=NullPool)
    try:
        if not inspect(engine).has_table("tenants"):
            return []
        with engine.connect() as conn:
            return list(conn.execute(text("SELECT slug FROM tenants ORDER BY slug")).scalars())
    finally:
        engine.dispose()


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


WorkspaceFactory = Callable[..., Workspace]


@pytest.fixture(params=["sqlite", "postgresql"])
def workspace(request: pytest.FixtureRequest, tmp_path: Path) -> Workspace:
    if request.param == "sqlite":
        system_url = "sqlite:///var/system.db"
        template = "sqlite:///var/tenants/{slug}.db"
        resolved_system = f"sqlite:///{tmp_path}/var/system.db"
        resolved_template = f"sqlite:///{tmp_path}/var/tenants/{{slug}}.db"
    else:
        system_url = resolved_system = request.getfixturevalue("pg_database")()
        template = resolved_template = system_url + "_{slug}"
    (tmp_path / "collector.ini").write_text(
        f"[collector]\nsystem_db = {system_url}\ntenant_db_url = {template}\n[logging]\nlevel = INFO\n"
    )
    return Workspace(tmp_path, resolved_system, resolved_template)
