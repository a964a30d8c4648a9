"""``status`` adds up: online + offline + unknown + disabled = servers, for every active tenant; a suspended
tenant's stored statuses are stale (nobody collects), so they are not counted."""

from __future__ import annotations

import json

from sqlalchemy import create_engine, update
from sqlalchemy.pool import NullPool

from supervisor.storage.tenant_schema import servers
from tests.cli.conftest import Workspace


def test_status_counts_add_up_and_a_suspended_tenant_shows_no_stale_counts(workspace: Workspace) -> None:
    workspace.setup("tenant", "add", "acme")
    workspace.setup("tenant", "add", "idle", "--suspended")
    for tenant in ("acme", "idle"):
        for name in ("up", "down", "new", "off", "gone"):
            workspace.setup("server", "add", tenant, name, "--host", "db.example")
        workspace.setup("server", "disable", tenant, "off")
        workspace.setup("server", "remove", tenant, "gone")
        engine = create_engine(workspace.tenant_url(tenant), poolclass=NullPool)
        with engine.begin() as conn:
            conn.execute(update(servers).where(servers.c.name.in_(["up", "off"])).values(status="online"))
            conn.execute(update(servers).where(servers.c.name == "down").values(status="offline"))
        engine.dispose()

    report = {t["slug"]: t for t in json.loads(workspace.ok("status", "--json"))["tenants"]}
    acme = report["acme"]
    counts = [acme[f"servers_{s}"] for s in ("online", "offline", "unknown", "disabled")]
    assert counts == [1, 1, 1, 1] and acme["servers_total"] == 4  # "off" is online in its row, but disabled
    idle = report["idle"]
    assert [idle[f"servers_{s}"] for s in ("online", "offline", "unknown")] == [None, None, None]
    assert idle["servers_disabled"] == 1 and idle["servers_total"] == 4 and "suspended" in idle["note"]

    table = workspace.ok("status").splitlines()
    header = next(line for line in table if line.startswith("TENANT"))
    assert header.split()[6:11] == ["ONLINE", "OFFLINE", "UNKNOWN", "DISABLED", "SERVERS"]
    idle_row = next(line for line in table if line.startswith("idle "))
    assert "suspended: not collected" in idle_row
