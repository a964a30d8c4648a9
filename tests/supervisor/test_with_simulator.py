"""The real tenant runtime against the SQL Server simulator, supervised: a graceful stop mid-collection."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select

from supervisor.clock import utcnow
from supervisor.storage.tenant_schema import metric_snapshots, servers, wait_stats
from tests.helpers.deployment import Deployment, pids_gone
from tests.helpers.simulator import SIM_PASSWORD, SIM_USER, Simulator
from tests.helpers.waiting import wait_until

#: The slow servers' query: two intervals of 1 s, so a slot comes while the previous collection is in flight.
SLOW_MS = 2000


def _at(record: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))


@pytest.fixture
def fleet(simulator: Callable[[list[dict[str, Any]]], Simulator]) -> dict[str, int]:
    names = ["a-fast", "a-slow", "a-down", "b-fast", "b-slow", "b-down"]
    entries: list[dict[str, Any]] = []
    for name in names:
        entry: dict[str, Any] = {"name": name}
        if name.endswith("slow"):
            entry["faults"] = {"slow_query_ms": SLOW_MS}
        if name.endswith("down"):
            entry["faults"] = {"down": True}
        entries.append(entry)
    return simulator(entries).ports


def add_server(deployment: Deployment, tenant: str, name: str, port: int) -> None:
    os.environ["SIM_PASSWORD"] = SIM_PASSWORD
    deployment.cli(
        "server", "add", tenant, name, "--host", "127.0.0.1", "--port", str(port),
        "--user", SIM_USER, "--password-env", "SIM_PASSWORD", "--interval", "1", "--encrypt", "no",
    )  # fmt: skip


def test_sigterm_while_collections_are_in_flight(tmp_path: Path, fleet: dict[str, int]) -> None:
    deployment = Deployment(tmp_path, fake_runtime=False)
    deployment.logging["level"] = "DEBUG"  # collection.succeeded lines
    deployment.write_config(
        odbc_driver="FreeTDS", encrypt="no", collection_interval=1, collection_timeout=3, shutdown_timeout=6
    )
    for tenant in ("a", "b"):
        deployment.add_tenant(tenant)
        for name, port in fleet.items():
            if name.startswith(f"{tenant}-"):
                add_server(deployment, tenant, name, port)
    supervisor = deployment.start()
    engines = {t: create_engine(f"sqlite:///{tmp_path}/var/tenants/{t}.db") for t in ("a", "b")}

    def snapshots(tenant: str) -> int:
        with engines[tenant].connect() as conn:
            return int(conn.execute(select(func.count()).select_from(metric_snapshots)).scalar() or 0)

    wait_until(lambda: all(snapshots(t) >= 4 for t in engines), 60, "snapshots from both tenants")
    pids = supervisor.child_pids()
    assert len(pids) == 2
    # a-slow's collection ending at T is followed by the next one starting at the next slot, in (T, T + 1 s],
    # that runs for 2 s: at T + 1.5 s one is in flight whatever the slot's phase.
    [*_, last] = supervisor.wait_event("collection.succeeded", server="a-slow")
    time.sleep(max(0.0, _at(last).timestamp() + 1.5 - time.time()))
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait_exit(timeout=6 + 10) == 0
    assert pids_gone(pids)
    records = supervisor.lines()  # all JSON
    assert records[-1]["event"] == "supervisor.stopped"
    assert not [r for r in records if r["event"] == "child.killed"]
    assert all(r["exit_code"] == 0 for r in records if r["event"] == "child.exited")
    for tenant, engine in engines.items():
        with engine.connect() as conn:
            rows = conn.execute(select(metric_snapshots)).all()
            assert all(r.cpu_percent is not None and r.duration_ms is not None for r in rows)
            orphan_waits = conn.execute(
                select(func.count())
                .select_from(wait_stats)
                .where(wait_stats.c.snapshot_id.not_in(select(metric_snapshots.c.id)))
            ).scalar()
            assert orphan_waits == 0
            status = dict(conn.execute(select(servers.c.name, servers.c.status)).all())
        assert status[f"{tenant}-down"] == "offline" and status[f"{tenant}-fast"] == "online", status
    # The collection in flight at the stop: it ended after the child's tenant.stopping line and was stored.
    [stopping] = [r for r in records if r["event"] == "tenant.stopping" and r["tenant"] == "a"]
    succeeded = [r for r in records if r["event"] == "collection.succeeded" and r["server"] == "a-slow"]
    before = [r for r in succeeded if _at(r) < _at(stopping)]
    after = [r for r in succeeded if _at(r) >= _at(stopping)]
    assert len(after) == 1, (stopping["timestamp"], [r["timestamp"] for r in succeeded])
    with engines["a"].connect() as conn:
        slow_id = conn.execute(select(servers.c.id).where(servers.c.name == "a-slow")).scalar_one()
        stored = conn.execute(
            select(metric_snapshots.c.collected_at).where(metric_snapshots.c.server_id == slow_id)
        ).scalars().all()
    assert len(stored) == len(succeeded)  # every collection logged is stored, the one in flight at the stop too
    # Its sample was taken after the previous one ended (collected_at: the server's time, this host's clock).
    assert max(stored) > _at(before[-1]).replace(tzinfo=None), (max(stored), before[-1]["timestamp"])


def test_collection_goes_on_while_the_system_db_is_gone(tmp_path: Path, fleet: dict[str, int]) -> None:
    """The issue's 30 s outage of a SQLite system DB (file moved away) with the real runtime collecting."""
    deployment = Deployment(tmp_path, fake_runtime=False)
    deployment.write_config(
        odbc_driver="FreeTDS", encrypt="no", collection_interval=1, collection_timeout=3, lease_duration=90
    )
    deployment.add_tenant("a")
    add_server(deployment, "a", "a-fast", fleet["a-fast"])
    supervisor = deployment.start()
    engine = create_engine(f"sqlite:///{tmp_path}/var/tenants/a.db")

    def snapshots() -> int:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(metric_snapshots)).scalar() or 0)

    wait_until(lambda: snapshots() >= 2, 60, "first snapshots")
    pids = supervisor.child_pids()
    db = tmp_path / "var" / "system.db"
    aside = db.with_suffix(".away")
    db.rename(aside)
    supervisor.wait_event("system_db.unavailable")
    outage_start = utcnow()
    time.sleep(30)
    outage_end = utcnow()
    aside.rename(db)
    supervisor.wait_event("system_db.recovered")
    assert len(supervisor.events("system_db.unavailable")) == 1
    assert supervisor.child_pids() == pids
    assert not supervisor.events("child.exited")

    def collected_at() -> list[dt.datetime]:
        with engine.connect() as conn:
            query = select(metric_snapshots.c.collected_at).order_by(metric_snapshots.c.collected_at)
            return list(conn.execute(query).scalars())

    wait_until(lambda: collected_at()[-1] > outage_end, 10, "a snapshot from after the outage stored")
    times = collected_at()
    inside = [t for t in times if outage_start <= t <= outage_end]
    window = (outage_end - outage_start).total_seconds()
    # One server at a 1 s interval: a snapshot for every slot of the 30 s (the edges aside), no slot skipped.
    assert len(inside) >= int(window) - 1, (len(inside), window)
    margin = dt.timedelta(seconds=2)
    around = [t for t in times if outage_start - margin <= t <= outage_end + margin]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(around)]
    assert max(gaps) < 1.5, max(gaps)
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait_exit() == 0
