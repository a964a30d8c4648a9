"""Another program's migration of a tenant DB under a running child (the web app's, Django-style): a NOT NULL column
the collector does not know. Every result fails alike, so it is the schema, an outage to wait out, not one result's
bad values; before, every result was dropped (one ``writer.rejected`` line each) while the summary said 0 failed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.collector.test_outage_and_stop import assert_each_collection_stored_once, snapshot_times
from tests.helpers.deployment import TenantDeployment
from tests.helpers.waiting import wait_until


@pytest.mark.postgres
def test_a_required_column_added_by_another_program_keeps_the_results_until_it_is_mended(
    tmp_path: Path, pg_database, simulator, child_processes
) -> None:
    fleet = [{"name": "sql-1"}, {"name": "sql-2"}]
    sim = simulator(fleet)
    deployment = TenantDeployment(tmp_path, "freetds", pg_database(), collection_interval=1)
    for entry in fleet:
        deployment.add(entry["name"], sim.ports[entry["name"]])
    child = child_processes(deployment)
    wait_until(lambda: len(snapshot_times(deployment)) == 2, 30, "a snapshot of each server")
    with deployment.engine.begin() as conn:
        conn.execute(text("ALTER TABLE metric_snapshots ADD COLUMN source text NOT NULL DEFAULT 'web'"))
        conn.execute(text("ALTER TABLE metric_snapshots ALTER COLUMN source DROP DEFAULT"))
    wait_until(lambda: any(e.get("event") == "writer.db_unavailable" for e in deployment.log_events()), 30,
               "the writer to keep its results")  # fmt: skip
    time.sleep(3)
    with deployment.engine.begin() as conn:
        conn.execute(text("ALTER TABLE metric_snapshots ALTER COLUMN source DROP NOT NULL"))
    wait_until(lambda: any(e.get("event") == "writer.db_available" for e in deployment.log_events()), 30,
               "the writer to store them")  # fmt: skip
    assert child.terminate()[0] == 0
    events = deployment.log_events()
    assert not [e for e in events if e.get("event") == "writer.rejected"]
    [unavailable] = [e for e in events if e.get("event") == "writer.db_unavailable"]
    assert 'null value in column "source"' in unavailable["message"], unavailable["message"]
    assert_each_collection_stored_once(deployment)
