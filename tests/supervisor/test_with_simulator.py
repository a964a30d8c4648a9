"""The real tenant runtime against the SQL Server simulator, supervised: a graceful stop mid-collection."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Deployment, pids_gone, wait_until
from sqlalchemy import create_engine, func, select

from supervisor.storage.tenant_schema import metric_snapshots, servers, wait_stats

PASSWORD = "Simulat0r!"


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[dict[str, int]]:
    names = ["a-fast", "a-slow", "a-down", "b-fast", "b-slow", "b-down"]
    entries = []
    for name, port in zip(names, _free_ports(len(names)), strict=True):
        entry: dict = {"name": name, "port": port}
        if name.endswith("slow"):
            entry["faults"] = {"slow_query_ms": 700}
        if name.endswith("down"):
            entry["faults"] = {"down": True}
        entries.append(entry)
    fleet_file = tmp_path / "fleet.json"
    fleet_file.write_text(json.dumps({"servers": entries}))
    sim = subprocess.Popen(
        [sys.executable, "-m", "sqlserver_sim", "--fleet", str(fleet_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert sim.stdout is not None
        ready = json.loads(sim.stdout.readline())
        assert ready["event"] == "ready"
        yield {entry["name"]: entry["port"] for entry in entries}
    finally:
        sim.send_signal(signal.SIGTERM)
        try:
            sim.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sim.kill()


def test_sigterm_while_collections_are_in_flight(tmp_path: Path, fleet: dict[str, int]) -> None:
    deployment = Deployment(tmp_path, fake_runtime=False)
    deployment.write_config(
        odbc_driver="FreeTDS", encrypt="no", collection_interval=1, collection_timeout=3, shutdown_timeout=6
    )
    os.environ["SIM_PASSWORD"] = PASSWORD
    for tenant in ("a", "b"):
        deployment.add_tenant(tenant)
        for name, port in fleet.items():
            if name.startswith(f"{tenant}-"):
                deployment.cli(
                    "server", "add", tenant, name, "--host", "127.0.0.1", "--port", str(port),
                    "--user", "sa", "--password-env", "SIM_PASSWORD", "--interval", "1", "--encrypt", "no",
                )  # fmt: skip
    supervisor = deployment.start()
    engines = {t: create_engine(f"sqlite:///{tmp_path}/var/tenants/{t}.db") for t in ("a", "b")}

    def snapshots(tenant: str) -> int:
        with engines[tenant].connect() as conn:
            return int(conn.execute(select(func.count()).select_from(metric_snapshots)).scalar() or 0)

    wait_until(lambda: all(snapshots(t) >= 4 for t in engines), 60, "snapshots from both tenants")
    pids = supervisor.child_pids()
    assert len(pids) == 2
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


def test_collection_goes_on_while_the_system_db_is_gone(tmp_path: Path, fleet: dict[str, int]) -> None:
    """The issue's 30 s outage of a SQLite system DB (file moved away) with the real runtime collecting."""
    deployment = Deployment(tmp_path, fake_runtime=False)
    deployment.write_config(
        odbc_driver="FreeTDS", encrypt="no", collection_interval=1, collection_timeout=3, lease_duration=90
    )
    os.environ["SIM_PASSWORD"] = PASSWORD
    deployment.add_tenant("a")
    deployment.cli(
        "server", "add", "a", "a-fast", "--host", "127.0.0.1", "--port", str(fleet["a-fast"]),
        "--user", "sa", "--password-env", "SIM_PASSWORD", "--interval", "1", "--encrypt", "no",
    )  # fmt: skip
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
    during_start = snapshots()
    time.sleep(30)
    assert snapshots() >= during_start + 15  # one server, 1 s interval: collection went on
    aside.rename(db)
    supervisor.wait_event("system_db.recovered")
    assert len(supervisor.events("system_db.unavailable")) == 1
    assert supervisor.child_pids() == pids
    assert not supervisor.events("child.exited")
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait_exit() == 0
