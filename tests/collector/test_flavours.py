"""The flavour matrix through the real command line: ``collect-once`` against simulated boxed SQL Server 2016,
2017, 2019, 2022 and 2025 on Windows and Linux (2016 has no Linux build), Managed Instance and Azure SQL
Database (collected per database), with Microsoft ODBC Driver 18 and FreeTDS. Each collection succeeds, stores
every metric the flavour has and NULL exactly where ``flavour_table`` documents it, and the second sample has a
rate. A login without the permission gets a ``permission`` error naming it; a database the login may not open
is a ``login`` failure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from supervisor.procedures.flavour_table import BOXED_LINUX, null_metrics
from supervisor.storage.tenant_schema import metric_snapshots, servers, wait_stats
from tests.helpers.cli import run_cli
from tests.helpers.deployment import TenantDeployment

AZURE = {"engine_edition": 5, "edition": "SQL Azure", "version": "12.0.2000.8", "databases": ["master", "sales"]}
#: server name -> (fleet entry, flavour column of flavour_table, database)
MATRIX: dict[str, tuple[dict[str, Any], str, str | None]] = {
    "box2016-windows": ({"version": "13.0.7000.253"}, "boxed", None),
    "box2017-linux": ({"version": "14.0.3465.1", "host_platform": "Linux"}, BOXED_LINUX, None),
    "box2019-windows": ({"version": "15.0.4385.2"}, "boxed", None),
    "box2019-linux": ({"version": "15.0.4385.2", "host_platform": "Linux"}, BOXED_LINUX, None),
    "box2022-windows": ({"version": "16.0.4135.4", "grants": ["VIEW SERVER PERFORMANCE STATE"]}, "boxed", None),
    "box2022-linux": ({"version": "16.0.4135.4", "host_platform": "Linux"}, BOXED_LINUX, None),
    "box2025-windows": ({"version": "17.0.1000.7"}, "boxed", None),
    "managed-instance": ({"engine_edition": 8, "edition": "SQL Azure", "version": "16.0.5100.0"},
                         "managed_instance", None),
    "azure-sales": (AZURE, "azure_sql_database", "sales"),
}  # fmt: skip
METRICS = ("cpu_percent", "system_cpu_percent", "memory_percent", "sql_memory_mb", "sql_target_memory_mb",
           "connection_count", "batch_requests_per_sec")  # fmt: skip


def snapshots(deployment: TenantDeployment, server_id: int) -> list[dict[str, Any]]:
    with deployment.engine.connect() as conn:
        query = select(metric_snapshots).where(metric_snapshots.c.server_id == server_id)
        return [dict(row) for row in conn.execute(query.order_by(metric_snapshots.c.collected_at)).mappings()]


def wait_rows(deployment: TenantDeployment, snapshot_id: int) -> int:
    with deployment.engine.connect() as conn:
        query = select(func.count()).select_from(wait_stats).where(wait_stats.c.snapshot_id == snapshot_id)
        return int(conn.execute(query).scalar() or 0)


def test_collect_once_on_every_flavour(tmp_path: Path, driver: str, sqlite_url: str, simulator) -> None:
    sim = simulator([{"name": name, **entry} for name, (entry, _, _) in MATRIX.items()])
    deployment = TenantDeployment(tmp_path, driver, sqlite_url)
    ids = {name: deployment.add(name, sim.ports[name], database=db) for name, (_, _, db) in MATRIX.items()}
    config = str(deployment.config)
    for round_ in (1, 2):
        for name in MATRIX:
            done = run_cli("-c", config, "collect-once", "acme", name, "--json", cwd=tmp_path)
            assert done.returncode == 0, (name, round_, done.stderr)
            printed = json.loads(done.stdout)
            assert printed["server"] == name
    for name, (_, column, _database) in MATRIX.items():
        first, second = snapshots(deployment, ids[name])
        expected_nulls = null_metrics(column)
        stored_nulls = {metric for metric in METRICS if second[metric] is None}
        assert stored_nulls == expected_nulls, (name, second)
        assert first["batch_requests_per_sec"] is None and first["interval_seconds"] is None  # a first sample
        assert second["batch_requests_per_sec"] > 0 and second["interval_seconds"] > 0, name
        assert 0 <= second["cpu_percent"] <= 100 and 0 <= second["memory_percent"] <= 100, name
        assert wait_rows(deployment, second["id"]) > 0, name  # increments since the first sample
        assert wait_rows(deployment, first["id"]) == 0
    with deployment.engine.connect() as conn:
        statuses = dict(conn.execute(select(servers.c.name, servers.c.status)).all())
    assert set(statuses.values()) == {"online"}


def test_permission_and_database_errors_name_their_cause(
    tmp_path: Path, driver: str, sqlite_url: str, simulator
) -> None:
    sim = simulator([
        {"name": "box2019-nogrant", "version": "15.0.4385.2", "grants": []},
        {"name": "box2022-nogrant", "version": "16.0.4135.4", "grants": []},
        {"name": "azure-nogrant", **AZURE, "grants": []},
        {"name": "azure-wrong-db", **AZURE},
    ])  # fmt: skip
    deployment = TenantDeployment(tmp_path, driver, sqlite_url)
    databases = {"azure-nogrant": "sales", "azure-wrong-db": "hr"}
    for name in ("box2019-nogrant", "box2022-nogrant", "azure-nogrant", "azure-wrong-db"):
        deployment.add(name, sim.ports[name], database=databases.get(name))
    config = str(deployment.config)
    for name, named in [
        ("box2019-nogrant", "VIEW SERVER STATE"),
        ("box2022-nogrant", "VIEW SERVER PERFORMANCE STATE" if driver == "msodbc18" else "VIEW SERVER STATE"),
        ("azure-nogrant", "VIEW DATABASE STATE"),
    ]:
        done = run_cli("-c", config, "collect-once", "acme", name, cwd=tmp_path)
        assert done.returncode == 1 and "[permission]" in done.stderr, (name, done.stderr)
        with deployment.engine.connect() as conn:
            row = conn.execute(select(servers).where(servers.c.name == name)).mappings().one()
        assert row["last_error_class"] == "permission" and named in row["last_error"], (name, row["last_error"])
        assert row["status"] == "online"  # reachable: the login works, the collection does not
    wrong = run_cli("-c", config, "collect-once", "acme", "azure-wrong-db", cwd=tmp_path)
    assert wrong.returncode == 1 and "[login]" in wrong.stderr, wrong.stderr
