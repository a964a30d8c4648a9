"""A tenant's child against a simulated fleet: rates, waits, faults, restarts and list changes."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from supervisor.procedures.benign_waits import benign_wait_types
from supervisor.servers import remove_server, set_enabled
from supervisor.storage.tenant_schema import metric_snapshots, server_status_events, servers, wait_stats
from tests.helpers.deployment import TenantDeployment
from tests.helpers.waiting import wait_until

HEALTHY = 17
INTERVAL = 2.0
TIMEOUT = 2.0


def rate_of(index: int) -> float:
    return 200.0 + 50.0 * index


def snapshots_by_server(deployment: TenantDeployment) -> dict[int, list[Any]]:
    by_server: dict[int, list[Any]] = {}
    with deployment.engine.connect() as conn:
        rows = conn.execute(select(metric_snapshots).order_by(metric_snapshots.c.collected_at))
        for row in rows:
            by_server.setdefault(row.server_id, []).append(row)
    return by_server


def test_fleet_with_faults_restart_and_list_changes(
    tmp_path: Path, driver: str, sqlite_url: str, simulator, child_processes
) -> None:
    fleet = [{"name": f"sql-{i:02d}", "profile": {"batch_requests_per_sec": rate_of(i)}} for i in range(HEALTHY)]
    fleet[3]["procedure_installed"] = False  # auto mode falls back to the ad-hoc batch
    fleet[4]["host_platform"] = "Linux"
    fleet += [
        {"name": "down", "faults": {"down": True}},
        {"name": "blackhole", "faults": {"blackhole": True}},
        {"name": "noperm", "faults": {"permission_denied": True}},
        {"name": "late", "profile": {"batch_requests_per_sec": 321}},
    ]
    sim = simulator(fleet)
    deployment = TenantDeployment(
        tmp_path, driver, sqlite_url, collection_interval=INTERVAL, collection_timeout=TIMEOUT
    )
    for entry in fleet[:-1]:
        deployment.add(entry["name"], sim.ports[entry["name"]])
    ids = deployment.server_ids()
    child = child_processes(deployment)

    healthy_ids = [ids[f"sql-{i:02d}"] for i in range(HEALTHY)]

    def three_each() -> bool:
        snaps = snapshots_by_server(deployment)
        return all(len(snaps.get(sid, [])) >= 3 for sid in healthy_ids)

    wait_until(three_each, 40, lambda: f"3 snapshots each; log tail: {deployment.log_events()[-5:]}")

    snaps = snapshots_by_server(deployment)
    for i, sid in enumerate(healthy_ids):
        rows = snaps[sid]
        assert rows[0].batch_requests_per_sec is None
        for row in rows[1:]:
            assert row.batch_requests_per_sec is not None, f"sql-{i:02d}"
            assert abs(row.batch_requests_per_sec - rate_of(i)) <= 0.10 * rate_of(i), (i, row.batch_requests_per_sec)
            assert row.interval_seconds is not None and row.interval_seconds > 0
        for row in rows:
            assert 0 <= row.cpu_percent <= 100
            assert 0 <= row.memory_percent <= 100
            assert row.sql_memory_mb > 0 and row.sql_target_memory_mb > 0 and row.connection_count >= 0
            if i == 4:
                assert row.system_cpu_percent is None
            else:
                assert 0 <= row.system_cpu_percent <= 100
    with deployment.engine.connect() as conn:
        wait_types = set(conn.execute(select(wait_stats.c.wait_type).distinct()).scalars())
        assert wait_types, "no wait rows"
        assert not wait_types & benign_wait_types()
        assert conn.execute(select(func.count()).where(wait_stats.c.waiting_tasks_count <= 0)).scalar() == 0
        status = {row.name: row for row in conn.execute(select(servers))}
    assert status["down"].status == "offline" and status["down"].last_error_class == "connect"
    assert status["blackhole"].status == "offline" and status["blackhole"].last_error_class == "connect"
    assert status["noperm"].status == "online" and status["noperm"].last_error_class == "permission"
    assert status["sql-00"].status == "online" and status["sql-00"].last_error is None
    assert status["down"].consecutive_failures >= 1
    assert "S3cret" not in (status["noperm"].last_error or "")

    # Mid-run: a restart, a server added, one disabled, one removed.
    sim.set_faults("sql-00", restart=1)
    restarted_after = len(snapshots_by_server(deployment)[ids["sql-00"]])
    changed_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    late_id = deployment.add("late", sim.ports["late"])
    set_enabled(deployment.engine, "sql-01", False)
    remove_server(deployment.engine, "sql-02")
    pickup = deployment.settings.server_refresh_interval + INTERVAL + TIMEOUT + 1.5

    def late_log() -> str:
        events = deployment.log_events()
        lines = [e for e in events if e.get("server") == "late" or e.get("event") == "servers.refreshed"]
        return f"2 snapshots of the late server; its log: {lines}"

    wait_until(lambda: len(snapshots_by_server(deployment).get(late_id, [])) >= 2, pickup + 10, late_log)
    time.sleep(INTERVAL)  # room for a wrongful collection of the disabled and removed servers to show

    def rated_after_the_restart() -> bool:
        rates = [row.batch_requests_per_sec for row in snapshots_by_server(deployment)[ids["sql-00"]][restarted_after:]]
        return None in rates and rates[-1] is not None

    # The restart drops the open session: the reconnect may cost a slot, so wait for the sample after it.
    wait_until(rated_after_the_restart, 3 * (INTERVAL + TIMEOUT), "a rate again after the restart")
    snaps = snapshots_by_server(deployment)
    first_late = snaps[late_id][0].collected_at
    assert (first_late - changed_at).total_seconds() <= pickup
    limit = changed_at + dt.timedelta(seconds=deployment.settings.server_refresh_interval + TIMEOUT + 1.0)
    assert all(row.collected_at <= limit for row in snaps[ids["sql-01"]])
    assert all(row.collected_at <= limit for row in snaps[ids["sql-02"]])
    after_restart = snaps[ids["sql-00"]][restarted_after:]
    nulls = [row for row in after_restart if row.batch_requests_per_sec is None]
    assert len(nulls) == 1, [r.batch_requests_per_sec for r in after_restart]
    assert after_restart[-1].batch_requests_per_sec is not None

    code, _ = child.terminate()
    assert code == 0
    with deployment.engine.connect() as conn:
        for column in ("cpu_percent", "memory_percent", "batch_requests_per_sec", "interval_seconds", "duration_ms"):
            assert conn.execute(select(func.count()).where(metric_snapshots.c[column] < 0)).scalar() == 0
        assert conn.execute(select(func.count()).where(wait_stats.c.wait_time_ms < 0)).scalar() == 0
        slowest = conn.execute(select(func.max(metric_snapshots.c.duration_ms))).scalar()
        assert slowest <= (TIMEOUT + 1) * 1000
        events = conn.execute(select(server_status_events.c.server_id, server_status_events.c.status)).all()
    assert (ids["down"], "offline") in events and (ids["noperm"], "online") in events

    logs = deployment.log_events()
    failed = [e for e in logs if e.get("event") == "collection.failed"]
    assert {e["error_class"] for e in failed} >= {"connect", "permission"}
    assert all(e.get("server") and e.get("tenant") == "acme" and "duration_ms" in e for e in failed)
    assert max(e["duration_ms"] for e in failed) <= (TIMEOUT + 1) * 1000
    assert any(e.get("event") == "servers.refreshed" and e.get("added") == 1 for e in logs)
    assert sum(1 for e in logs if e.get("event") == "collection.adhoc_fallback") == 1
    assert not any("S3cret" in json_line for json_line in map(str, logs))
