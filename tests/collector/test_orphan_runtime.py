"""The real tenant runtime's own parent check, apart from the kernel's parent-death signal: a runtime whose
parent is gone stops by itself and says so (CHILD_EXIT_ORPHANED), with nobody setting its stop event."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from supervisor.children.runtime import IDLE_TICK, TenantRuntime
from supervisor.ipc import CHILD_EXIT_ORPHANED, ChildSpec, Heartbeat
from tests.helpers.deployment import TENANT, TenantDeployment
from tests.helpers.waiting import wait_until


def test_a_runtime_whose_parent_is_gone_stops_by_itself(tmp_path: Path, sqlite_url: str, simulator) -> None:
    sim = simulator([{"name": "sql-1"}])
    deployment = TenantDeployment(tmp_path, "freetds", sqlite_url, collection_interval=1)
    deployment.add("sql-1", sim.ports["sql-1"])
    spec = ChildSpec(tenant_id=1, slug=TENANT, db_url=sqlite_url, instance_id="test", settings=deployment.settings)
    stop, parent = threading.Event(), threading.Event()
    parent.set()
    beats: list[Heartbeat] = []
    runtime = TenantRuntime(spec, stop, beats.append, parent.is_set)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(runtime.run()), daemon=True)
    thread.start()
    try:
        wait_until(lambda: runtime.stats.collections_ok >= 1, 30, "a first collection")
        assert thread.is_alive() and beats
        parent.clear()  # what os.getppid() != parent_pid says once the parent died
        gone = time.monotonic()
        thread.join(IDLE_TICK + 2 + 10)  # the check runs every loop turn (at most IDLE_TICK apart); then the stop
        took = time.monotonic() - gone
        assert not thread.is_alive(), "the runtime did not notice its parent was gone"
        assert codes == [CHILD_EXIT_ORPHANED]
        assert took <= IDLE_TICK + deployment.settings.collection_timeout + 1.0, took
        assert not stop.is_set()
    finally:
        stop.set()
        thread.join(10)
