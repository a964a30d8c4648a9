"""A tenant DB that is unavailable when the child starts: the child says so once (``child.db_unavailable``),
keeps retrying without exiting, and starts collecting as soon as the DB can be read."""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from pathlib import Path

import pytest

from supervisor.children.runtime import STARTUP_RETRY
from tests.collector.test_outage_and_stop import snapshot_times
from tests.helpers.deployment import TenantDeployment
from tests.helpers.waiting import wait_until
from tests.supervisor.test_system_db import _set_connections_allowed


def _events(deployment: TenantDeployment, name: str) -> list[dict]:
    return [e for e in deployment.log_events() if e.get("event") == name]


def _at(record: dict) -> float:
    return dt.datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()


class DbDown:
    """Makes the tenant DB unavailable and back: a SQLite file moved away (the child opens it only if it
    exists), or a PostgreSQL database refusing connections."""

    def __init__(self, kind: str, tmp_path: Path, pg_database) -> None:  # type: ignore[no-untyped-def]
        self.kind = kind
        self.path = tmp_path / "tenant.db"
        self.url = f"sqlite:///{self.path}" if kind == "sqlite" else pg_database()

    def down(self) -> None:
        if self.kind == "sqlite":
            for path in self.path.parent.glob("tenant.db*"):
                path.rename(path.with_name("away-" + path.name))
        else:
            _set_connections_allowed(self.url, False)

    def up(self) -> None:
        if self.kind == "sqlite":
            for path in self.path.parent.glob("away-tenant.db*"):
                path.rename(path.with_name(path.name.removeprefix("away-")))
        else:
            _set_connections_allowed(self.url, True)


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_tenant_db_down_at_start_is_waited_for_then_collected(
    tmp_path: Path, kind: str, pg_database, simulator, child_processes
) -> None:
    db = DbDown(kind, tmp_path, pg_database)
    sim = simulator([{"name": "sql-1"}])
    deployment = TenantDeployment(tmp_path, "freetds", db.url)
    deployment.add("sql-1", sim.ports["sql-1"])
    deployment.engine.dispose()
    db.down()
    try:
        child = child_processes(deployment)
        [down] = wait_until(lambda: _events(deployment, "child.db_unavailable"), 30, "the child to find its DB down")
        assert down["level"] == "WARNING" and down["error_class"] == "storage"
        time.sleep(STARTUP_RETRY + 0.5)  # another attempt: still waiting, not logged again, not exited
        assert len(_events(deployment, "child.db_unavailable")) == 1
        assert child.process.poll() is None
        assert not _events(deployment, "servers.refreshed") and not _events(deployment, "collection.succeeded")
    finally:
        db.up()
    released = time.time()
    [refreshed] = wait_until(lambda: _events(deployment, "servers.refreshed")[:1], 30, "the server list read")
    # The next attempt comes at most STARTUP_RETRY after the last one (plus the read itself).
    assert _at(refreshed) - released <= STARTUP_RETRY + 1.0, _at(refreshed) - released
    [available] = _events(deployment, "child.db_available")
    assert available["level"] == "INFO" and available["outage_s"] >= STARTUP_RETRY
    wait_until(lambda: sum(map(len, snapshot_times(deployment).values())) >= 2, 30, "snapshots stored")
    db.down()  # and once more while it runs: the server list read fails, then works again
    try:
        wait_until(lambda: _events(deployment, "servers.refresh_failed"), 30, "the server list read to fail")
    finally:
        db.up()
    [recovered] = wait_until(lambda: _events(deployment, "servers.refresh_recovered"), 30, "the server list read")
    assert recovered["level"] == "INFO" and recovered["message"].startswith("server list read after ")
    assert child.process.poll() is None  # the same process all along
    code, _ = child.terminate()
    assert code == 0
    assert not _events(deployment, "child.crashed")


def test_a_tenant_db_on_a_full_disk_at_start_says_so_then_collects(tmp_path: Path, simulator, child_processes) -> None:
    """SQLite cannot even open a WAL database on a full file system (its WAL index beside it) and says only ``disk I/O
    error``; before, nothing told that the DB was back either."""
    disk = tmp_path / "disk"
    disk.mkdir()
    sim = simulator([{"name": "sql-1"}])
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], check=True)
    try:
        deployment = TenantDeployment(tmp_path, "freetds", f"sqlite:///{disk}/tenant.db")
        deployment.add("sql-1", sim.ports["sql-1"])
        deployment.engine.dispose()
        filler = disk / "filler"
        subprocess.run(["sh", "-c", f"head -c 4M /dev/zero > {filler}"], capture_output=True)  # it stops when full
        child = child_processes(deployment)
        [down] = wait_until(lambda: _events(deployment, "child.db_unavailable"), 30, "the child to find its DB full")
        assert down["message"].endswith(f"disk I/O error (the file system of {disk} is full)"), down["message"]
        filler.unlink()
        [available] = wait_until(lambda: _events(deployment, "child.db_available"), 30, "the DB available again")
        assert available["message"].startswith("tenant DB available after ")
        wait_until(lambda: snapshot_times(deployment), 30, "a snapshot stored")
        assert child.terminate()[0] == 0
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)
