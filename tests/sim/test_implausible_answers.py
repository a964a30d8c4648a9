"""Figures no server can have, through a real driver into a PostgreSQL tenant DB (``implausible_server``): they are
stored as unknown, and the snapshot and the other waits are stored. Before, upper-casing made ``'ß' * 60`` 120
characters, PostgreSQL refused it for ``wait_stats.wait_type`` VARCHAR(60), and the whole result was dropped
(``writer.rejected``) at every collection; the stale CPU record and the impossible memory figures were stored as
plausible ones."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from supervisor.storage.tenant_schema import metric_snapshots, wait_stats
from tests.helpers.cli import run_cli
from tests.helpers.deployment import TENANT, TenantDeployment
from tests.helpers.ports import free_ports
from tests.helpers.responders import responder


@pytest.fixture(scope="module")
def implausible_port() -> Iterator[int]:
    (port,) = free_ports(1)
    with responder("tests.sim.implausible_server", str(port)):
        yield port


def test_implausible_figures_are_stored_as_unknown_with_the_rest_of_the_snapshot(
    tmp_path: Path, driver: str, pg_database: Callable[[], str], implausible_port: int
) -> None:
    deployment = TenantDeployment(tmp_path, driver, pg_database())
    deployment.add("s1", implausible_port)
    for _ in range(2):  # the first sample is the baseline; the second stores wait increments
        done = run_cli("-c", str(deployment.config), "collect-once", TENANT, "s1", "--json", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    with deployment.engine.connect() as conn:
        snapshots = conn.execute(select(metric_snapshots).order_by(metric_snapshots.c.id)).all()
        waits = conn.execute(select(wait_stats).where(wait_stats.c.snapshot_id == snapshots[-1].id)).all()
    deployment.engine.dispose()
    assert len(snapshots) == 2
    last = snapshots[-1]
    assert (last.cpu_percent, last.system_cpu_percent) == (None, None)  # the record is 6 h old
    assert (last.memory_percent, last.sql_memory_mb) == (None, None)  # 32 GB free of 16; 64 TB used of 16 GB
    assert (last.sql_target_memory_mb, last.connection_count) == (6144, 42)
    assert {row.wait_type: (row.waiting_tasks_count, row.wait_time_ms) for row in waits} == {
        "ß" * 60: (1, 100), "STRAßE": (2, 200), "ЛОК_ОЖИДАНИЕ": (3, 300), "LCK_M_X": (4, 400),
    }  # fmt: skip
