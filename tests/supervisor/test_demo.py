"""``collector-supervisor demo --seconds N``: a fleet comes online, the faulty servers go offline, exit 0."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import CLI
from sqlalchemy import create_engine, func, select

from supervisor.storage.tenant_schema import metric_snapshots, servers


def test_demo_runs_and_stops_cleanly(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    result = subprocess.run(
        [*CLI, "demo", "--tenants", "2", "--servers", "2", "--seconds", "15", "--dir", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "demo stopped (supervisor exit code 0)" in result.stdout
    assert "online" in result.stdout and "offline" in result.stdout
    for tenant in ("acme", "globex"):
        engine = create_engine(f"sqlite:///{folder}/var/tenants/{tenant}.db")
        with engine.connect() as conn:
            status = dict(conn.execute(select(servers.c.name, servers.c.status)).all())
            assert conn.execute(select(func.count()).select_from(metric_snapshots)).scalar()
        assert status == {f"{tenant}-sql1": "online", f"{tenant}-sql2": "offline"}
    log = (folder / "supervisor.log").read_text().splitlines()
    assert '"supervisor.stopped"' in log[-1]
