"""/metrics, /healthz and /readyz served by the real supervisor collecting from the simulator."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.deployment import Deployment
from tests.helpers.ports import free_ports
from tests.helpers.waiting import wait_until
from tests.supervisor.test_with_simulator import add_server


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_health_and_readiness(tmp_path: Path, simulator) -> None:
    sim = simulator([{"name": "a-ok"}, {"name": "a-down", "faults": {"down": True}}, {"name": "b-ok"}])
    [port] = free_ports(1)
    deployment = Deployment(tmp_path, fake_runtime=False)
    deployment.metrics = {"listen": f"127.0.0.1:{port}", "per_server": "yes"}
    deployment.write_config(odbc_driver="FreeTDS", encrypt="no", collection_interval=1, collection_timeout=2)
    for tenant in ("a", "b"):
        deployment.add_tenant(tenant)
    for name in ("a-ok", "a-down", "b-ok"):
        add_server(deployment, name[0], name, sim.ports[name])
    supervisor = deployment.start()
    base = f"http://127.0.0.1:{port}"
    [started] = supervisor.wait_event("supervisor.started")
    assert started["metrics"] == f"{base}/metrics"

    def ready() -> bool:
        return _get(f"{base}/readyz")[0] == 200

    wait_until(ready, 30, "readyz 200")
    assert json.loads(_get(f"{base}/readyz")[1]) == {"ready": True, "system_db": "up"}
    assert _get(f"{base}/healthz")[0] == 200

    def collected(tenant: str) -> float:
        samples = _samples(_get(f"{base}/metrics")[1])
        return samples.get(("collector_collections_total", (("result", "ok"), ("tenant", tenant))), 0.0)

    wait_until(lambda: collected("a") >= 3 and collected("b") >= 3, 30, "collections counted in /metrics")
    _status, text = _get(f"{base}/metrics")
    samples = _samples(text)
    assert samples[("collector_collections_total", (("result", "connect"), ("tenant", "a")))] >= 1
    assert samples[("collector_servers", (("status", "online"), ("tenant", "a")))] == 1
    assert samples[("collector_servers", (("status", "offline"), ("tenant", "a")))] == 1
    assert samples[("collector_child_state", (("state", "RUNNING"), ("tenant", "b")))] == 1
    assert samples[("collector_child_state", (("state", "BACKOFF"), ("tenant", "b")))] == 0
    assert samples[("collector_system_db_up", ())] == 1 and samples[("collector_leases_held", ())] == 2
    assert samples[("collector_server_up", (("server", "a-down"), ("tenant", "a")))] == 0
    assert samples[("collector_server_up", (("server", "a-ok"), ("tenant", "a")))] == 1
    count = samples[("collector_collection_duration_seconds_count", (("tenant", "b"),))]
    assert count == samples[("collector_collection_duration_seconds_bucket", (("le", "+Inf"), ("tenant", "b")))]
    assert samples[("collector_child_rss_bytes", (("tenant", "a"),))] > 1024 * 1024
    assert ("process_resident_memory_bytes", ()) in samples
    assert any(name == "collector_info" for name, _ in samples)

    def same_story_as_status() -> bool:
        """/metrics (the children's heartbeats) and status (the statuses the writers stored) agree once both
        have caught up: each lags by up to a heartbeat or a writer batch."""
        live = _samples(_get(f"{base}/metrics")[1])
        stored = json.loads(deployment.cli("status", "--json").stdout)["tenants"]
        return all(
            live[("collector_servers", (("status", "online"), ("tenant", t["slug"])))] == t["servers_online"]
            for t in stored
        )

    wait_until(same_story_as_status, 30, "/metrics and status to agree on the servers online")

    titles = {p.cmdline()[0] for p in psutil.Process(supervisor.pid).children()} | {
        psutil.Process(supervisor.pid).cmdline()[0]
    }
    assert {"collector-supervisor: parent", "collector-supervisor: tenant a", "collector-supervisor: tenant b"} <= {
        t.strip() for t in titles
    }

    deployment.cli("tenant", "suspend", "b")
    wait_until(lambda: ("collector_child_state", (("state", "RUNNING"), ("tenant", "b"))) not in _samples(
        _get(f"{base}/metrics")[1]), 30, "the suspended tenant's series to go")  # fmt: skip

    locker = sqlite3.connect(deployment.root / "var" / "system.db", isolation_level=None, timeout=30)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        wait_until(lambda: _get(f"{base}/readyz")[0] == 503, 30, "readyz 503 while the system DB is locked")
        assert json.loads(_get(f"{base}/readyz")[1])["system_db"] == "down"
    finally:
        locker.execute("COMMIT")
        locker.close()
    wait_until(ready, 30, "readyz 200 again")
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait_exit() == 0


def test_a_metrics_port_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    [port] = free_ports(1)
    code = f"import socket,time; s=socket.socket(); s.bind(('127.0.0.1',{port})); s.listen(); print('ok', flush=True)"
    holder = subprocess.Popen([sys.executable, "-c", code + "; time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        deployment = Deployment(tmp_path)
        deployment.metrics = {"listen": f"127.0.0.1:{port}"}
        deployment.write_config()
        result = deployment.cli("run", check=False)
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and "metrics.listen" in result.stderr and str(port) in result.stderr
    finally:
        holder.kill()
        holder.wait()
