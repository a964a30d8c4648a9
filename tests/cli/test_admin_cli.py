"""The admin CLI through the real command line, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from supervisor.secret_box import SECRET_KEY_ENV, SecretBox
from tests.cli.conftest import Workspace, assert_one_line_error

PASSWORD = "s3cr;et}{x=1"


#: The issue's registration sequence: (arguments, environment).
REGISTRATION: list[tuple[tuple[str, ...], dict[str, str]]] = [
    (("init-db",), {}),
    (("tenant", "add", "acme", "--name", "Acme"), {}),
    (
        ("server", "add", "acme", "sql01", "--host", "127.0.0.1", "--port", "14331", "--user", "monitor",
         "--password-env", "PW"),
        {"PW": PASSWORD},
    ),
]  # fmt: skip


def registered(ws: Workspace) -> Workspace:
    for args, env in REGISTRATION:
        ws.setup(*args, env=env)
    return ws


def test_register_tenant_and_server_then_list_json(workspace: Workspace) -> None:
    for args, env in REGISTRATION:  # through the real command line this time
        workspace.ok(*args, env=env)
    servers = json.loads(workspace.ok("server", "list", "acme", "--json"))
    assert len(servers) == 1
    server = servers[0]
    assert server["name"] == "sql01"
    assert server["host"] == "127.0.0.1"
    assert server["port"] == 14331
    assert server["username"] == "monitor"
    assert server["enabled"] is True
    assert server["status"] == "unknown"
    assert not any("password" in key for key in server)
    assert PASSWORD not in json.dumps(servers)

    tenants = json.loads(workspace.ok("tenant", "list", "--json"))
    assert [(t["slug"], t["name"], t["status"]) for t in tenants] == [("acme", "Acme", "active")]


def test_password_is_encrypted_at_rest(workspace: Workspace) -> None:
    registered(workspace)
    engine = create_engine(workspace.tenant_url("acme"), poolclass=NullPool)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT password_encrypted FROM servers WHERE name = 'sql01'")).scalar_one()
    engine.dispose()
    assert PASSWORD not in stored
    key_file = workspace.path / "var" / "secret.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert SecretBox.load(str(key_file), create=False).decrypt(stored) == PASSWORD


def test_init_db_is_idempotent(workspace: Workspace) -> None:
    registered(workspace)
    before = workspace.snapshot()
    workspace.ok("init-db")
    workspace.ok("init-db")
    assert workspace.snapshot() == before


def test_suspend_activate_enable_disable_remove(workspace: Workspace) -> None:
    registered(workspace)
    workspace.ok("tenant", "suspend", "acme")
    assert json.loads(workspace.ok("tenant", "list", "--json"))[0]["status"] == "suspended"
    workspace.ok("tenant", "activate", "acme")
    assert json.loads(workspace.ok("tenant", "list", "--json"))[0]["status"] == "active"

    workspace.ok("server", "disable", "acme", "sql01")
    assert json.loads(workspace.ok("server", "list", "acme", "--json"))[0]["enabled"] is False
    workspace.ok("server", "enable", "acme", "sql01")
    assert json.loads(workspace.ok("server", "list", "acme", "--json"))[0]["enabled"] is True

    workspace.ok("server", "remove", "acme", "sql01")
    assert json.loads(workspace.ok("server", "list", "acme", "--json")) == []
    engine = create_engine(workspace.tenant_url("acme"), poolclass=NullPool)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT removed_at FROM servers WHERE name = 'sql01'")).scalar_one() is not None
    engine.dispose()

    # A removed name can be registered again: the same row comes back with the new settings.
    workspace.ok("server", "add", "acme", "sql01", "--host", "db.example", "--interval", "15", "--disabled")
    [server] = json.loads(workspace.ok("server", "list", "acme", "--json"))
    assert (server["host"], server["interval_seconds"], server["enabled"]) == ("db.example", 15, False)


def test_password_from_stdin(workspace: Workspace) -> None:
    registered(workspace)
    workspace.ok(
        "server", "add", "acme", "sql02", "--host", "10.0.0.2", "--password-stdin", stdin="from-stdin\n"
    )  # fmt: skip
    names = [s["name"] for s in json.loads(workspace.ok("server", "list", "acme", "--json"))]
    assert names == ["sql01", "sql02"]
    engine = create_engine(workspace.tenant_url("acme"), poolclass=NullPool)
    with engine.connect() as conn:
        stored = dict(conn.execute(text("SELECT name, password_encrypted FROM servers")).all())
    engine.dispose()
    box = SecretBox.load(str(workspace.path / "var" / "secret.key"), create=False)
    # The line read from stdin without its newline, and nothing else: the other server's password is untouched.
    assert box.decrypt(stored["sql02"]) == "from-stdin"
    assert box.decrypt(stored["sql01"]) == PASSWORD


BAD_INPUTS = [
    pytest.param(("tenant", "add", "Bad_Slug"), {}, None, ["invalid tenant slug", "Bad_Slug"], id="invalid-slug"),
    pytest.param(("tenant", "add", "-x-"), {}, None, ["error"], id="slug-like-option"),
    pytest.param(("tenant", "add", "acme"), {}, None, ["tenant 'acme' already exists"], id="duplicate-tenant"),
    pytest.param(
        ("server", "add", "acme", "sql01", "--host", "h"),
        {},
        None,
        ["server 'sql01' already exists"],
        id="duplicate-server",
    ),
    pytest.param(
        ("server", "add", "nope", "x", "--host", "h"), {}, None, ["unknown tenant 'nope'"], id="unknown-tenant"
    ),
    pytest.param(("server", "list", "nope"), {}, None, ["unknown tenant 'nope'"], id="list-unknown-tenant"),
    pytest.param(("tenant", "suspend", "nope"), {}, None, ["unknown tenant 'nope'"], id="suspend-unknown-tenant"),
    pytest.param(("server", "disable", "acme", "nope"), {}, None, ["unknown server 'nope'"], id="unknown-server"),
    pytest.param(
        ("server", "add", "acme", "x", "--host", "h", "--port", "70000"),
        {},
        None,
        ["--port 70000", "1 and 65535"],
        id="port-too-high",
    ),
    pytest.param(("server", "add", "acme", "x", "--host", "h", "--port", "0"), {}, None, ["--port 0"], id="port-zero"),
    pytest.param(
        ("server", "add", "acme", "x", "--host", "h", "--port", "abc"), {}, None, ["--port", "abc"], id="port-text"
    ),
    pytest.param(
        ("server", "add", "acme", "x", "--host", "h", "--interval", "0"),
        {},
        None,
        ["--interval 0"],
        id="interval-zero",
    ),
    pytest.param(
        ("server", "add", "acme", "x", "--host", "h", "--password-env", "NOT_SET_ANYWHERE"),
        {},
        None,
        ["NOT_SET_ANYWHERE", "not set"],
        id="missing-env-var",
    ),
    pytest.param(
        ("server", "add", "acme", "x", "--host", "h", "--password-stdin"),
        {},
        "",
        ["no password"],
        id="empty-stdin-password",
    ),
    pytest.param(("server", "add", "acme", "x", "--host", "bad host"), {}, None, ["--host"], id="host-with-space"),
    pytest.param(("tenant", "frobnicate"), {}, None, ["invalid choice"], id="unknown-action"),
    pytest.param(("tenant", "add", "b", "--db-url", "nosuchdb://x"), {}, None, ["--db-url"], id="bad-db-url"),
]


@pytest.mark.parametrize(("args", "env", "stdin", "fragments"), BAD_INPUTS)
def test_bad_input_exits_2_with_one_line_and_changes_nothing(
    workspace: Workspace, args: tuple[str, ...], env: dict[str, str], stdin: str | None, fragments: list[str]
) -> None:
    registered(workspace)
    before = workspace.snapshot()
    result = workspace.run(*args, env=env, stdin=stdin)
    assert_one_line_error(result, *fragments)
    assert workspace.snapshot() == before


def test_secret_key_from_environment(workspace: Workspace) -> None:
    env_key = Fernet.generate_key().decode()
    workspace.ok("init-db")
    workspace.ok("tenant", "add", "acme")
    workspace.ok(
        "server", "add", "acme", "sql01", "--host", "h", "--password-env", "PW",
        env={"PW": PASSWORD, SECRET_KEY_ENV: env_key},
    )  # fmt: skip
    assert not (workspace.path / "var" / "secret.key").exists()
    engine = create_engine(workspace.tenant_url("acme"), poolclass=NullPool)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT password_encrypted FROM servers")).scalar_one()
    engine.dispose()
    assert SecretBox(env_key.encode()).decrypt(stored) == PASSWORD
