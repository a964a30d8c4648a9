"""``collect-once`` while a supervisor's child collects the same tenant: the child counts its wait increments from
its own previous sample, so a spot check's increments would cover the same time again (a probe stored 33.6 s of
wait intervals for 20 s of wall time). While the tenant's lease is held, the spot check stores its snapshot without
wait rows and leaves the stored baseline alone; with no supervisor running the tenant it stores both, as before."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from sqlalchemy import text

from supervisor.storage.engine import make_engine
from tests.helpers.cli import run_cli
from tests.helpers.deployment import TENANT, TenantDeployment


def collect_once(deployment: TenantDeployment, tmp_path: Path) -> tuple[dict[str, object], str]:
    done = run_cli("-c", str(deployment.config), "collect-once", TENANT, "s1", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


def stored(deployment: TenantDeployment) -> tuple[int, int, object]:
    """Snapshots, wait rows, the baseline's sample time."""
    with deployment.engine.connect() as conn:
        snapshots = conn.execute(text("SELECT count(*) FROM metric_snapshots")).scalar()
        waits = conn.execute(text("SELECT count(*) FROM wait_stats")).scalar()
        baseline = conn.execute(text("SELECT sample_time FROM counter_baselines")).scalar()
    return int(snapshots or 0), int(waits or 0), baseline


def hold_lease(deployment: TenantDeployment, seconds: float) -> None:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    system = make_engine(deployment.settings.system_db, pooled=False)
    with system.begin() as conn:
        tenant_id = conn.execute(text("SELECT id FROM tenants WHERE slug = :s"), {"s": TENANT}).scalar()
        conn.execute(text("DELETE FROM tenant_leases"))
        lease = "INSERT INTO tenant_leases(tenant_id, owner, acquired_at, expires_at) VALUES (:t, 'vm-1-abc', :a, :e)"
        conn.execute(text(lease), {"t": tenant_id, "a": now, "e": now + dt.timedelta(seconds=seconds)})
    system.dispose()


def test_a_spot_check_stores_no_wait_increments_while_a_child_collects_the_tenant(tmp_path: Path, simulator) -> None:
    sim = simulator([{"name": "s1"}])
    deployment = TenantDeployment(tmp_path, "freetds", f"sqlite:///{tmp_path}/tenant.db")
    deployment.add("s1", sim.ports["s1"])
    collect_once(deployment, tmp_path)
    second, note = collect_once(deployment, tmp_path)
    assert second["waits"] and not note
    snapshots, waits, baseline = stored(deployment)
    assert (snapshots, waits > 0) == (2, True)

    hold_lease(deployment, 60)
    third, note = collect_once(deployment, tmp_path)
    assert third["waits"], "the increments since the stored baseline are still shown"
    assert "a supervisor's child collects tenant acme" in note and "not stored" in note
    assert stored(deployment) == (3, waits, baseline)

    hold_lease(deployment, -60)  # expired: no supervisor runs the tenant any more
    _, note = collect_once(deployment, tmp_path)
    now_snapshots, now_waits, now_baseline = stored(deployment)
    assert not note and now_snapshots == 4 and now_waits > waits and now_baseline != baseline
