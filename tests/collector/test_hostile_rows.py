"""Tenant DB rows are input (issue 12): the product's web app writes ``servers`` and ``collection_configs``
too, so a bad value in any column makes that one server a ``config`` error, and nothing else.

Through real processes: the real supervisor (parent and forked child) against the simulator, with rows
written directly with SQL as the web app would, on SQLite and PostgreSQL. The bad rows point at a working
simulated server, so a child that used them anyway would mark them online.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import func, select, text

from supervisor.storage.engine import make_engine
from supervisor.storage.system_schema import tenant_children
from supervisor.storage.tenant_schema import metric_snapshots, server_status_events, servers
from tests.helpers.cli import run_cli
from tests.helpers.deployment import TenantDeployment
from tests.helpers.simulator import SIM_PASSWORD
from tests.helpers.waiting import wait_until

#: A key other than the deployment's: a password encrypted with it cannot be decrypted by the child.
OTHER_KEY_TOKEN = Fernet(Fernet.generate_key()).encrypt(SIM_PASSWORD.encode()).decode()

#: server name → (table, column, SQL expression): values any database can hold.
COMMON_BAD = {
    "interval-negative": ("collection_configs", "interval_seconds", "-5"),
    "interval-zero": ("collection_configs", "interval_seconds", "0"),
    "interval-huge": ("collection_configs", "interval_seconds", "2147483647"),
    "port-negative": ("servers", "port", "-1"),
    "port-zero": ("servers", "port", "0"),
    "port-too-big": ("servers", "port", "70000"),
    "encrypt-bogus": ("servers", "encrypt", "'bogus'"),
    "host-empty": ("servers", "host", "''"),
    "host-control": ("servers", "host", "'db' || chr(10) || 'x'"),
    "user-control": ("servers", "username", "'mon' || chr(9) || 'itor'"),
    "mode-unknown": ("servers", "collection_mode", "'turbo'"),
    "password-other-key": ("servers", "password_encrypted", f"'{OTHER_KEY_TOKEN}'"),
    "password-not-a-token": ("servers", "password_encrypted", "'hunter2'"),
    "database-empty": ("servers", "database", "''"),
    "database-control": ("servers", "database", "'ma' || chr(10) || 'ster'"),
    "auth-unknown": ("servers", "auth", "'kerberos'"),
    "auth-token-without-source": ("servers", "auth", "'entra-token'"),
    "token-file-relative": ("servers", "token_file", "'token.jwt'"),
    "token-command-blank": ("servers", "token_command", "'   '"),
}
#: What only SQLite stores (PostgreSQL's types refuse them at the web app's INSERT).
SQLITE_BAD = {
    "interval-text": ("collection_configs", "interval_seconds", "'abc'"),
    "interval-real": ("collection_configs", "interval_seconds", "2.5"),
    "interval-overflow": ("collection_configs", "interval_seconds", "1e300"),
    "port-text": ("servers", "port", "'1433x'"),
    "host-too-long": ("servers", "host", "printf('%.300c', 'h')"),
    "trust-bogus": ("servers", "trust_server_certificate", "'bogus'"),
    "trust-two": ("servers", "trust_server_certificate", "2"),
    "enabled-text": ("collection_configs", "enabled", "'yes'"),
    "user-nul": ("servers", "username", "'mon' || char(0) || 'itor'"),
    "name-blob": ("servers", "name", "x'00ff'"),
    "database-too-long": ("servers", "database", "printf('%.129c', 'd')"),
    "auth-number": ("servers", "auth", "1"),
}
#: The column each bad server's error must name.
EXPECTED_COLUMN = {name: f"{table}.{column}" for name, (table, column, _) in {**COMMON_BAD, **SQLITE_BAD}.items()}


def sqlite_expression(expression: str) -> str:
    return expression.replace("chr(", "char(")


def rows(deployment: TenantDeployment) -> dict[int, dict[str, Any]]:
    with deployment.engine.connect() as conn:
        query = select(servers.c.id, servers.c.status, servers.c.last_error, servers.c.last_error_class)
        return {row.id: row._asdict() for row in conn.execute(query)}


def snapshot_counts(deployment: TenantDeployment) -> Counter[int]:
    with deployment.engine.connect() as conn:
        query = select(metric_snapshots.c.server_id, func.count()).group_by(metric_snapshots.c.server_id)
        return Counter(dict(conn.execute(query).all()))


def set_value(deployment: TenantDeployment, server_id: int, table: str, column: str, expression: str) -> None:
    if deployment.engine.dialect.name == "sqlite":
        expression = expression.replace("chr(", "char(")
    key = "id" if table == "servers" else "server_id"
    with deployment.engine.begin() as conn:
        conn.execute(text(f"UPDATE {table} SET {column} = {expression} WHERE {key} = :id"), {"id": server_id})


def events(deployment: TenantDeployment, event: str) -> list[dict[str, Any]]:
    return [e for e in deployment.log_events() if e.get("event") == event]


def log_tail(deployment: TenantDeployment) -> str:
    return "\n".join(str(e) for e in deployment.log_events()[-15:])


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_bad_rows_are_config_errors_of_their_server_only(
    tmp_path: Path, dialect: str, simulator, request: pytest.FixtureRequest
) -> None:
    sim = simulator([{"name": "good"}])
    port = sim.ports["good"]
    url = f"sqlite:///{tmp_path}/tenant.db" if dialect == "sqlite" else request.getfixturevalue("pg_database")()
    deployment = TenantDeployment(tmp_path, "freetds", url, server_refresh_interval=1, collection_interval=1)
    bad = {**COMMON_BAD, **(SQLITE_BAD if dialect == "sqlite" else {})}
    good_id = deployment.add("good", port)
    ids = {name: deployment.add(name, port) for name in bad}
    for name, (table, column, expression) in bad.items():
        set_value(deployment, ids[name], table, column, expression)

    supervisor = deployment.start()
    try:
        wait_until(lambda: snapshot_counts(deployment)[good_id] >= 3, 40, lambda: log_tail(deployment))
        time.sleep(3)  # several more server-list reads (one a second) with every bad row still there

        stored = rows(deployment)
        assert stored[good_id]["status"] == "online"
        for name, server_id in ids.items():
            row = stored[server_id]
            assert (row["status"], row["last_error_class"]) == ("offline", "config"), (name, row)
            assert EXPECTED_COLUMN[name] in row["last_error"], (name, row["last_error"])
            assert SIM_PASSWORD not in row["last_error"]
        assert not set(snapshot_counts(deployment)) & set(ids.values()), "a bad row was collected"
        differs = "cannot decrypt: the secret key differs from the one the passwords were encrypted with"
        assert differs in stored[ids["password-other-key"]]["last_error"]

        # One log line per bad server, not one per server-list read; one status event each.
        reported = Counter(e["server"] for e in events(deployment, "server.config_error"))
        shown = {name: name if name != "name-blob" else f"#{server_id}" for name, server_id in ids.items()}
        assert reported == Counter(shown.values()), reported
        assert all(
            e["error_class"] == "config" and e["level"] == "ERROR" for e in events(deployment, "server.config_error")
        )
        with deployment.engine.connect() as conn:
            status_events = Counter(conn.execute(select(server_status_events.c.server_id)).scalars())
        assert all(status_events[server_id] == 1 for server_id in ids.values()), status_events

        # The child never crashed, hung or restarted.
        assert len(events(deployment, "child.started")) == 1
        for event in ("child.exited", "child.crashed", "child.restarting", "child.killed", "child.watchdog"):
            assert not events(deployment, event), events(deployment, event)
        assert supervisor.popen.poll() is None

        # Fixed: collected on the next read. Broken another way: one more line, with the new error.
        fixed, rebroken = ids["port-negative"], ids["encrypt-bogus"]
        set_value(deployment, fixed, "servers", "port", str(port))
        set_value(deployment, rebroken, "servers", "encrypt", "'maybe'")
        wait_until(lambda: snapshot_counts(deployment)[fixed] >= 1, 20, "the fixed server collected")
        wait_until(lambda: rows(deployment)[fixed]["status"] == "online", 10, "the fixed server online")
        wait_until(lambda: "'maybe'" in (rows(deployment)[rebroken]["last_error"] or ""), 10, "the new error stored")
        time.sleep(2)
        reported = Counter(e["server"] for e in events(deployment, "server.config_error"))
        assert reported["encrypt-bogus"] == 2 and reported["port-negative"] == 1, reported

        supervisor.signal(signal.SIGTERM)
        assert supervisor.wait_exit(30) == 0
    finally:
        deployment.stop_all()
    system = make_engine(deployment.settings.system_db, pooled=False)
    with system.connect() as conn:
        assert conn.execute(select(tenant_children.c.restarts)).scalar() == 0
    system.dispose()


def test_collect_once_names_the_bad_column_and_the_key_problem(tmp_path: Path, simulator) -> None:
    """The issue's ``unknown server 'good'`` for a password the key cannot decrypt, and a KeyError for a bad
    ``encrypt``: now one line, exit 2, naming the cause."""
    sim = simulator([{"name": "good"}])
    deployment = TenantDeployment(tmp_path, "freetds", f"sqlite:///{tmp_path}/tenant.db")
    ids = {name: deployment.add(name, sim.ports["good"]) for name in ("good", "bogus", "other-key")}
    set_value(deployment, ids["bogus"], "servers", "encrypt", "'bogus'")
    set_value(deployment, ids["other-key"], "servers", "password_encrypted", f"'{OTHER_KEY_TOKEN}'")
    config = str(deployment.config)

    bogus = run_cli("-c", config, "collect-once", "acme", "bogus", cwd=tmp_path)
    assert bogus.returncode == 2 and bogus.stderr.count("\n") == 1, bogus.stderr
    assert "servers.encrypt = 'bogus'" in bogus.stderr and "Traceback" not in bogus.stderr

    other = run_cli("-c", config, "collect-once", "acme", "other-key", cwd=tmp_path)
    assert other.returncode == 2 and other.stderr.count("\n") == 1, other.stderr
    assert "the secret key differs from the one the passwords were encrypted with" in other.stderr
    assert "unknown server" not in other.stderr

    good = run_cli("-c", config, "collect-once", "acme", "good", cwd=tmp_path)
    assert good.returncode == 0, good.stderr
