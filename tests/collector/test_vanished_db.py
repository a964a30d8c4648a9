"""A tenant DB that existed and vanished is a storage error, never silently recreated empty: only ``init-db`` and
``tenant add`` create databases."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from sqlalchemy import func, select

from supervisor.servers import ServerSpec, add_server
from supervisor.storage import tenant_owner
from supervisor.storage.engine import make_engine
from supervisor.storage.migrations import upgrade_tenant
from supervisor.storage.tenant_schema import metric_snapshots
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


def test_a_tenant_db_replaced_by_another_tenants_is_not_used(tmp_path: Path, simulator, child_processes) -> None:
    """A restore of the wrong backup: the child's SQLite file replaced by another tenant's DB. The child neither
    writes its results into it nor takes its servers for its own (it used to do both: the other tenant's servers
    were then collected twice); it keeps its results, as in any outage."""
    db = tmp_path / "tenant.db"
    sim = simulator([{"name": "sql-1"}, {"name": "theirs"}])
    deployment = TenantDeployment(tmp_path, "freetds", f"sqlite:///{db}")
    deployment.add("sql-1", sim.ports["sql-1"])
    other_url = f"sqlite:///{tmp_path}/other.db"
    other = make_engine(other_url)
    upgrade_tenant(other)
    tenant_owner.stamp(other, 2)
    add_server(other, ServerSpec(name="theirs", host="127.0.0.1", port=sim.ports["theirs"]), None)
    other.dispose()
    child = child_processes(deployment)
    wait_until(lambda: _events(deployment, "collection.succeeded"), 30, "a first collection")
    deployment.engine.dispose()
    for path in tmp_path.glob("tenant.db*"):
        path.unlink()
    shutil.copy(tmp_path / "other.db", db)
    [unavailable] = wait_until(lambda: _events(deployment, "writer.db_unavailable"), 30, "the writer to notice")
    assert "it is now tenant id 2's, not tenant id 1's" in unavailable["error"], unavailable
    time.sleep(3)  # collections and server-list refreshes go on
    replaced = make_engine(f"sqlite:///{db}")
    with replaced.connect() as conn:
        assert conn.execute(select(func.count()).select_from(metric_snapshots)).scalar() == 0
    replaced.dispose()
    assert not [e for e in deployment.log_events() if e.get("server") == "theirs"]
    code, _ = child.terminate()
    assert code == 0
    assert list((tmp_path / "spool" / "acme").glob("*.jsonl")), "the results kept were not spooled"
