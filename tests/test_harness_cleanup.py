"""The harness's cleanup (``stray_processes`` in ``tests/conftest.py``), in a pytest run of its own: tests that
start supervisors, a tenant child and the CLI's ``run`` on their own and fail, time out or just leave them running;
nothing they started outlives them, not even until the next test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil

from tests.helpers.deployment import kill_strays, names_folder, pids_gone
from tests.helpers.simulator import REPO

INNER_TESTS = r"""
import json, os, subprocess, time
from pathlib import Path

import pytest

from tests.helpers.cli import CLI
from tests.helpers.deployment import Child, Deployment, TenantDeployment, pids_gone
from tests.helpers.waiting import wait_until

PIDS = Path(os.environ["HARNESS_PIDS"])


def record(*pids):
    PIDS.write_text(json.dumps([*json.loads(PIDS.read_text() or "[]"), *pids]))


def started_supervisor(tmp_path):
    deployment = Deployment(tmp_path)
    deployment.write_config()
    deployment.add_tenant("acme")
    supervisor = deployment.start()
    supervisor.wait_event("fake.started")
    record(supervisor.pid, *supervisor.child_pids())


def test_a_supervisor_then_a_failure(tmp_path):
    started_supervisor(tmp_path)
    raise AssertionError("planted failure")


@pytest.mark.timeout(3)
def test_a_supervisor_then_a_timeout(tmp_path):
    started_supervisor(tmp_path)
    time.sleep(60)


def test_a_tenant_child_then_a_failure(tmp_path):
    child = Child(TenantDeployment(tmp_path, "freetds", f"sqlite:///{tmp_path}/tenant.db"))
    record(child.process.pid)
    raise AssertionError("planted failure")


def test_the_cli_run_then_a_failure(tmp_path):
    config = tmp_path / "collector.ini"
    config.write_text(f"[collector]\nsystem_db = sqlite:///{tmp_path}/system.db\n[metrics]\nlisten =\n")
    running = subprocess.Popen([*CLI, "-c", str(config), "run"], stderr=subprocess.PIPE, start_new_session=True)
    assert b"supervisor.started" in running.stderr.readline()
    record(running.pid)
    raise AssertionError("planted failure")


def test_a_supervisor_left_running_by_a_passing_test(tmp_path):
    started_supervisor(tmp_path)


def test_the_next_test_finds_them_gone():
    assert pids_gone(set(json.loads(PIDS.read_text())))
"""


def run_inner(tmp_path: Path, conftest: str, *args: str) -> tuple[subprocess.CompletedProcess[str], set[int]]:
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "pytest.ini").write_text("[pytest]\n")
    (inner / "conftest.py").write_text(conftest)
    (inner / "test_inner.py").write_text(INNER_TESTS)
    pids = tmp_path / "pids.json"
    pids.write_text("")
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "HARNESS_PIDS": str(pids), "PYTHONPATH": path}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0",
         f"--basetemp={tmp_path / 'basetemp'}", *args],
        cwd=inner, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    return result, set(json.loads(pids.read_text() or "[]"))


def naming(folder: Path) -> list[str]:
    found = [p for p in psutil.process_iter() if p.pid != os.getpid() and names_folder(p, str(folder))]
    return [" ".join(p.cmdline()) for p in found]


def test_tests_that_fail_time_out_or_forget_leave_no_process_behind(tmp_path: Path) -> None:
    result, pids = run_inner(tmp_path, 'pytest_plugins = ["tests.conftest"]\n')
    summary = result.stdout.strip().splitlines()[-1]
    assert "4 failed, 2 passed" in summary, result.stdout[-3000:]
    assert "planted failure" in result.stdout and "Timeout" in result.stdout  # the failures are reported as such
    assert len(pids) >= 7, pids  # three supervisors and their children, a tenant child, a bare ``run``
    assert pids_gone(pids), [psutil.Process(p).cmdline() for p in pids if psutil.pid_exists(p)]
    assert naming(tmp_path / "basetemp") == []


def test_without_the_fixture_such_a_test_leaves_its_supervisor_running(tmp_path: Path) -> None:
    """The check above is not vacuous: the same failing test, without the harness's fixtures."""
    result, pids = run_inner(tmp_path, "", "-k", "a_supervisor_then_a_failure")
    try:
        assert "1 failed" in result.stdout, result.stdout[-3000:]
        assert pids and not pids_gone(pids)
        assert any("collector-supervisor" in line for line in naming(tmp_path / "basetemp"))
    finally:
        kill_strays(tmp_path / "basetemp")
