"""``collector-supervisor demo --seconds N``: a fleet comes online, faulty servers and the scripted outage go
offline, exit 0."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sqlalchemy import create_engine, func, select

from supervisor.storage.tenant_schema import metric_snapshots, server_status_events, servers
from tests.helpers.cli import CLI


def test_demo_runs_and_stops_cleanly(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    result = subprocess.run(
        [*CLI, "demo", "--tenants", "2", "--servers", "2", "--seconds", "32", "--dir", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "demo stopped (supervisor exit code 0)" in result.stdout
    assert "online" in result.stdout and "offline" in result.stdout
    assert "acme-sql1 made unreachable" in result.stdout
    expected = {
        "acme": {"acme-sql1": "offline", "acme-sql2": "offline"},  # sql1: the scripted outage from 20 s
        "globex": {"globex-sql1": "online", "globex-sql2": "offline"},
    }
    for tenant, statuses in expected.items():
        engine = create_engine(f"sqlite:///{folder}/var/tenants/{tenant}.db")
        with engine.connect() as conn:
            status = dict(conn.execute(select(servers.c.name, servers.c.status)).all())
            assert conn.execute(select(func.count()).select_from(metric_snapshots)).scalar()
            history = (
                conn.execute(
                    select(server_status_events.c.status)
                    .join(servers, servers.c.id == server_status_events.c.server_id)
                    .where(servers.c.name == f"{tenant}-sql1")
                    .order_by(server_status_events.c.at)
                )
                .scalars()
                .all()
            )
        assert status == statuses
        assert history == (["online", "offline"] if tenant == "acme" else ["online"])
    log = (folder / "supervisor.log").read_text().splitlines()
    assert '"supervisor.stopped"' in log[-1]
