"""The command line: ready line, SIGHUP reloads touching only changed servers, signals, errors."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyodbc
import pytest

from tests.helpers.ports import free_port_run
from tests.helpers.simulator import EXIT_CANNOT_LISTEN, REPO, Simulator, StartSimulator
from tests.sim.odbc import connection_string, result_sets

PROCEDURE_CALL = "{CALL collector.usp_collect_snapshot}"


def sample(sim: Simulator, name: str, driver: str = "freetds") -> dict[str, Any]:
    with pyodbc.connect(connection_string(driver, sim.ports[name]), timeout=5) as conn:
        sets = result_sets(conn.cursor().execute(PROCEDURE_CALL))
    instance = dict(zip(sets[0][0], sets[0][1][0], strict=True))
    counters = dict(zip(sets[2][0], sets[2][1][0], strict=True))
    waits = {row[0]: row[1] for row in sets[3][1]}
    cpu = sets[1][1][0][0] if sets[1][1] else None
    return {**instance, **counters, "waits": waits, "record_id": cpu}


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_ready_line_lists_every_server(simulator: StartSimulator) -> None:
    sim = simulator([{"name": "a"}, {"name": "b", "faults": {"down": True}}])
    assert sim.ready["event"] == "ready"
    assert sim.ready["servers"] == [
        {"name": "a", "host": "127.0.0.1", "port": sim.ports["a"]},
        {"name": "b", "host": "127.0.0.1", "port": sim.ports["b"]},
    ]
    assert port_open(sim.ports["a"]) and not port_open(sim.ports["b"])
    assert sim.stop() == 0


def test_restart_resets_counters_of_that_server_only(simulator: StartSimulator, driver: str) -> None:
    sim = simulator([{"name": "a"}, {"name": "b"}])
    before = {name: sample(sim, name, driver) for name in ("a", "b")}
    sim.set_faults("a", restart=True)
    assert "1 changed" in sim.stderr_lines[-1]
    after = {name: sample(sim, name, driver) for name in ("a", "b")}
    assert after["a"]["sqlserver_start_time"] > before["a"]["sqlserver_start_time"]
    assert after["a"]["batch_requests_total"] < before["a"]["batch_requests_total"]
    assert after["a"]["record_id"] == 1
    assert all(after["a"]["waits"][w] < count for w, count in before["a"]["waits"].items()
               if w in after["a"]["waits"])
    assert after["b"]["sqlserver_start_time"] == before["b"]["sqlserver_start_time"]
    assert after["b"]["batch_requests_total"] >= before["b"]["batch_requests_total"]
    sim.set_faults("a", restart=2)
    again = sample(sim, "a", driver)
    assert again["sqlserver_start_time"] > after["a"]["sqlserver_start_time"]


def test_down_toggled_by_sighup_leaves_other_sessions_alone(simulator: StartSimulator) -> None:
    sim = simulator([{"name": "a"}, {"name": "b"}])
    other = pyodbc.connect(connection_string("freetds", sim.ports["b"]), timeout=5)
    assert port_open(sim.ports["a"])
    sim.set_faults("a", down=True)
    assert not port_open(sim.ports["a"])
    with pytest.raises(pyodbc.Error):
        pyodbc.connect(connection_string("freetds", sim.ports["a"]), timeout=2)
    assert other.cursor().execute("SELECT 1").fetchone()[0] == 1  # b's open session survived
    sim.set_faults("a", down=False)
    assert sample(sim, "a")["server_name"] == "a"
    other.close()


def test_servers_added_and_removed_on_sighup(simulator: StartSimulator) -> None:
    sim = simulator([{"name": "a"}, {"name": "b"}])
    port_b = sim.ports["b"]
    sim.set_servers([{"name": "a"}, {"name": "c"}])
    assert "1 added" in sim.stderr_lines[-1] and "1 removed" in sim.stderr_lines[-1]
    assert not port_open(port_b)
    assert sample(sim, "c")["server_name"] == "c"


def test_invalid_fleet_on_sighup_keeps_the_old_fleet(simulator: StartSimulator) -> None:
    sim = simulator([{"name": "a"}])
    seen = len(sim.stderr_lines)
    sim.fleet_path.write_text('{"servers": [{"name": "a", "port": "x"}]}', encoding="utf-8")
    assert sim.process is not None
    sim.process.send_signal(1)
    line = sim.wait_for_stderr("invalid fleet", after=seen)
    assert "servers[0].port" in line
    assert sample(sim, "a")["server_name"] == "a"


def test_invalid_fleet_file_exits_2_with_one_line(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.json"
    fleet.write_text(json.dumps({"servers": [{"name": "a", "port": 15000, "profile": {"cpu_percent": [50, 10]}}]}))
    done = subprocess.run([sys.executable, "-m", "sqlserver_sim", "--fleet", str(fleet)], cwd=REPO,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "servers[0].profile.cpu_percent" in lines[0]


def test_generated_fleet_of_50_servers(tmp_path: Path) -> None:
    for _attempt in range(5):
        ports = free_port_run(50)
        base = ports.start
        process = subprocess.Popen(
            [sys.executable, "-m", "sqlserver_sim", "--servers", "50", "--base-port", str(base),
             "--user", "u1", "--password", "p1"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert process.stdout is not None
        line = process.stdout.readline()
        if line:
            break
        process.wait(timeout=10)
        assert process.returncode == EXIT_CANNOT_LISTEN  # an outsider took one of them meanwhile: fresh ones
    try:
        ready = json.loads(line)
        assert [s["port"] for s in ready["servers"]] == list(ports)
        assert len({s["name"] for s in ready["servers"]}) == 50
        for index in (0, 25, 49):
            cs = connection_string("freetds", base + index, user="u1", password="p1")
            with pyodbc.connect(cs, timeout=5) as conn:
                name = conn.cursor().execute("SELECT @@SERVERNAME").fetchone()[0]
            assert name == ready["servers"][index]["name"]
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_sigint_stops_cleanly(simulator: StartSimulator) -> None:
    sim = simulator([{"name": "a"}])
    connection = pyodbc.connect(connection_string("freetds", sim.ports["a"]), timeout=5)
    assert sim.process is not None
    sim.process.send_signal(2)
    assert sim.process.wait(timeout=10) == 0
    connection.close()
    time.sleep(0)
