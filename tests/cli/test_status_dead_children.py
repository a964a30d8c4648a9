"""``status`` judges each child row as it judges instances: on this host by the child's process (its
``process_key``), else by whether its supervisor is alive. Before, a child whose process was gone (its parent
SIGKILLed and nothing restarted) showed as RUNNING for ever; only the instance line said ``ALIVE no``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, update
from sqlalchemy.pool import NullPool

from supervisor.clock import utcnow
from supervisor.storage.system_schema import supervisor_instances, tenant_children
from tests.helpers.deployment import Deployment, pids_gone
from tests.helpers.waiting import wait_until


def _tenants(deployment: Deployment) -> dict[str, dict[str, Any]]:
    report = json.loads(deployment.cli("status", "--json").stdout)
    return {tenant["slug"]: tenant for tenant in report["tenants"]}


def _table_row(deployment: Deployment, slug: str) -> list[str]:
    lines = deployment.cli("status").stdout.splitlines()
    return next(line for line in lines if line.startswith(f"{slug} ")).split(maxsplit=12)


def _all_running(deployment: Deployment, slugs: tuple[str, ...]) -> dict[str, dict[str, Any]] | None:
    tenants = _tenants(deployment)
    return tenants if all(tenants[slug]["state"] == "RUNNING" for slug in slugs) else None


def test_status_shows_children_without_a_process_or_a_live_supervisor_as_gone(tmp_path: Path) -> None:
    deployment = Deployment(tmp_path)  # the fake runtime: children that heartbeat and idle
    deployment.write_config()
    deployment.cli("init-db")
    for slug in ("one", "two"):
        deployment.add_tenant(slug)
    supervisor = deployment.start()
    try:
        tenants = wait_until(lambda: _all_running(deployment, ("one", "two")), 30, "both children RUNNING")
        assert tenants["one"]["child_alive"] is True and tenants["one"]["note"] is None
        pids = {slug: tenants[slug]["pid"] for slug in ("one", "two")}

        # The parent frozen (its rows stay as they are) and one child killed: that child's process is gone.
        supervisor.signal(signal.SIGSTOP)
        os.kill(pids["two"], signal.SIGKILL)
        wait_until(lambda: pids_gone({pids["two"]}), 10, "child two to die")
        tenants = _tenants(deployment)
        assert tenants["one"]["state"] == "RUNNING" and tenants["one"]["child_alive"] is True
        two = tenants["two"]
        assert (two["state"], two["recorded_state"], two["child_alive"]) == ("GONE", "RUNNING", False)
        assert two["pid"] == pids["two"] and two["note"] == "its process is gone (recorded RUNNING)"

        # The parent SIGKILLed, its children killed too, nothing restarted.
        supervisor.signal(signal.SIGKILL)
        supervisor.wait_exit()
        for pid in pids.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_until(lambda: pids_gone(set(pids.values())), 10, "the children to die")
        tenants = _tenants(deployment)
        for slug in ("one", "two"):
            assert tenants[slug]["state"] == "GONE" and tenants[slug]["recorded_state"] == "RUNNING"
            assert tenants[slug]["note"] == "its supervisor is not running (recorded RUNNING)"
        row = _table_row(deployment, "one")
        assert row[2:4] == ["GONE", str(pids["one"])] and row[12] == "its supervisor is not running (recorded RUNNING)"

        # The same rows as written by a supervisor of another host (another boot id), alive by its heartbeat:
        # this host cannot see the processes, so the rows stand.
        _move_to_another_host(deployment)
        tenants = _tenants(deployment)
        for slug in ("one", "two"):
            assert (tenants[slug]["state"], tenants[slug]["child_alive"]) == ("RUNNING", None), tenants[slug]
            assert tenants[slug]["note"] is None
    finally:
        deployment.stop_all()


def _move_to_another_host(deployment: Deployment) -> None:
    engine = create_engine(f"sqlite:///{deployment.root}/var/system.db", poolclass=NullPool)
    other = "00000000-0000-0000-0000-000000000000/4026531836"
    with engine.begin() as conn:
        conn.execute(
            update(supervisor_instances).values(
                host="elsewhere", process_key=f"{other}/1", status="running", heartbeat_at=utcnow(), stopped_at=None
            )
        )
        conn.execute(update(tenant_children).values(process_key=f"{other}/2"))
    engine.dispose()
