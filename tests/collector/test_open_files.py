"""Open files: one socket per kept connection, so a tenant with more servers than the soft ``RLIMIT_NOFILE``
(1,024 under systemd) runs out of descriptors. Before, the child crashed on the memory guard's next read of
``/proc/self/statm`` (6 or 7 times a minute, a traceback each), and its stop lost what the writer held."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.collector.test_outage_and_stop import snapshot_times, succeeded_per_server
from tests.helpers.cli import CLI
from tests.helpers.deployment import Child, TenantDeployment
from tests.helpers.waiting import wait_until

SERVERS = 60
LIMIT = 100  # 60 sockets and the child's other files do not fit


def test_a_child_short_of_descriptors_says_so_and_keeps_what_it_collected(tmp_path: Path, simulator) -> None:
    fleet = [{"name": f"sql-{i}"} for i in range(SERVERS)]
    sim = simulator(fleet)
    deployment = TenantDeployment(tmp_path, "freetds", f"sqlite:///{tmp_path}/tenant.db", collection_interval=2,
                                  concurrency=10)  # fmt: skip
    for entry in fleet:
        deployment.add(entry["name"], sim.ports[entry["name"]])
    child = Child(deployment, prefix=("prlimit", f"--nofile={LIMIT}:{LIMIT}"))
    try:
        short = wait_until(lambda: [e for e in deployment.log_events() if e.get("event") == "servers.open_files_short"],
                           30, "the warning")  # fmt: skip
        assert short[0]["level"] == "WARNING" and f"this child may open {LIMIT}" in short[0]["message"]
        wait_until(lambda: any(e.get("event") == "collection.failed" for e in deployment.log_events()), 60,
                   "servers beyond the limit failing")  # fmt: skip
        wait_until(lambda: sum(map(len, snapshot_times(deployment).values())) >= 20, 60, "snapshots")
        assert child.terminate()[0] == 0
    finally:
        child.kill()
    events = deployment.log_events()
    assert [e for e in events if e.get("event") == "servers.open_files_short"] == short  # once, not per read
    assert not [e for e in events if e.get("exc_info") or e.get("event") in ("child.crashed", "child.memory_guard_off")]
    stored, logged = snapshot_times(deployment), succeeded_per_server(deployment)
    ids = deployment.server_ids()
    assert sum(logged.values()) == sum(map(len, stored.values()))  # nothing collected was lost
    assert all(len(stored.get(ids[name], [])) == count for name, count in logged.items())


def test_the_supervisor_raises_its_open_files_limit_to_the_hard_one(tmp_path: Path) -> None:
    config = tmp_path / "collector.ini"
    config.write_text(f"[collector]\nsystem_db = sqlite:///{tmp_path}/system.db\n[metrics]\nlisten =\n")
    running = subprocess.Popen(["prlimit", "--nofile=256:4096", *CLI, "-c", str(config), "run"],
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert running.stderr is not None
        started = json.loads(running.stderr.readline())
        assert started["event"] == "supervisor.started" and started["open_files_limit"] == 4096, started
    finally:
        running.terminate()
        assert running.wait(30) == 0
