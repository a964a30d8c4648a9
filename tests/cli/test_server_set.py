"""``server set`` through the real command line against a running tenant child collecting from the simulator:
a new port, a new password and a new interval each take effect in the child within a server-list refresh, on
the same server id (its history stays attached); what ``server add`` refuses, ``server set`` refuses too."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from supervisor.storage.tenant_schema import metric_snapshots, servers
from tests.cli.conftest import Workspace, assert_one_line_error
from tests.helpers.cli import run_cli
from tests.helpers.deployment import Child, TenantDeployment
from tests.helpers.simulator import SIM_PASSWORD, Simulator
from tests.helpers.waiting import wait_until

#: Each simulated server answers with its own number of user connections, so a snapshot tells who answered.
FLEET = [
    {"name": "few", "profile": {"user_connections": [3, 3]}},
    {"name": "many", "profile": {"user_connections": [700, 700]}},
]


def snapshots(deployment: TenantDeployment, server_id: int) -> list[Any]:
    with deployment.engine.connect() as conn:
        query = (
            select(metric_snapshots.c.collected_at, metric_snapshots.c.connection_count)
            .where(metric_snapshots.c.server_id == server_id)
            .order_by(metric_snapshots.c.collected_at)
        )
        return list(conn.execute(query))


def server_row(deployment: TenantDeployment, name: str) -> Any:
    with deployment.engine.connect() as conn:
        return conn.execute(select(servers).where(servers.c.name == name)).one()


def test_server_set_reaches_the_running_child(
    tmp_path: Path, simulator: Callable[[list[dict[str, Any]]], Simulator]
) -> None:
    sim = simulator(FLEET)
    deployment = TenantDeployment(tmp_path, "msodbc18", f"sqlite:///{tmp_path}/tenant.db")
    moving = deployment.add("moving", sim.ports["few"])
    locked = deployment.add("locked", sim.ports["few"], password="not-the-password")
    paced = deployment.add("paced", sim.ports["many"], interval_seconds=4)
    config = str(deployment.config)

    def cli(*args: str, stdin: str | None = None) -> str:
        result = run_cli("-c", config, *args, cwd=tmp_path, stdin=stdin)
        assert result.returncode == 0, (args, result.stderr)
        return result.stdout

    child = Child(deployment)
    try:
        wait_until(lambda: len(snapshots(deployment, moving)) >= 2, 30, "snapshots from 'moving' on port 'few'")
        wait_until(lambda: server_row(deployment, "locked").last_error_class == "login", 30, "'locked' failing")
        assert len(snapshots(deployment, paced)) <= 3
        assert {row.connection_count for row in snapshots(deployment, moving)} == {3}

        # A new port: the kept connection to 'few' is retired, the next collection connects to 'many'.
        out = cli("server", "set", "acme", "moving", "--port", str(sim.ports["many"]))
        assert f"port {sim.ports['few']} -> {sim.ports['many']}" in out
        before = len(snapshots(deployment, moving))
        wait_until(lambda: snapshots(deployment, moving)[-1].connection_count == 700, 20, "'moving' on 'many'")
        history = snapshots(deployment, moving)
        assert len(history) > before and history[0].connection_count == 3  # same id: the old rows stay

        # A new password, from stdin: stored encrypted (never the plaintext), and the login now succeeds.
        token_before = server_row(deployment, "locked").password_encrypted
        out = cli("server", "set", "acme", "locked", "--password-stdin", stdin=SIM_PASSWORD + "\n")
        assert "password replaced" in out and SIM_PASSWORD not in out
        row = server_row(deployment, "locked")
        assert row.password_encrypted != token_before and SIM_PASSWORD not in row.password_encrypted
        assert deployment.box.decrypt(row.password_encrypted) == SIM_PASSWORD
        wait_until(lambda: server_row(deployment, "locked").status == "online", 20, "'locked' online")
        assert server_row(deployment, "locked").id == locked

        # A shorter interval: collections of 'paced' come every second instead of every 4.
        cli("server", "set", "acme", "paced", "--interval", "1")
        changed_at = len(snapshots(deployment, paced))
        wait_until(lambda: len(snapshots(deployment, paced)) >= changed_at + 5, 20, "'paced' every second")
        times = [row.collected_at for row in snapshots(deployment, paced)[changed_at + 1 :]]
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        assert gaps and max(gaps) < 2.0, gaps

        listed = {s["name"]: s for s in json.loads(cli("server", "list", "acme", "--json"))}
        assert listed["moving"]["port"] == sim.ports["many"] and listed["paced"]["interval_seconds"] == 1
        refreshed = [e for e in deployment.log_events() if e.get("event") == "servers.refreshed" and e.get("changed")]
        assert len(refreshed) >= 3, refreshed
    finally:
        child.kill()


def test_server_set_refuses_what_server_add_refuses(workspace: Workspace) -> None:
    workspace.setup("tenant", "add", "acme")
    workspace.setup("server", "add", "acme", "sql01", "--host", "db1.example", "--interval", "30")
    unchanged = workspace.snapshot()
    cases: list[tuple[tuple[str, ...], dict[str, str], list[str]]] = [
        (("--port", "0"), {}, ["--port 0"]),
        (("--port", "65536"), {}, ["--port 65536"]),
        (("--interval", "0"), {}, ["--interval 0"]),
        (("--host", "has space"), {}, ["--host"]),
        (("--host", "h" * 300), {}, ["--host"]),
        (("--encrypt", "maybe"), {}, ["--encrypt"]),
        (("--password-env", "NOT_SET_ANYWHERE"), {}, ["NOT_SET_ANYWHERE"]),
        (("--password-env", ""), {}, ["--password-env", "not an environment variable name"]),  # once: "removed"
        (("--password-env", "PW"), {"PW": "x" * 129}, ["password"]),
        (("--auth", "entra-token"), {}, ["entra-token"]),
        (("--token-file", "/tmp/token"), {}, ["entra-token"]),
        (("--enabled", "--disabled"), {}, ["--enabled", "--disabled"]),
        ((), {}, ["nothing to change"]),
    ]
    for options, env, fragments in cases:
        result = workspace.run("server", "set", "acme", "sql01", *options, env=env)
        assert_one_line_error(result, *fragments)
    assert_one_line_error(workspace.run("server", "set", "acme", "nope", "--port", "1"), "unknown server 'nope'")
    assert_one_line_error(workspace.run("server", "set", "nope", "sql01", "--port", "1"), "unknown tenant 'nope'")
    assert workspace.snapshot() == unchanged  # nothing stored by any refused change

    out = workspace.ok(
        "server", "set", "acme", "sql01", "--disabled", "--encrypt", "strict", "--collection-mode", "adhoc"
    )
    assert "enabled yes -> no" in out and "encrypt default -> strict" in out
    [row] = json.loads(workspace.ok("server", "list", "acme", "--json"))
    assert (row["enabled"], row["encrypt"], row["collection_mode"], row["interval_seconds"]) == (
        False, "strict", "adhoc", 30,
    )  # fmt: skip
    workspace.ok("server", "set", "acme", "sql01", "--enabled", "--trust-server-certificate")
    [row] = json.loads(workspace.ok("server", "list", "acme", "--json"))
    assert row["enabled"] is True and row["trust_server_certificate"] is True and row["host"] == "db1.example"


@pytest.mark.parametrize("source", ["--token-command", "--token-file"])
def test_server_set_switches_authentication(workspace: Workspace, tmp_path: Path, source: str) -> None:
    """To entra-token: the SQL login goes (the driver refuses a user with a token); one token source replaces
    the other; back to sql: the token source goes."""
    workspace.setup("tenant", "add", "acme")
    workspace.setup("server", "add", "acme", "sql01", "--host", "db1.example", "--user", "monitor")
    value = "print-token" if source == "--token-command" else str(tmp_path / "token")
    workspace.ok("server", "set", "acme", "sql01", "--auth", "entra-token", source, value)
    [row] = json.loads(workspace.ok("server", "list", "acme", "--json"))
    assert (row["auth"], row["username"]) == ("entra-token", None)
    assert row["token_command" if source == "--token-command" else "token_file"] == value
    other = "--token-file" if source == "--token-command" else "--token-command"
    workspace.ok("server", "set", "acme", "sql01", other, str(tmp_path / "other"))
    [row] = json.loads(workspace.ok("server", "list", "acme", "--json"))
    assert [row["token_command"], row["token_file"]].count(None) == 1
    workspace.ok("server", "set", "acme", "sql01", "--auth", "sql", "--user", "monitor")
    [row] = json.loads(workspace.ok("server", "list", "acme", "--json"))
    assert (row["auth"], row["username"], row["token_command"], row["token_file"]) == ("sql", "monitor", None, None)
