"""A child forked just before its parent was SIGKILLed exits by itself: it checks the parent it was forked
from, not whatever ``getppid()`` says once it runs (init, by then). Otherwise it would collect forever beside
the restarted supervisor's own child for the same tenant."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil

from tests.helpers.deployment import TENANT, TenantDeployment
from tests.helpers.simulator import REPO
from tests.helpers.waiting import wait_until


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_child_whose_parent_died_before_it_ran_exits(tmp_path: Path) -> None:
    deployment = TenantDeployment(tmp_path, "freetds", f"sqlite:///{tmp_path}/tenants/{TENANT}.db")
    launcher = subprocess.run(
        [sys.executable, "-m", "tests.supervisor.orphan_launcher", str(deployment.config), TENANT],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    child_pid = int(launcher.stdout.split()[0])
    try:
        # Without the check the orphan runs its tenant (no servers) until it is killed.
        wait_until(lambda: gone(child_pid), timeout=20, what="the orphaned child to exit")
    finally:
        if not gone(child_pid):
            psutil.Process(child_pid).kill()
