"""A tenant DB host that hangs (no answer, no TCP error: a frozen VM, a stopped server, a storage stall), through a
forwarder that stops reading (``tests.helpers.frozen_db``)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.collector.test_outage_and_stop import assert_each_collection_stored_once, snapshot_times
from tests.helpers.deployment import TenantDeployment
from tests.helpers.frozen_db import FreezableForwarder
from tests.helpers.waiting import wait_until

SHUTDOWN_TIMEOUT = 5


@pytest.mark.postgres
def test_a_stop_while_the_tenant_db_hangs_spools_within_shutdown_timeout(
    tmp_path: Path, pg_database, simulator, child_processes
) -> None:
    """Before: the writer's flush waited 5.5 s on the unanswered commit, so with ``shutdown_timeout = 5`` the
    parent's KILL came first and everything collected since the freeze was lost (no spool file)."""
    forwarder = FreezableForwarder(pg_database())
    try:
        fleet = [{"name": f"sql-{i}"} for i in range(3)]
        sim = simulator(fleet)
        deployment = TenantDeployment(tmp_path, "freetds", forwarder.url, shutdown_timeout=SHUTDOWN_TIMEOUT,
                                      collection_interval=1)  # fmt: skip
        for entry in fleet:
            deployment.add(entry["name"], sim.ports[entry["name"]])
        child = child_processes(deployment)
        wait_until(lambda: len(snapshot_times(deployment)) == 3, 30, "a snapshot of each server")
        with forwarder.frozen():
            time.sleep(3)  # results pile up; the writer's next commit gets no answer
            code, seconds = child.terminate()
            assert code == 0
            assert seconds < SHUTDOWN_TIMEOUT, seconds  # the parent's KILL comes at shutdown_timeout
            spooled = sum(len(p.read_bytes().splitlines()) for p in (tmp_path / "spool" / "acme").glob("*.jsonl"))
            assert spooled >= 6, spooled  # 3 s of 3 servers at 1 s
        child = child_processes(deployment)
        wait_until(lambda: not list((tmp_path / "spool" / "acme").glob("*.jsonl")), 30, "the spool replayed")
        assert child.terminate()[0] == 0
        assert_each_collection_stored_once(deployment)
    finally:
        forwarder.close()


@pytest.mark.postgres
def test_a_tenant_db_that_hangs_while_the_child_runs_is_an_outage_and_nothing_is_lost(
    tmp_path: Path, pg_database, simulator, child_processes
) -> None:
    """No server-side timeout fires when the DB host answers nothing: before, the writer waited in its commit for
    as long as the hang lasted, without a line (45 s in a probe), and a stop then lost what it held."""
    forwarder = FreezableForwarder(pg_database())
    try:
        fleet = [{"name": f"sql-{i}"} for i in range(2)]
        sim = simulator(fleet)
        deployment = TenantDeployment(tmp_path, "freetds", forwarder.url, collection_interval=1)
        for entry in fleet:
            deployment.add(entry["name"], sim.ports[entry["name"]])
        child = child_processes(deployment)
        wait_until(lambda: len(snapshot_times(deployment)) == 2, 30, "a snapshot of each server")
        with forwarder.frozen():
            cut = wait_until(lambda: [e for e in deployment.log_events() if e.get("event") == "storage.stall_cut"],
                             60, "the hung commit's connection to be cut")  # fmt: skip
            wait_until(lambda: any(e.get("event") == "writer.db_unavailable" for e in deployment.log_events()), 30,
                       "the writer to keep its results")  # fmt: skip
        assert "gave no answer within 15 s: its connection was cut" in cut[0]["message"], cut[0]["message"]
        wait_until(lambda: any(e.get("event") == "writer.db_available" for e in deployment.log_events()), 60,
                   "the writer to store them")  # fmt: skip
        assert child.terminate()[0] == 0
        assert_each_collection_stored_once(deployment)
    finally:
        forwarder.close()
