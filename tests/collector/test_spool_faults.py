"""The spool itself failing (a full or unwritable disk) while the tenant DB is down: no crash, no half-written
file, and the results at stake are counted in the log."""

from __future__ import annotations

import sqlite3
import subprocess
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


def _snapshot_count(db_path: str) -> int:
    with sqlite3.connect(db_path) as conn:
        return int(conn.execute("SELECT count(*) FROM metric_snapshots").fetchone()[0])


def test_a_spool_it_cannot_read_or_clean_up_stops_no_collection(tmp_path: Path, simulator, child_processes) -> None:
    """A spool file with a line that is not UTF-8, a directory named like a spool file, and a spool folder where
    nothing can be removed (a read-only file system; ``chattr +i`` here, which binds root too). Before: the
    undecodable line or the directory crashed every start of the child (nothing collected), and the failed removal
    killed the writer thread after the replay (nothing stored while the child looked healthy)."""
    db_path = str(tmp_path / "tenant.db")
    spool_dir = tmp_path / "spool"
    sim = simulator([{"name": "sql-1"}])
    deployment = TenantDeployment(tmp_path, "freetds", f"sqlite:///{db_path}", spool_dir=str(spool_dir),
                                  collection_interval=1)  # fmt: skip
    deployment.add("sql-1", sim.ports["sql-1"])
    child = child_processes(deployment)
    wait_until(lambda: _snapshot_count(db_path) >= 1, 30, "a first snapshot")
    with ExclusiveLock(db_path):
        wait_until(lambda: any(e.get("event") == "writer.db_unavailable" for e in deployment.log_events()), 30,
                   "the writer to find the tenant DB locked")  # fmt: skip
        time.sleep(2)
        assert child.terminate()[0] == 0
    folder = spool_dir / "acme"
    [spooled] = list(folder.glob("*.jsonl"))
    spooled_items = len(spooled.read_bytes().splitlines())
    with spooled.open("ab") as handle:
        handle.write(b'{"server_id": "\xff\xfe not UTF-8"}\n')
    (folder / "00000000T000000-1-000000.jsonl").mkdir()
    before = _snapshot_count(db_path)
    subprocess.run(["chattr", "+i", str(folder)], check=True)
    try:
        child = child_processes(deployment)
        wait_until(lambda: _snapshot_count(db_path) >= before + spooled_items + 3, 40,
                   lambda: f"the replay and new snapshots: {_snapshot_count(db_path) - before} more")  # fmt: skip
        assert child.terminate()[0] == 0
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    events = deployment.log_events()
    names = [e.get("event") for e in events]
    assert not {"child.crashed", "writer.failed"} & set(names), names
    assert names.count("spool.corrupt") >= 1 and names.count("spool.unreadable") == 1, names
    assert names.count("spool.not_removed") == 1, names  # once, not at every replay pass
