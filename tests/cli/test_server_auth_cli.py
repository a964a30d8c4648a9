"""``server add --database --auth --token-command --token-file`` through the real command line (SQLite and
PostgreSQL), and what the connection string makes of them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from supervisor.children.connection_string import Endpoint, UnsafeValue, build
from supervisor.children.odbc_driver import FREETDS, MSODBC, OdbcDriver
from tests.cli.conftest import Workspace, assert_one_line_error

MS = OdbcDriver("ODBC Driver 18 for SQL Server", MSODBC)
TDS = OdbcDriver("FreeTDS", FREETDS)


def prepared(ws: Workspace) -> Workspace:
    ws.setup("init-db")
    ws.setup("tenant", "add", "acme")
    return ws


def listed(ws: Workspace) -> dict[str, dict]:
    return {entry["name"]: entry for entry in json.loads(ws.ok("server", "list", "acme", "--json"))}


def test_database_and_entra_token_settings_are_stored(workspace: Workspace) -> None:
    ws = prepared(workspace)
    ws.ok("server", "add", "acme", "box", "--host", "h1", "--user", "monitor", "--password-env", "PW",
          env={"PW": "pw"})  # fmt: skip
    command = "az account get-access-token --query accessToken -o tsv"
    ws.ok("server", "add", "acme", "sales", "--host", "x.database.windows.net", "--database", "sales db",
          "--auth", "entra-token", "--token-command", command)  # fmt: skip
    ws.ok("server", "add", "acme", "hr", "--host", "y.database.windows.net", "--database", "hr",
          "--auth", "entra-token", "--token-file", "tokens/hr.jwt")  # fmt: skip
    servers = listed(ws)
    assert [servers["box"][k] for k in ("database", "auth", "token_command", "token_file")] == [None] * 4
    assert servers["sales"]["database"] == "sales db" and servers["sales"]["auth"] == "entra-token"
    assert servers["sales"]["token_command"].startswith("az account")
    # A relative token file is stored as the absolute path it meant where the command ran.
    assert servers["hr"]["token_file"] == os.path.join(str(ws.path), "tokens", "hr.jwt")


@pytest.mark.parametrize(
    ("arguments", "fragments"),
    [
        (("--auth", "entra-token"), ("--auth entra-token", "exactly one token source")),
        (("--auth", "entra-token", "--token-file", "/t", "--user", "u"), ("--auth entra-token", "no username")),
        (("--token-file", "/t"), ("--auth sql", "only used with auth entra-token")),
        (("--auth", "kerberos"), ("--auth", "kerberos")),
        (("--database", "d" * 129), ("--database", "1-128 printable characters")),
        (("--database", ""), ("--database", "1-128 printable characters")),
        (("--database", "ma\tster"), ("--database", "printable")),
        (("--auth", "entra-token", "--token-command", "'unclosed"), ("--token-command", "cannot be split")),
        (("--auth", "entra-token", "--token-command", "   "), ("--token-command", "names no program")),
    ],
    ids=["no-source", "user-and-token", "source-without-auth", "auth-unknown", "database-long", "database-empty",
         "database-control", "command-unsplittable", "command-empty"],
)  # fmt: skip
def test_bad_values_are_refused(workspace: Workspace, arguments: tuple[str, ...], fragments: tuple[str, ...]) -> None:
    ws = prepared(workspace)
    before = ws.snapshot()
    result = ws.run("server", "add", "acme", "s1", "--host", "h", *arguments)
    if "kerberos" in arguments:  # argparse's choices: its own one-line usage error
        assert result.returncode == 2 and "invalid choice: 'kerberos'" in result.stderr
    else:
        assert_one_line_error(result, *fragments)
    assert ws.snapshot() == before


def test_token_command_and_file_are_exclusive(workspace: Workspace) -> None:
    ws = prepared(workspace)
    result = ws.run("server", "add", "acme", "s1", "--host", "h", "--auth", "entra-token",
                    "--token-command", "x", "--token-file", "/y")  # fmt: skip
    assert result.returncode == 2 and "not allowed with argument" in result.stderr


def test_connection_string_carries_the_database() -> None:
    endpoint = Endpoint("h", 1433, "u", "p", "no", False, database="sales;x={y}")
    assert "DATABASE={sales;x={y}}}" in build(MS, endpoint)
    assert "DATABASE={sales;x={y}}" in build(TDS, endpoint)
    assert "DATABASE={master}" in build(MS, Endpoint("h", 1433, "u", "p", "no", False))


def test_access_token_needs_driver_18_and_no_login(tmp_path: Path) -> None:
    token = Endpoint("h", 1433, None, None, "yes", False, database="db", auth="entra-token", token_file="/t")
    text = build(MS, token)
    assert "UID" not in text and "PWD" not in text and "DATABASE={db}" in text
    with pytest.raises(UnsafeValue, match="needs Microsoft ODBC Driver 18"):
        build(TDS, token)
