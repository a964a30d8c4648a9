"""A parent that fails with an unexpected error exits, taking its children with it (SIGTERM, then they stop as
on any stop), so that its service manager can restart it; it used to wait on its running children forever,
holding its descriptors and ignoring SIGTERM."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import psutil

from tests.helpers.deployment import Deployment, pids_gone
from tests.helpers.simulator import REPO
from tests.helpers.waiting import wait_until


def test_a_parent_that_fails_exits_and_stops_its_children(tmp_path: Path) -> None:
    deployment = Deployment(tmp_path, fake_runtime=False)  # real tenant children (without servers): they run on
    deployment.write_config(heartbeat_timeout=4, collection_timeout=2)  # a heartbeat a second: RUNNING soon
    deployment.cli("init-db")
    for slug in ("alpha", "beta"):
        deployment.add_tenant(slug)
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.supervisor.crashing_parent", "-c", str(deployment.config), "run"],
        cwd=REPO, env=deployment.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    children: set[int] = set()
    try:
        wait_until(lambda: children.update(c.pid for c in psutil.Process(process.pid).children()) or children, 30,
                   "the children to start")  # fmt: skip
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            subprocess.run(["pkill", "-KILL", "-s", str(process.pid)], check=False)
            process.wait(10)
        for pid in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
    assert process.returncode == 1
    assert "internal error: RuntimeError: planted failure of the parent's loop" in stderr
    wait_until(lambda: pids_gone(children), 30, "the children to stop")
