"""``collect-once`` and ``procedures`` through the real command line, against the simulator."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import func, select, update

from supervisor.storage.tenant_schema import metric_snapshots, servers
from tests.helpers.cli import run_cli
from tests.helpers.deployment import TenantDeployment


def test_collect_once_and_deploy(tmp_path: Path, driver: str, sqlite_url: str, simulator) -> None:
    fleet = [
        {"name": "good", "procedure_installed": False},
        {"name": "down", "faults": {"down": True}},
    ]
    sim = simulator(fleet)
    deployment = TenantDeployment(tmp_path, driver, sqlite_url)
    for entry in fleet:
        deployment.add(entry["name"], sim.ports[entry["name"]])
    config = str(deployment.config)

    first = run_cli("-c", config, "collect-once", "acme", "good", "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    sample = json.loads(first.stdout)
    assert sample["server"] == "good" and 0 <= sample["cpu_percent"] <= 100
    assert sample["batch_requests_per_sec"] is None

    second = run_cli("-c", config, "collect-once", "acme", "good", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "batch_requests_per_sec" in second.stdout and "CPU_PERCENT" not in second.stdout
    with deployment.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(metric_snapshots)).scalar() == 2
        rate = conn.execute(select(func.max(metric_snapshots.c.batch_requests_per_sec))).scalar()
    assert rate is not None and rate > 0

    failed = run_cli("-c", config, "collect-once", "acme", "down", cwd=tmp_path)
    assert failed.returncode == 1
    assert failed.stderr.count("\n") == 1 and "down" in failed.stderr and "[connect]" in failed.stderr
    assert "S3cret" not in failed.stderr

    unknown = run_cli("-c", config, "collect-once", "acme", "nope", cwd=tmp_path)
    assert unknown.returncode == 2 and "nope" in unknown.stderr

    printed = run_cli("-c", config, "procedures", "--print", cwd=tmp_path)
    assert printed.returncode == 0 and "CREATE OR ALTER PROCEDURE" in printed.stdout and "GO" in printed.stdout

    with deployment.engine.begin() as conn:
        conn.execute(update(servers).where(servers.c.name == "good").values(collection_mode="procedure"))
    missing = run_cli("-c", config, "collect-once", "acme", "good", cwd=tmp_path)
    assert missing.returncode == 1 and "good" in missing.stderr and missing.stderr.count("\n") == 1

    deployed = run_cli("-c", config, "procedures", "deploy", "acme", "good", cwd=tmp_path)
    assert deployed.returncode == 0, deployed.stderr
    assert deployed.stdout.strip() == "installed collector.usp_collect_snapshot on good"
    by_procedure = run_cli("-c", config, "collect-once", "acme", "good", cwd=tmp_path)
    assert by_procedure.returncode == 0, by_procedure.stderr

    not_deployed = run_cli("-c", config, "procedures", "deploy", "acme", "down", cwd=tmp_path)
    assert not_deployed.returncode == 1 and "[connect]" in not_deployed.stderr
