"""A parent that does not read its children's pipes (stopped with SIGSTOP, a paused VM) stops no collection: the
children queue their log lines and heartbeats, and drop (and count) what does not fit, instead of blocking."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import create_engine, func, select

from supervisor.secret_box import SecretBox
from supervisor.servers import ServerSpec, add_server
from supervisor.storage.tenant_schema import metric_snapshots
from tests.helpers.deployment import Deployment
from tests.helpers.simulator import SIM_PASSWORD, SIM_USER, Simulator
from tests.helpers.waiting import wait_until

SERVERS = 40


def test_a_stopped_parent_stops_no_collection(
    tmp_path: Path, simulator: Callable[[list[dict[str, Any]]], Simulator]
) -> None:
    """Before: the 64 KiB pipe filled in seconds (DEBUG: a line per collection), one thread blocked in ``send``
    and every other behind its lock; no snapshot was stored until the parent ran again."""
    sim = simulator([{"name": f"s{n}"} for n in range(SERVERS)])
    deployment = Deployment(tmp_path, fake_runtime=False)
    deployment.logging["level"] = "DEBUG"
    # A stop well inside the lease: a longer one makes the children stop themselves (the test below).
    deployment.write_config(odbc_driver="FreeTDS", encrypt="no", collection_interval=1, lease_duration=60)
    deployment.add_tenant("acme")
    engine = create_engine(f"sqlite:///{tmp_path}/var/tenants/acme.db")
    box = SecretBox.load(str(tmp_path / "var" / "secret.key"))
    for n in range(SERVERS):
        spec = ServerSpec(f"s{n}", "127.0.0.1", sim.ports[f"s{n}"], SIM_USER, interval_seconds=1, encrypt="no")
        add_server(engine, spec, box.encrypt(SIM_PASSWORD))

    def snapshots() -> int:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(metric_snapshots)).scalar() or 0)

    supervisor = deployment.start()
    try:
        wait_until(lambda: snapshots() >= SERVERS, 60, "a first round of snapshots")
        parent = supervisor.pid
        os.kill(parent, signal.SIGSTOP)
        try:
            time.sleep(6)  # the pipe is full within a few seconds; a writer batch is at most 5 s
            during = snapshots()
            time.sleep(8)
            stored = snapshots() - during
        finally:
            os.kill(parent, signal.SIGCONT)
        assert stored >= SERVERS * 3, f"{stored} snapshots stored in 8 s of a stopped parent"
        supervisor.signal(signal.SIGTERM)
        assert supervisor.wait_exit(timeout=30) == 0
    finally:
        deployment.stop_all()
    lines = supervisor.lines()  # what was queued meanwhile reached the log (fewer than the queue holds)
    assert not [r for r in lines if r["event"] == "log.dropped"]
    assert len([r for r in lines if r["event"] == "collection.succeeded"]) >= snapshots()


def test_a_child_stops_itself_before_a_stopped_parent_s_lease_could_run_out(tmp_path: Path) -> None:
    """A parent stopped past its lease renews nothing: another instance takes its tenants and starts children of
    its own. Before, this parent's children went on collecting beside them (two children of one tenant for 12 s,
    snapshots 0.01 s apart). Now a child whose parent has not run for the lease term less one poll stops itself;
    the parent, running again, starts it anew (it still holds the lease: no other instance here)."""
    deployment = Deployment(tmp_path)
    deployment.write_config(lease_duration=6, poll_interval=1)  # fence after (6 - 0.6) - 1 - 2 = 2.4 s
    deployment.add_tenant("acme")
    supervisor = deployment.start()
    try:
        supervisor.wait_event("fake.started")
        [child] = supervisor.child_pids()
        os.kill(supervisor.pid, signal.SIGSTOP)
        try:
            wait_until(lambda: not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE,
                       30, "the child to stop while its parent is stopped")  # fmt: skip
        finally:
            os.kill(supervisor.pid, signal.SIGCONT)
        [fenced] = supervisor.wait_event("tenant.fenced")
        assert fenced["level"] == "WARNING" and "has not run for" in fenced["message"], fenced
        supervisor.wait_event("fake.started", count=2)  # started again by its parent, which holds the lease
        supervisor.signal(signal.SIGTERM)
        assert supervisor.wait_exit(timeout=30) == 0
    finally:
        deployment.stop_all()
