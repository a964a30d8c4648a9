"""Tenant DB outages lose nothing (buffer, retry, spool, replay) and SIGTERM stops a child in time."""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from supervisor.children.writer import BATCH_WINDOW
from supervisor.storage.engine import SQLITE_BUSY_TIMEOUT_MS
from supervisor.storage.tenant_schema import metric_snapshots, servers
from tests.helpers.deployment import TenantDeployment
from tests.helpers.waiting import wait_until

INTERVAL = 2.0
TIMEOUT = 2.0
#: The issue's minute, with one driver; the writer's outage handling does not depend on the driver, so the
#: other one gets 15 s of outage past the writer's first failing attempt (a batch window, then SQLite's busy
#: timeout) to keep the suite short.
OUTAGE_SECONDS = {"freetds": 60.0, "msodbc18": BATCH_WINDOW + SQLITE_BUSY_TIMEOUT_MS / 1000 + 15.0}


def snapshot_times(deployment: TenantDeployment) -> dict[int, list[Any]]:
    times: dict[int, list[Any]] = {}
    with deployment.engine.connect() as conn:
        query = select(metric_snapshots.c.server_id, metric_snapshots.c.collected_at).order_by(
            metric_snapshots.c.collected_at
        )
        for server_id, collected_at in conn.execute(query):
            times.setdefault(server_id, []).append(collected_at)
    return times


def succeeded_per_server(deployment: TenantDeployment) -> Counter[str]:
    return Counter(e["server"] for e in deployment.log_events() if e.get("event") == "collection.succeeded")


def assert_each_collection_stored_once(deployment: TenantDeployment) -> None:
    """Every collection the child logged as succeeded is stored, and none twice."""
    times, logged = snapshot_times(deployment), succeeded_per_server(deployment)
    for name, server_id in deployment.server_ids().items():
        assert len(times[server_id]) == len(set(times[server_id])) == logged[name], name


class ExclusiveLock:
    """Holds SQLite's write lock from outside the child: every write of the child fails (database is locked)."""

    def __init__(self, path: str) -> None:
        self.connection = sqlite3.connect(path, isolation_level=None, timeout=30)

    def __enter__(self) -> ExclusiveLock:
        self.connection.execute("BEGIN EXCLUSIVE")
        return self

    def __exit__(self, *_exc: object) -> None:
        self.connection.execute("ROLLBACK")
        self.connection.close()


def test_tenant_db_outage_spool_and_replay(tmp_path: Path, driver: str, simulator, child_processes) -> None:
    db_path = str(tmp_path / "tenant.db")
    fleet = [{"name": f"sql-{i}"} for i in range(4)]
    sim = simulator(fleet)
    deployment = TenantDeployment(tmp_path, driver, f"sqlite:///{db_path}")
    for entry in fleet:
        deployment.add(entry["name"], sim.ports[entry["name"]])
    ids = deployment.server_ids()

    child = child_processes(deployment)
    wait_until(
        lambda: all(len(v) >= 2 for v in snapshot_times(deployment).values()) and len(snapshot_times(deployment)) == 4,
        30,
        "two snapshots of each of the four servers",
    )
    with ExclusiveLock(db_path):
        time.sleep(OUTAGE_SECONDS[driver])
        during = sum(len(v) for v in snapshot_times(deployment).values())
    wait_until(lambda: sum(len(v) for v in snapshot_times(deployment).values()) > during + 8, 30, "8+ more snapshots")

    # Second outage, and the child is stopped while it lasts: what it holds goes to the spool.
    with ExclusiveLock(db_path):
        time.sleep(5.0)
        code, seconds = child.terminate()
        assert code == 0
        assert seconds < deployment.settings.shutdown_timeout
        spooled = list((tmp_path / "spool" / "acme").glob("*.jsonl"))
        assert spooled, "nothing spooled"

    child = child_processes(deployment)
    wait_until(lambda: not list((tmp_path / "spool" / "acme").glob("*.jsonl")), 30, "the spool to be replayed")
    time.sleep(INTERVAL * 2)
    code, _ = child.terminate()
    assert code == 0

    times = snapshot_times(deployment)
    logged = succeeded_per_server(deployment)
    for name, server_id in ids.items():
        assert len(times[server_id]) == len(set(times[server_id])), "duplicates"
        assert len(times[server_id]) == logged[name], (
            f"{name}: stored {len(times[server_id])}, collected {logged[name]}"
        )
    events = [e.get("event") for e in deployment.log_events()]
    assert "writer.db_unavailable" in events and "writer.db_available" in events
    assert "writer.spooled" in events and "writer.replayed" in events


def test_sigterm_with_a_slow_query_in_flight(
    tmp_path: Path, driver: str, sqlite_url: str, simulator, child_processes
) -> None:
    fleet = [{"name": "fast-1"}, {"name": "fast-2"}, {"name": "slow", "faults": {"slow_query_ms": 30000}}]
    sim = simulator(fleet)
    deployment = TenantDeployment(tmp_path, driver, sqlite_url, collection_timeout=TIMEOUT)
    for entry in fleet:
        deployment.add(entry["name"], sim.ports[entry["name"]])
    ids = deployment.server_ids()
    child = child_processes(deployment)

    def slow_in_flight() -> bool:
        with deployment.engine.connect() as conn:
            checked = conn.execute(select(servers.c.last_checked_at).where(servers.c.id == ids["slow"])).scalar()
        return checked is not None

    wait_until(slow_in_flight, 20, "the first slow collection")  # done; the next one follows at once
    time.sleep(0.5)
    code, seconds = child.terminate()
    assert code == 0
    assert seconds <= TIMEOUT + 2.0
    with deployment.engine.connect() as conn:
        slow = conn.execute(select(servers).where(servers.c.id == ids["slow"])).one()
        counts = dict(
            conn.execute(
                select(metric_snapshots.c.server_id, func.count()).group_by(metric_snapshots.c.server_id)
            ).all()
        )
    assert slow.status == "online" and slow.last_error_class == "timeout"
    assert ids["slow"] not in counts
    logged = succeeded_per_server(deployment)
    assert counts.get(ids["fast-1"], 0) == logged["fast-1"] and counts.get(ids["fast-2"], 0) == logged["fast-2"]
    assert not list((tmp_path / "spool").rglob("*.jsonl"))
    assert any(e.get("event") == "tenant.stopped" for e in deployment.log_events())
