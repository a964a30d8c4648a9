"""A tenant DB whose schema is newer than the collector's: the child says so once and exits
(``CHILD_EXIT_NEWER_SCHEMA``), the parent releases the tenant, tries it again only after ``RECHECK_AFTER``, and
shows why (log, ``status``, metrics, /readyz); a newer instance sharing the system DB takes the tenant over.

Real supervisors with the real runtime against the simulator. A process stands for another build through
``schema_shim/sitecustomize.py`` (on its PYTHONPATH): the recheck period in seconds, and for the "older" instance
a collector one tenant schema version behind this code's."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select

from supervisor.storage.migrations import TENANT_VERSION
from supervisor.storage.tenant_schema import metric_snapshots
from tests.helpers.deployment import Deployment
from tests.helpers.ports import free_ports
from tests.helpers.simulator import SIM_PASSWORD, Simulator
from tests.helpers.waiting import wait_until
from tests.supervisor.test_metrics import _get, _samples
from tests.supervisor.test_real_children import _add_server, _epoch, _snapshots

SHIM = Path(__file__).resolve().parent / "schema_shim"
RECHECK_S = 4.0
COLLECTION_INTERVAL = 1.0


class BuildDeployment(Deployment):
    """Real runtime; supervisors started while ``build`` is set run with the shim's variables."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, fake_runtime=False)
        self.build: dict[str, str] = {}
        self.logging["level"] = "DEBUG"

    def env(self) -> dict[str, str]:
        env = super().env()
        if self.build:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SHIM), env.get("PYTHONPATH")]))
            env.update(self.build)
        return env

    def start_build(self, name: str, **build: str) -> Any:
        self.build = {"COLLECTOR_TEST_RECHECK_AFTER": str(RECHECK_S), **build}
        try:
            return self.start(name)
        finally:
            self.build = {}


def _deployment(
    root: Path, sim: Simulator, tenants: dict[str, str], metrics_port: int | None = None
) -> BuildDeployment:
    deployment = BuildDeployment(root)
    if metrics_port is not None:
        deployment.metrics = {"listen": f"127.0.0.1:{metrics_port}"}
    deployment.write_config(odbc_driver="FreeTDS", encrypt="no", collection_interval=COLLECTION_INTERVAL,
                            collection_timeout=2, login_timeout=1)  # fmt: skip
    for tenant, server in tenants.items():
        deployment.add_tenant(tenant)
        _add_server(deployment, tenant, server, sim.ports[server], SIM_PASSWORD)
    return deployment


def _set_tenant_schema(root: Path, tenant: str, version: int) -> None:
    db = sqlite3.connect(root / "var" / "tenants" / f"{tenant}.db")
    db.execute("UPDATE schema_info SET version = ? WHERE name = 'tenant'", (version,))
    db.commit()
    db.close()


def _status(deployment: Deployment) -> dict[str, dict[str, Any]]:
    return {t["slug"]: t for t in json.loads(deployment.cli("status", "--json").stdout)["tenants"]}


def _collected_at(root: Path, tenant: str, since: dt.datetime) -> list[dt.datetime]:
    engine = create_engine(f"sqlite:///{root}/var/tenants/{tenant}.db")
    try:
        with engine.connect() as conn:
            column = metric_snapshots.c.collected_at
            return list(conn.execute(select(column).where(column >= since).order_by(column)).scalars())
    finally:
        engine.dispose()


def test_a_tenant_db_newer_than_the_collector_is_given_up_loudly_and_tried_again_once_a_period(
    tmp_path: Path, simulator: Callable[[list[dict[str, Any]]], Simulator]
) -> None:
    sim = simulator([{"name": "sql-good"}, {"name": "sql-newer"}])
    [port] = free_ports(1)
    deployment = _deployment(tmp_path, sim, {"good": "sql-good", "newer": "sql-newer"}, metrics_port=port)
    _set_tenant_schema(tmp_path, "newer", 99)
    supervisor = deployment.start_build("supervisor")
    try:
        [refusal] = supervisor.wait_event("child.newer_schema", tenant="newer", timeout=30)
        assert refusal["level"] == "ERROR", refusal
        assert "schema version 99" in refusal["message"] and f"version {TENANT_VERSION})" in refusal["message"]
        assert "upgrade collector-supervisor on this host" in refusal["message"].lower()
        assert refusal["db"].endswith("newer.db") and refusal["collector_schema_version"] == TENANT_VERSION
        [given_up] = supervisor.wait_event("tenant.newer_schema", tenant="newer")
        assert given_up["level"] == "ERROR" and "upgrade collector-supervisor on this host" in given_up["message"]

        def shown_in_status() -> dict[str, dict[str, Any]] | None:
            tenants = _status(deployment)
            newer, good = tenants["newer"], tenants["good"]
            settled = newer["state"] == "NEWER_SCHEMA" and newer["owner"] is None and good["state"] == "RUNNING"
            return tenants if settled else None

        tenants = wait_until(shown_in_status, 30, "status to show the tenant given up")
        assert "upgrade collector-supervisor on this host" in tenants["newer"]["note"]
        assert "upgrade collector-supervisor on this host" in tenants["newer"]["last_error"]
        assert tenants["good"]["state"] == "RUNNING" and tenants["good"]["owner"] is not None
        table = deployment.cli("status").stdout
        [row] = [line for line in table.splitlines() if line.startswith("newer ")]
        assert "NEWER_SCHEMA" in row and "upgrade collector-supervisor on this host" in row

        base = f"http://127.0.0.1:{port}"
        series = ("collector_child_state", (("state", "NEWER_SCHEMA"), ("tenant", "newer")))
        wait_until(lambda: _samples(_get(f"{base}/metrics")[1]).get(series) == 1, 20, f"{series} = 1 in /metrics")
        ready = wait_until(lambda: (answer := _get(f"{base}/readyz"))[0] == 200 and json.loads(answer[1]), 20,
                           "/readyz 200")  # fmt: skip
        assert ready == {"ready": True, "system_db": "up", "tenants_newer_schema": ["newer"]}

        time.sleep(3 * RECHECK_S)  # three periods: each may start one child of the tenant, no more
        starts = [_epoch(e) for e in supervisor.events("child.started", tenant="newer")]
        elapsed = time.time() - starts[0]
        assert 2 <= len(starts) <= elapsed / RECHECK_S + 1, (len(starts), elapsed)
        assert all(later - earlier >= RECHECK_S - 0.5 for earlier, later in itertools.pairwise(starts)), starts
        assert len(supervisor.events("child.newer_schema", tenant="newer")) >= len(starts) - 1
        levels = [e["level"] for e in supervisor.events("tenant.newer_schema", tenant="newer")]
        assert levels[0] == "ERROR" and set(levels[1:]) <= {"INFO"} and len(levels) >= len(starts) - 1, levels
        exits = supervisor.events("child.exited", tenant="newer")
        assert exits and {e["exit_code"] for e in exits} == {5}
        for event in ("child.db_unavailable", "child.restarting", "collection.succeeded"):
            assert supervisor.events(event, tenant="newer") == [], event

        assert len(supervisor.events("child.started", tenant="good")) == 1  # the other tenant was never disturbed
        collected = _snapshots(tmp_path, "good")
        wait_until(lambda: _snapshots(tmp_path, "good") >= collected + 2, 20, "the good tenant to go on collecting")
        supervisor.signal(signal.SIGTERM)
        assert supervisor.wait_exit(timeout=20) == 0
    finally:
        supervisor.kill_group()


def test_an_older_instance_leaves_tenants_whose_schema_it_does_not_know_to_a_newer_one(
    tmp_path: Path, simulator: Callable[[list[dict[str, Any]]], Simulator]
) -> None:
    """A rolling upgrade: the tenant DBs are at this code's version; the older instance (one version behind)
    refuses them, the newer one, started after it, claims both at its first polls although a fair split would
    give it one, collects them, and keeps them after the older one's refusals have run out."""
    sim = simulator([{"name": "sql-one"}, {"name": "sql-two"}])
    deployment = _deployment(tmp_path, sim, {"one": "sql-one", "two": "sql-two"})
    older = deployment.start_build("older", COLLECTOR_TEST_OLDER_BUILD="1")
    newer = None
    try:
        refusals = older.wait_event("tenant.newer_schema", count=2, timeout=30)
        assert {e["tenant"] for e in refusals} == {"one", "two"} and {e["level"] for e in refusals} == {"ERROR"}
        wait_until(lambda: all(t["owner"] is None for t in _status(deployment).values()), 20, "both leases released")
        newer = deployment.start("newer")
        [newer_started] = newer.wait_event("supervisor.started", timeout=20)
        since = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        wait_until(lambda: sorted(newer.running_children()) == ["one", "two"], 20, "the newer instance to run both")
        for tenant in ("one", "two"):
            newer.wait_event("collection.succeeded", tenant=tenant, count=2, timeout=20)

        time.sleep(3 * RECHECK_S)  # the older instance's refusals run out: it must find nothing to take back
        assert sorted(newer.running_children()) == ["one", "two"] and newer.events("child.exited") == []
        assert newer.events("tenant.newer_schema") == [] and older.events("collection.succeeded") == []
        for tenant in ("one", "two"):
            [claimed] = newer.events("child.started", tenant=tenant)
            older_exits = [_epoch(e) for e in older.events("child.exited", tenant=tenant)]
            assert older.running_children().get(tenant) is None and max(older_exits) < _epoch(claimed)
            moments = _collected_at(tmp_path, tenant, since)
            assert len(moments) >= 4, moments
            gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(moments)]
            assert min(gaps) >= COLLECTION_INTERVAL / 2, gaps  # one collector only: never two of one slot
        tenants = _status(deployment)
        assert {slug: (t["state"], t["owner"]) for slug, t in tenants.items()} == {
            slug: ("RUNNING", newer_started["instance"]) for slug in ("one", "two")
        }
        for supervisor in (newer, older):
            supervisor.signal(signal.SIGTERM)
            assert supervisor.wait_exit(timeout=20) == 0
    finally:
        older.kill_group()
        if newer is not None:
            newer.kill_group()
