"""The spool itself failing (a full or unwritable disk) while the tenant DB is down: no crash, no half-written
file, and the results at stake are counted in the log."""

from __future__ import annotations

import time
from pathlib import Path

from tests.collector.test_outage_and_stop import ExclusiveLock
from tests.helpers.deployment import TenantDeployment
from tests.helpers.waiting import wait_until


def test_an_unwritable_spool_at_stop_is_counted_not_a_crash(tmp_path: Path, simulator, child_processes) -> None:
    """Before: ``OSError`` from spool.py crashed the child on its way down, left a 0-byte ``.jsonl.tmp`` and lost the
    results without a count. A spool folder below a regular file fails every write, even for root."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    db_path = str(tmp_path / "tenant.db")
    sim = simulator([{"name": "sql-1"}, {"name": "sql-2"}])
    deployment = TenantDeployment(tmp_path, "freetds", f"sqlite:///{db_path}", spool_dir=str(blocker / "spool"))
    for name in ("sql-1", "sql-2"):
        deployment.add(name, sim.ports[name])
    child = child_processes(deployment)
    wait_until(lambda: any(e.get("event") == "collection.succeeded" for e in deployment.log_events()), 30,
               "a first collection")  # fmt: skip
    with ExclusiveLock(db_path):
        wait_until(lambda: any(e.get("event") == "writer.db_unavailable" for e in deployment.log_events()), 30,
                   "the writer to find the tenant DB locked")  # fmt: skip
        time.sleep(3)  # more collections pile up in the writer's buffer
        code, _seconds = child.terminate()
    assert code == 0  # a clean stop, not CHILD_EXIT_CRASH
    events = deployment.log_events()
    [lost] = [e for e in events if e.get("event") == "writer.lost"]
    assert lost["level"] == "ERROR" and lost["error_class"] == "storage" and lost["lost"] >= 2
    assert not [e for e in events if e.get("event") in ("child.crashed", "writer.failed")]
    assert "tenant.stopped" in [e.get("event") for e in events]
    assert not list(tmp_path.rglob("*.tmp"))
