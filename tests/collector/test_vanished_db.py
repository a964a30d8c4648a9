"""A tenant DB that existed and vanished is a storage error, never silently recreated empty: only ``init-db`` and
``tenant add`` create databases."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.helpers.cli import run_cli
from tests.helpers.deployment import TenantDeployment
from tests.helpers.waiting import wait_until


def _events(deployment: TenantDeployment, name: str) -> list[dict]:
    return [e for e in deployment.log_events() if e.get("event") == name]


def test_a_deleted_tenant_db_is_an_error_and_is_not_recreated(tmp_path: Path, simulator, child_processes) -> None:
    """Before: writes went on into the unlinked file, and the next start recreated an empty DB and reported
    RUNNING with 0 servers."""
    db = tmp_path / "tenant.db"
    sim = simulator([{"name": "sql-1"}])
    deployment = TenantDeployment(tmp_path, "freetds", f"sqlite:///{db}")
    deployment.add("sql-1", sim.ports["sql-1"])
    child = child_processes(deployment)
    wait_until(lambda: _events(deployment, "collection.succeeded"), 30, "a first collection")
    deployment.engine.dispose()
    for path in tmp_path.glob("tenant.db*"):
        path.unlink()
    [unavailable] = wait_until(lambda: _events(deployment, "writer.db_unavailable"), 30, "the writer to notice")
    assert unavailable["error_class"] == "storage"
    time.sleep(3)  # more collections and server-list refreshes: none may create the file again
    assert not db.exists()
    code, _ = child.terminate()
    assert code == 0
    assert list((tmp_path / "spool" / "acme").glob("*.jsonl")), "the results kept were not spooled"

    child = child_processes(deployment)
    [refused] = wait_until(lambda: _events(deployment, "child.db_unavailable"), 30, "the restarted child to refuse")
    assert refused["error_class"] == "storage"
    time.sleep(2)
    assert not db.exists() and child.process.poll() is None  # still waiting for its DB, not crash-looping
    status = run_cli("-c", str(deployment.config), "status", "--json", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    [tenant] = json.loads(status.stdout)["tenants"]
    assert "does not exist" in tenant["note"]
    code, _ = child.terminate()
    assert code == 0
