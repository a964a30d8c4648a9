"""The simulator driven by FreeTDS's command-line client ``tsql``."""

from __future__ import annotations

import subprocess

from tests.helpers.simulator import SIM_PASSWORD, SIM_USER, StartSimulator


def tsql(port: int, script: str, password: str = SIM_PASSWORD) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["tsql", "-H", "127.0.0.1", "-p", str(port), "-U", SIM_USER, "-P", password, "-o", "q"],
                          input=script, capture_output=True, text=True, timeout=30,
                          env={"TDSVER": "7.4", "PATH": "/usr/bin:/bin"})


def test_tsql_runs_queries_and_the_procedure(simulator: StartSimulator) -> None:
    sim = simulator([{"name": "tsql-box"}])
    done = tsql(sim.ports["tsql-box"], "SELECT @@SERVERNAME\ngo\nEXEC collector.usp_collect_snapshot\ngo\n"
                                      "SELECT * FROM nowhere\ngo\nexit\n")
    output = done.stdout + done.stderr
    assert "tsql-box" in output
    assert "PAGEIOLATCH_SH" in output and "batch_requests_total" in output
    assert "Invalid object name 'nowhere'" in output


def test_tsql_wrong_password(simulator: StartSimulator) -> None:
    sim = simulator([{"name": "tsql-box"}])
    done = tsql(sim.ports["tsql-box"], "SELECT 1\ngo\nexit\n", password="nope")
    assert done.returncode != 0
    assert "Login failed for user 'collector'" in done.stdout + done.stderr
