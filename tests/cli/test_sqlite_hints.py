"""What a tenant child says when it cannot open its SQLite file: a file that is not there says so (before, it
got the hint for a file it may not write, "SQLite needs write access to the file and its folder even to read
it", which sent the reader to check permissions of a file that was deleted or moved); a file that is there but
cannot be written keeps that hint."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.helpers.deployment import Deployment

WRITE_ACCESS_HINT = "SQLite needs write access to the file and its folder"


def _start_error(deployment: Deployment, slug: str) -> str:
    """The message of the first ``child.db_unavailable`` line of tenant ``slug``'s child."""
    [line, *_] = deployment.supervisors[-1].wait_event("child.db_unavailable", timeout=30, tenant=slug)
    return str(line["message"])


def test_a_missing_tenant_db_file_is_named_missing_and_an_unwritable_one_keeps_the_access_hint(
    tmp_path: Path,
) -> None:
    deployment = Deployment(tmp_path, fake_runtime=False)  # real children: they open their tenant DB
    deployment.write_config(heartbeat_timeout=4, collection_timeout=2)
    deployment.cli("init-db")
    deployment.add_tenant("moved")
    locked = tmp_path / "locked"
    locked.mkdir()
    deployment.add_tenant("frozen", "--db-url", f"sqlite:///{locked}/frozen.db")
    (tmp_path / "var" / "tenants" / "moved.db").unlink()  # the web app moved it away
    # Immutable (binds root too): the file is there and readable, but neither it nor its folder can be written.
    subprocess.run(["chattr", "+i", str(locked), str(locked / "frozen.db")], check=True)
    try:
        deployment.start()
        missing = _start_error(deployment, "moved")
        unwritable = _start_error(deployment, "frozen")
    finally:
        deployment.stop_all()
        subprocess.run(["chattr", "-i", str(locked), str(locked / "frozen.db")], check=True)
    assert missing.endswith("unable to open database file (the file does not exist)"), missing
    assert WRITE_ACCESS_HINT not in missing
    assert WRITE_ACCESS_HINT in unwritable, unwritable
    assert not (tmp_path / "var" / "tenants" / "moved.db").exists()  # nor was it created


def test_commands_on_a_tenant_whose_sqlite_file_is_gone_say_so_and_create_nothing(tmp_path: Path) -> None:
    """Before, ``collect-once`` and ``server add`` created an empty file and failed with ``database error: no such
    table: servers``; only ``server list`` and ``server show`` said the file did not exist."""
    deployment = Deployment(tmp_path)
    deployment.write_config()
    deployment.cli("init-db")
    deployment.add_tenant("moved")
    db_file = tmp_path / "var" / "tenants" / "moved.db"
    for path in db_file.parent.glob("moved.db*"):
        path.unlink()
    commands = [("collect-once", "moved", "sql01"), ("server", "add", "moved", "sql01", "--host", "h"),
                ("server", "disable", "moved", "sql01"), ("server", "list", "moved")]  # fmt: skip
    for command in commands:
        result = deployment.cli(*command, check=False)
        assert result.returncode != 0 and result.stderr.count("\n") == 1, (command, result.stderr)
        assert f"its DB file {db_file} does not exist (run init-db)" in result.stderr, (command, result.stderr)
        assert not db_file.exists(), command
