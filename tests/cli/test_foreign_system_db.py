"""``collector.system_db`` pointing at another program's SQLite file (a typo: the web app's DB): the commands refuse
it with one line and write nothing into it (``status`` used to create five collector tables there); ``init-db``,
the explicit step, adds the collector's tables beside the others."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.helpers.cli import run_cli


def tables(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return sorted(name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))


def test_another_programs_db_is_refused_until_init_db(tmp_path: Path) -> None:
    db = tmp_path / "webapp.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    config = tmp_path / "collector.ini"
    config.write_text(f"[collector]\nsystem_db = sqlite:///{db}\nsecret_key_file = {tmp_path}/key\n")
    for command in (["status"], ["tenant", "list"], ["server", "list"], ["tenant", "add", "acme"]):
        result = run_cli("-c", str(config), *command, cwd=tmp_path)
        assert result.returncode == 1, (command, result)
        [line] = result.stderr.strip().splitlines()
        assert "holds tables of another program (orders) and no collector schema" in line, line
    assert tables(db) == ["orders"]
    assert run_cli("-c", str(config), "init-db", cwd=tmp_path).returncode == 0
    assert "schema_info" in tables(db) and "orders" in tables(db)
    assert run_cli("-c", str(config), "status", cwd=tmp_path).returncode == 0
    fresh = tmp_path / "collector-fresh.ini"  # a file that does not exist yet is still created by any command
    fresh.write_text(f"[collector]\nsystem_db = sqlite:///{tmp_path}/new.db\nsecret_key_file = {tmp_path}/key\n")
    assert run_cli("-c", str(fresh), "status", cwd=tmp_path).returncode == 0
