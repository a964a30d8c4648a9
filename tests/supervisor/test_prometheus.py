"""A real Prometheus (the Debian ``prometheus`` binary) scraping a real ``collector-supervisor run`` against the
SQL Server simulator, with the shipped alert rules loaded: what an SRE's Prometheus would see."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.deployment import TenantDeployment
from tests.helpers.ports import free_ports
from tests.helpers.simulator import Simulator
from tests.helpers.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "collector-rules.yml"
JOB = "collector-supervisor"  # the job name the shipped rules expect
#: CONTRACT §8's families as Prometheus stores them (a histogram as its _bucket, _sum and _count series).
FAMILIES = {
    "collector_collections_total",
    "collector_collection_duration_seconds_bucket",
    "collector_collection_duration_seconds_sum",
    "collector_collection_duration_seconds_count",
    "collector_servers",
    "collector_newest_snapshot_age_seconds",
    "collector_pending_writes",
    "collector_spooled_results",
    "collector_child_state",
    "collector_child_restarts_total",
    "collector_child_rss_bytes",
    "collector_system_db_up",
    "collector_leases_held",
    "collector_info",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_start_time_seconds",
}


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/bin:/bin")
    assert path, f"{name} is not installed: scripts/setup.sh installs it"
    return path


def _get(url: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _answers(url: str) -> bool:
    try:
        _get(url, timeout=1)
    except (OSError, urllib.error.URLError):
        return False
    return True


class Prometheus:
    """``prometheus`` on 127.0.0.1:``port`` with its storage in ``directory``, scraping ``target`` every second."""

    def __init__(self, directory: Path, port: int, target: str) -> None:
        self.url = f"http://127.0.0.1:{port}"
        config = directory / "prometheus.yml"
        config.write_text(
            json.dumps(  # JSON is YAML
                {
                    "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(RULES)],
                    "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}],
                }
            ),
            encoding="utf-8",
        )
        self.log_path = directory / "prometheus.log"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [
                _tool("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            cwd=directory,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: self.process.poll() is not None or _answers(f"{self.url}/-/ready"), 20, self.log_tail)
        assert self.process.poll() is None, self.log_tail()

    def log_tail(self) -> str:
        return "prometheus log:\n" + "\n".join(self.log_path.read_text().splitlines()[-20:])

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        document = json.loads(_get(f"{self.url}/api/v1/{path}{query}"))
        assert document["status"] == "success", document
        return document["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.api("query", query=expr)["result"]

    def value(self, expr: str) -> float | None:
        """The single sample ``expr`` gives now, or None when it gives nothing."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@pytest.fixture
def supervised(tmp_path: Path, simulator: Callable[[list[dict[str, Any]]], Simulator]) -> Iterator[str]:
    """``collector-supervisor run`` collecting three simulated servers (one down) of tenant acme every second,
    its metrics on ``[metrics] listen``; yields that host:port once collections are counted there. (Tenant and
    servers go in through the API, not the CLI: a second each saved.)"""
    sim = simulator([{"name": "sql01"}, {"name": "sql02"}, {"name": "sql03", "faults": {"down": True}}])
    root = tmp_path / "collector"
    root.mkdir()
    deployment = TenantDeployment(
        root, "freetds", f"sqlite:///{root}/acme.db", collection_interval=1, poll_interval=0.5, shutdown_timeout=5
    )
    for name, port in sim.ports.items():
        deployment.add(name, port, interval_seconds=1)
    (port,) = free_ports(1)
    listen = f"127.0.0.1:{port}"
    deployment.metrics = {"listen": listen}
    deployment.logging = {"level": "INFO"}  # to the supervisor's log file (stderr), not the child's
    deployment.write_config()
    supervisor = deployment.start()
    try:

        def counted_or_exited() -> bool:
            if supervisor.popen.poll() is not None:
                return True
            try:
                return b"collector_collections_total{" in _get(f"http://{listen}/metrics", timeout=1)
            except (OSError, urllib.error.URLError):
                return False

        wait_until(
            counted_or_exited,
            20,
            lambda: f"no collections on {listen}/metrics; supervisor log:\n{supervisor.log_path.read_text()[-3000:]}",
        )
        assert supervisor.popen.poll() is None, supervisor.log_path.read_text()[-3000:]
        yield listen
    finally:
        deployment.stop_all()


def test_prometheus_scrapes_the_supervisor(tmp_path: Path, supervised: str) -> None:
    # promtool's lint (metric and label naming, units, counters' _total, help text) on the text format, as curl
    # gets it (Prometheus itself asks for OpenMetrics below).
    exposition = _get(f"http://{supervised}/metrics")
    lint = subprocess.run([_tool("promtool"), "check", "metrics"], input=exposition, capture_output=True, timeout=30)
    assert lint.returncode == 0 and not lint.stdout.strip() and not lint.stderr.strip(), (
        lint.stdout.decode() + lint.stderr.decode()
    )

    (port,) = free_ports(1)
    prometheus = Prometheus(tmp_path, port, supervised)
    try:
        target = f'{{job="{JOB}"}}'
        wait_until(lambda: prometheus.value(f"up{target}") == 1, 15, prometheus.log_tail)

        def ok_collections() -> float:
            return prometheus.value(f'sum(collector_collections_total{{job="{JOB}", result="ok"}})') or 0.0

        first = wait_until(ok_collections, 15, "collector_collections_total{result=ok} in Prometheus")
        wait_until(lambda: ok_collections() > first, 15, f"collector_collections_total rising above {first}")
        assert prometheus.value(f'sum(collector_collections_total{{job="{JOB}", result!="ok"}})')  # sql03 is down

        # Every family of CONTRACT §8 stored, with the tenant's labels where it has them.
        def stored() -> set[str]:
            return {s["metric"]["__name__"] for s in prometheus.query(f'count by (__name__) ({{job="{JOB}"}})')}

        wait_until(lambda: stored() >= FAMILIES, 15, lambda: f"missing: {FAMILIES - stored()}")
        assert prometheus.value(f'collector_child_state{{job="{JOB}", tenant="acme", state="RUNNING"}}') == 1
        assert prometheus.value(f'collector_servers{{job="{JOB}", tenant="acme", status="online"}}') == 2
        assert prometheus.value(f"collector_system_db_up{target}") == 1

        # The metrics the shipped rules name are all among them.
        used = set(re.findall(r"\bcollector_[a-z_]+", RULES.read_text(encoding="utf-8")))
        assert used, RULES
        assert used <= stored(), used - stored()

        # No scrape error, ever: the target healthy, up never 0, nothing rejected by the TSDB.
        (active,) = prometheus.api("targets")["activeTargets"]
        assert active["health"] == "up" and active["lastError"] == "", active
        assert prometheus.value(f"min_over_time(up{target}[1m])") == 1
        assert (prometheus.value(f"scrape_samples_scraped{target}") or 0) > 0
        own = _get(f"{prometheus.url}/metrics").decode()
        rejected = re.findall(r"^prometheus_target_scrapes_\w+_total (\S+)$", own, re.M)
        assert rejected and all(float(v) == 0 for v in rejected), rejected

        # The shipped rules evaluate against the real series without an error; the one that should goes pending
        # (a third of acme's collections fail: sql03 is down), on its way to fire after its 10 minutes.
        def pending() -> list[dict[str, Any]]:
            return [a for a in prometheus.api("alerts")["alerts"] if a["state"] == "pending"]

        wait_until(pending, 15, lambda: f"no pending alert: {prometheus.api('alerts')}")
        assert [(a["labels"]["alertname"], a["labels"]["tenant"]) for a in pending()] == [
            ("CollectorCollectionsFailing", "acme")
        ]
        assert [a for a in prometheus.api("alerts")["alerts"] if a["state"] != "pending"] == []
        rules = [rule for group in prometheus.api("rules")["groups"] for rule in group["rules"]]
        assert {rule["name"] for rule in rules} == set(re.findall(r"- alert: (\w+)", RULES.read_text()))
        assert all(rule["health"] == "ok" and not rule.get("lastError") for rule in rules), rules
    finally:
        prometheus.stop()
