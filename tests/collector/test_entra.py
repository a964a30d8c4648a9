"""Entra ID access tokens end to end: ``server add --auth entra-token`` through the real command line, the token
from a command the child runs (cached until it nearly expires, shared by the servers that use the command) or
from a file, handed to ODBC Driver 18 as SQL_COPT_SS_ACCESS_TOKEN, sent in LOGIN7's FEDAUTH extension and
checked by the simulated Azure SQL Database / Managed Instance (signature, audience, expiry). An expired or
wrong token is a ``login`` failure; FreeTDS is a ``config`` error; the token never shows in what is stored.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from sqlserver_sim.entra import mint
from supervisor.procedures.flavour_table import null_metrics
from supervisor.storage.tenant_schema import metric_snapshots, servers
from tests.collector.test_flavours import METRICS
from tests.helpers.cli import run_cli
from tests.helpers.deployment import TenantDeployment
from tests.helpers.simulator import REPO
from tests.helpers.waiting import wait_until

KEY = "simulated-entra-signing-key"
AZURE = {"engine_edition": 5, "edition": "SQL Azure", "version": "12.0.2000.8", "databases": ["master", "sales"],
         "entra": {"key": KEY, "principals": ["monitor@contoso.example"]}}
MI = {"engine_edition": 8, "edition": "SQL Azure", "version": "16.0.5100.0", "entra": {"key": KEY}}


def token_command(tmp_path: Path, *, key: str = KEY, expires_in: float = 3600.0) -> str:
    """A command printing a fresh token as ``az account get-access-token`` does (JSON), counting its runs."""
    script = tmp_path / f"get_token_{abs(hash((key, expires_in)))}.py"
    script.write_text(
        "import json, sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from sqlserver_sim.entra import mint\n"
        f"open({str(tmp_path / 'token_runs.txt')!r}, 'a').write('x')\n"
        f"print(json.dumps({{'accessToken': mint({key!r}, expires_in={expires_in}), 'tokenType': 'Bearer'}}))\n"
    )
    return f"{sys.executable} {script}"


def runs(tmp_path: Path) -> int:
    path = tmp_path / "token_runs.txt"
    return len(path.read_text()) if path.exists() else 0


def add(deployment: TenantDeployment, tmp_path: Path, name: str, port: int, *source: str, database: str = "") -> None:
    extra = ("--database", database) if database else ()
    done = run_cli("-c", str(deployment.config), "server", "add", "acme", name, "--host", "127.0.0.1", "--port",
                   str(port), "--encrypt", "no", "--auth", "entra-token", *source, *extra, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr


def stored(deployment: TenantDeployment, name: str) -> tuple[dict, list[dict]]:
    with deployment.engine.connect() as conn:
        row = dict(conn.execute(select(servers).where(servers.c.name == name)).mappings().one())
        snaps = conn.execute(
            select(metric_snapshots).where(metric_snapshots.c.server_id == row["id"]).order_by(metric_snapshots.c.id)
        ).mappings()
        return row, [dict(s) for s in snaps]


def test_tokens_from_a_command_and_a_file(tmp_path: Path, simulator, sqlite_url: str, child_processes) -> None:
    sim = simulator([{"name": "azure", **AZURE}, {"name": "mi", **MI}])
    deployment = TenantDeployment(tmp_path, "msodbc18", sqlite_url, collection_interval=1, server_refresh_interval=1)
    command = token_command(tmp_path)
    add(deployment, tmp_path, "azure-sales", sim.ports["azure"], "--token-command", command, database="sales")
    add(deployment, tmp_path, "mi", sim.ports["mi"], "--token-command", command)
    token_file = tmp_path / "token.jwt"
    token_file.write_text(mint(KEY, expires_in=-60))  # expired a minute ago
    add(deployment, tmp_path, "azure-file", sim.ports["azure"], "--token-file", str(token_file), database="sales")
    config = str(deployment.config)

    for _ in range(2):
        for name in ("azure-sales", "mi"):
            done = run_cli("-c", config, "collect-once", "acme", name, "--json", cwd=tmp_path)
            assert done.returncode == 0, (name, done.stderr)
    for name, flavour in (("azure-sales", "azure_sql_database"), ("mi", "managed_instance")):
        row, snaps = stored(deployment, name)
        assert row["status"] == "online" and len(snaps) == 2
        assert snaps[1]["batch_requests_per_sec"] > 0 and snaps[1]["cpu_percent"] is not None
        assert {metric for metric in METRICS if snaps[1][metric] is None} == null_metrics(flavour), name

    expired = run_cli("-c", config, "collect-once", "acme", "azure-file", cwd=tmp_path)
    assert expired.returncode == 1 and "[login]" in expired.stderr and "Token is expired" in expired.stderr
    assert token_file.read_text() not in expired.stderr
    token_file.write_text(mint(KEY) + "\n")  # renewed by whatever keeps the file: re-read at the next login
    renewed = run_cli("-c", config, "collect-once", "acme", "azure-file", "--json", cwd=tmp_path)
    assert renewed.returncode == 0, renewed.stderr
    assert json.loads(renewed.stdout)["server"] == "azure-file"

    # A running child: both servers of the command share one token, fetched once for its hour.
    before = runs(tmp_path)
    child = child_processes(deployment)
    wait_until(lambda: all(len(stored(deployment, n)[1]) >= 5 for n in ("azure-sales", "mi")), 60, "collections")
    assert runs(tmp_path) - before == 1
    assert child.terminate()[0] == 0
    log = deployment.log_path.read_text()
    assert mint(KEY)[:40] not in log and "accessToken" not in log


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("wrong-key", "The token's signature is not valid"),
        ("other-principal", "not a user of this database"),
        ("command-fails", "failed with exit code 3"),
    ],
)
def test_a_wrong_token_is_a_login_failure(tmp_path: Path, simulator, sqlite_url: str, case: str, fragment: str) -> None:
    sim = simulator([{"name": "azure", **AZURE}])
    deployment = TenantDeployment(tmp_path, "msodbc18", sqlite_url)
    if case == "wrong-key":
        source = ("--token-command", token_command(tmp_path, key="another-key"))
    elif case == "other-principal":
        token_file = tmp_path / "other.jwt"
        token_file.write_text(mint(KEY, principal="intruder@contoso.example"))
        source = ("--token-file", str(token_file))
    else:
        failing = "import sys; sys.stderr.write('not logged in'); sys.exit(3)"
        source = ("--token-command", f'{sys.executable} -c "{failing}"')
    add(deployment, tmp_path, "s", sim.ports["azure"], *source, database="sales")
    failed = run_cli("-c", str(deployment.config), "collect-once", "acme", "s", cwd=tmp_path)
    assert failed.returncode == 1 and "[login]" in failed.stderr and fragment in failed.stderr, failed.stderr
    row, snaps = stored(deployment, "s")
    assert (row["status"], row["last_error_class"], snaps) == ("offline", "login", [])


def test_freetds_cannot_pass_a_token(tmp_path: Path, simulator, sqlite_url: str) -> None:
    sim = simulator([{"name": "azure", **AZURE}])
    deployment = TenantDeployment(tmp_path, "freetds", sqlite_url)
    add(deployment, tmp_path, "s", sim.ports["azure"], "--token-command", token_command(tmp_path), database="sales")
    failed = run_cli("-c", str(deployment.config), "collect-once", "acme", "s", cwd=tmp_path)
    assert failed.returncode == 1 and "[config]" in failed.stderr, failed.stderr
    assert "needs Microsoft ODBC Driver 18" in failed.stderr
    assert runs(tmp_path) == 0  # refused before any token was fetched
    deploy = run_cli("-c", str(deployment.config), "procedures", "deploy", "acme", "s", cwd=tmp_path)
    assert deploy.returncode == 1 and "needs Microsoft ODBC Driver 18" in deploy.stderr


def test_procedures_deploy_with_a_token(tmp_path: Path, simulator, sqlite_url: str) -> None:
    sim = simulator([{"name": "azure", **AZURE, "procedure_installed": False}])
    deployment = TenantDeployment(tmp_path, "msodbc18", sqlite_url)
    add(deployment, tmp_path, "s", sim.ports["azure"], "--token-command", token_command(tmp_path), database="sales")
    config = str(deployment.config)
    deployed = run_cli("-c", config, "procedures", "deploy", "acme", "s", cwd=tmp_path)
    assert deployed.returncode == 0, deployed.stderr
    with deployment.engine.begin() as conn:
        conn.execute(servers.update().values(collection_mode="procedure"))
    done = run_cli("-c", config, "collect-once", "acme", "s", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
