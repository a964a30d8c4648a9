"""Bad command-line input and a bad secret key (issue 12): one line on stderr naming the input, exit 2, nothing
changed; on SQLite and PostgreSQL alike. Through the real command line, plus a property: whatever
``server add`` accepts, a child accepts too (one set of rules, the schema's bounds)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from supervisor import rules
from supervisor.children.targets import read_servers
from supervisor.cli.main import main
from supervisor.config import load_settings
from supervisor.secret_box import SECRET_KEY_ENV, DeferredSecretBox
from tests.cli.conftest import Workspace, assert_one_line_error
from tests.helpers.cli import CLI
from tests.helpers.waiting import wait_until

PASSWORD = "s3cr;et}{x=1"
ADD = ("server", "add", "acme")


def registered(ws: Workspace) -> Workspace:
    ws.setup("init-db")
    ws.setup("tenant", "add", "acme", "--name", "Acme")
    ws.setup(*ADD, "sql01", "--host", "127.0.0.1", "--user", "monitor", "--password-env", "PW", env={"PW": PASSWORD})
    return ws


def without_key_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != SECRET_KEY_ENV}


H = (*ADD, "x", "--host", "h")
BAD_ARGUMENTS = [
    pytest.param((*H, "--interval", "99999999999999999999"), ["--interval"], id="interval-overflow"),
    pytest.param((*H, "--interval", "1000000000"), ["--interval 1000000000", "86400"], id="interval-1e9"),
    pytest.param((*H, "--interval", "86401"), ["--interval 86401"], id="interval-86401"),
    pytest.param((*H, "--interval", "-5"), ["--interval -5"], id="interval-negative"),
    pytest.param((*H, "--interval", "2.5"), ["--interval"], id="interval-real"),
    pytest.param((*H, "--port", "99999999999999999999"), ["--port"], id="port-overflow"),
    pytest.param((*ADD, "x", "--host", "h" * 256), ["--host", "255"], id="host-256"),
    pytest.param((*ADD, "x", "--host", "h" * 300), ["--host", "300 characters"], id="host-300"),
    pytest.param((*ADD, "x", "--host", "db\x1b[2J"), ["--host"], id="host-escape"),
    pytest.param((*ADD, "x", "--host", ""), ["--host"], id="host-empty"),
    pytest.param((*ADD, "x", "--host", "127.0.0.1,1500"), ["--host", "','", "port"], id="host-comma-port"),
    pytest.param((*ADD, "x", "--host", "admin:db1"), ["--host", "protocol prefix"], id="host-admin-prefix"),
    pytest.param((*ADD, "x", "--host", "tcp:db1\\SQL2"), ["--host", "protocol prefix"], id="host-tcp-prefix"),
    pytest.param((*ADD, "x" * 129, "--host", "h"), ["server name", "128"], id="name-129"),
    pytest.param((*ADD, "a\tb", "--host", "h"), ["server name"], id="name-tab"),
    pytest.param((*H, "--user", "u" * 129), ["--user", "128"], id="user-129"),
    pytest.param((*H, "--user", ""), ["--user"], id="user-empty"),
    pytest.param((*H, "--user", "mon\nitor"), ["--user"], id="user-newline"),
    pytest.param(("tenant", "add", "big", "--name", "n" * 100_000), ["--name", "200"], id="tenant-name-100000"),
    pytest.param(("tenant", "add", "big", "--name", "a\x07b"), ["--name"], id="tenant-name-bell"),
    pytest.param(("tenant", "add", "acme2\n"), ["invalid tenant slug"], id="slug-newline"),
    pytest.param(("tenant", "add", "s" * 100_000), ["invalid tenant slug", "100,000 characters"], id="slug-100000"),
    pytest.param(("tenant", "add", "m", "--db-url", "sqlite://"), ["--db-url", "in-memory"], id="db-url-memory"),
    pytest.param(("tenant", "add", "m", "--db-url", "mysql://u:pw@h/m"), ["--db-url", "MySQLdb"], id="db-url-mysql"),
    pytest.param(("tenant", "add", "m", "--db-url", "sqlite:///file:/tmp/m.db?uri=true"), ["--db-url", "URI filename"],
                 id="db-url-sqlite-uri"),
    pytest.param(("tenant", "add", "m", "--db-url", "sqlite:////tmp/m\n.db"), ["--db-url", "control character"],
                 id="db-url-newline"),
    pytest.param(("demo", "--seconds", "nan"), ["--seconds"], id="demo-seconds-nan"),
    pytest.param(("demo", "--seconds", "-1"), ["--seconds"], id="demo-seconds-negative"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "fragments"), BAD_ARGUMENTS)
def test_bad_argument_is_one_line_exit_2_and_changes_nothing(
    workspace: Workspace, args: tuple[str, ...], fragments: list[str]
) -> None:
    registered(workspace)
    before = workspace.snapshot()
    result = workspace.run(*args)
    assert_one_line_error(result, *fragments)
    assert len(result.stderr) < 400  # a 100,000-character argument is not echoed whole
    assert "pw@" not in result.stderr
    assert workspace.snapshot() == before


def test_the_schema_bounds_themselves_are_accepted(workspace: Workspace) -> None:
    """PostgreSQL stores a 255-character host, a 128-character name and user, and the largest interval."""
    registered(workspace)
    workspace.ok(
        *ADD, "n" * 128, "--host", "h" * 255, "--user", "u" * 128, "--interval", "86400", "--password-env", "PW",
        env={"PW": "p" * 128},
    )  # fmt: skip
    workspace.ok("tenant", "add", "wide", "--name", "N" * 200)


@pytest.mark.parametrize(
    ("stdin", "fragments"),
    [
        pytest.param(b"", ["--password-stdin", "no password"], id="empty"),
        pytest.param(b"\n", ["--password-stdin", "no password"], id="empty-line"),
        pytest.param(b"pw\x00rest\n", ["password", "NUL"], id="nul"),
        pytest.param(b"p" * 129 + b"\n", ["password", "128"], id="129-characters"),
        pytest.param(b"\xff\xfe\n", ["--password-stdin", "UTF-8"], id="not-utf-8"),
        pytest.param(None, ["--password-stdin", "closed"], id="closed"),
    ],
)
def test_password_stdin_problems(workspace: Workspace, stdin: bytes | None, fragments: list[str]) -> None:
    """The issue: stdin closed gave ``AttributeError`` (exit 1); a password with NUL was accepted."""
    registered(workspace)
    before = workspace.snapshot()
    args = [*CLI, "-c", str(workspace.path / "collector.ini"), *ADD, "x", "--host", "h", "--password-stdin"]
    if stdin is None:  # file descriptor 0 closed, as by `cmd <&-`: Python's sys.stdin is None
        result = subprocess.run(args, cwd=workspace.path, capture_output=True, timeout=60, preexec_fn=close_stdin)
    else:
        result = subprocess.run(args, cwd=workspace.path, input=stdin, capture_output=True, timeout=60)
    completed = subprocess.CompletedProcess(args, result.returncode, result.stdout.decode(), result.stderr.decode())
    assert_one_line_error(completed, *fragments)
    assert "AttributeError" not in completed.stderr
    assert workspace.snapshot() == before


def close_stdin() -> None:
    os.close(0)


def key_file(ws: Workspace) -> Path:
    return ws.path / "var" / "secret.key"


def test_key_file_that_is_a_directory_or_unreadable(workspace: Workspace) -> None:
    """The issue: ``internal error: IsADirectoryError/PermissionError``, exit 1."""
    registered(workspace)
    path = key_file(workspace)
    saved = path.read_bytes()
    path.unlink()
    path.mkdir()
    before = workspace.snapshot()
    env = {"PW": "pw2"}
    result = workspace.run(*ADD, "sql02", "--host", "h", "--password-env", "PW", env=env)
    assert_one_line_error(result, "collector.secret_key_file", str(path), "is a directory")
    path.rmdir()

    # Unreadable: a path through a regular file (chmod does not stop root); and 0000 when not root.
    (workspace.path / "var" / "plain").write_text("x")
    config = (workspace.path / "collector.ini").read_text()
    (workspace.path / "collector.ini").write_text(
        config.replace("[logging]", "secret_key_file = var/plain/k\n[logging]")
    )
    result = workspace.run(*ADD, "sql02", "--host", "h", "--password-env", "PW", env=env)
    assert_one_line_error(result, "collector.secret_key_file", "cannot")
    (workspace.path / "collector.ini").write_text(config)
    if os.geteuid() != 0:
        path.write_bytes(saved)
        path.chmod(0)
        result = workspace.run(*ADD, "sql02", "--host", "h", "--password-env", "PW", env=env)
        assert_one_line_error(result, "collector.secret_key_file", "cannot read")
        path.chmod(0o600)

    path.write_bytes(b"not a key\n")
    result = workspace.run(*ADD, "sql02", "--host", "h", "--password-env", "PW", env=env)
    assert_one_line_error(result, "collector.secret_key_file", "not a valid Fernet key")
    path.write_bytes(b"\xff" + saved)  # a valid key behind a stray byte: was an internal error (UnicodeDecodeError)
    result = workspace.run(*ADD, "sql02", "--host", "h", "--password-env", "PW", env=env)
    assert_one_line_error(result, "collector.secret_key_file", "not a valid Fernet key")
    result = workspace.run(*ADD, "sql02", "--host", "h", "--password-env", "PW", env={**env, SECRET_KEY_ENV: "short"})
    assert_one_line_error(result, SECRET_KEY_ENV, "not a valid Fernet key")
    assert "short" not in result.stderr
    assert workspace.snapshot() == before


def test_missing_key_file_with_stored_passwords_is_an_error_not_a_new_key(workspace: Workspace) -> None:
    """The issue: a new key was created silently (passwords now under two keys)."""
    registered(workspace)
    key_file(workspace).unlink()
    before = workspace.snapshot()
    result = workspace.run(*ADD, "sql02", "--host", "h", "--password-env", "PW", env={"PW": "pw2"})
    assert_one_line_error(result, "secret key file", "missing", "acme")
    assert not key_file(workspace).exists()
    assert workspace.snapshot() == before
    # A server without a password needs no key, and a tenant without passwords may get a first key.
    workspace.ok(*ADD, "nopw", "--host", "h")
    assert not key_file(workspace).exists()


def test_first_key_is_still_created_when_no_password_is_stored(workspace: Workspace) -> None:
    workspace.ok("init-db")
    workspace.ok("tenant", "add", "acme")
    workspace.ok(*ADD, "sql01", "--host", "h", "--password-env", "PW", env={"PW": PASSWORD})
    assert key_file(workspace).stat().st_mode & 0o777 == 0o600


def test_wrong_key_is_named_as_such(workspace: Workspace) -> None:
    """The issue: ``the secret key differs``, then a misleading ``unknown server 'good'``."""
    registered(workspace)
    key_file(workspace).write_bytes(Fernet.generate_key() + b"\n")
    before = workspace.snapshot()
    differs = "the secret key differs from the one the passwords were encrypted with"
    added = workspace.run(*ADD, "sql02", "--host", "h", "--password-env", "PW", env={"PW": "pw2"})
    assert_one_line_error(added, differs, "acme")
    once = workspace.run("collect-once", "acme", "sql01")
    assert_one_line_error(once, "sql01", "cannot decrypt", differs)
    assert "unknown server" not in once.stderr
    assert workspace.snapshot() == before


# --- property: what server add accepts, a child accepts --------------------------------------------------------

ANY_TEXT = st.one_of(
    st.text(st.characters(blacklist_categories=(), blacklist_characters="\x00"), max_size=300),
    st.sampled_from(["", " ", "h", "x" * 128, "x" * 129, "h" * 255, "h" * 256, "db}", "a;b", "\x7f", "é"]),
)
NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["0", "1", "65535", "65536", "86400", "86401", "1e3", "nan", "", "abc", " 5"]),
)
PASSWORDS = st.one_of(st.text(max_size=140).filter(lambda p: "\n" not in p and "\r" not in p), st.just("p" * 129))


def server_add_in_process(ws: Workspace, argv: list[str], password: str | None) -> tuple[int, str]:
    stdin, stderr = io.StringIO((password or "") + "\n"), io.StringIO()
    saved, sys.stdin = sys.stdin, stdin
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(["-c", str(ws.path / "collector.ini"), *argv])
            except SystemExit as exc:  # argparse: usage errors exit 2 after printing one line
                code = int(exc.code or 0)
    finally:
        sys.stdin = saved
    return code, stderr.getvalue()


@pytest.mark.parametrize("argument", ["name", "--host", "--port", "--user", "--interval", "password"])
def test_server_add_accepts_only_what_a_child_accepts(workspace: Workspace, argument: str) -> None:
    registered(workspace)
    config = load_settings(workspace.path / "collector.ini")
    engine = create_engine(workspace.tenant_url("acme"), poolclass=NullPool)
    values = {"name": ANY_TEXT, "--host": ANY_TEXT, "--user": ANY_TEXT, "password": PASSWORDS}
    strategy = values.get(argument, NUMBERS)

    @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def check(value: str) -> None:
        name, options, password = "prop", ["--host", "127.0.0.1"], None
        if argument == "name":
            name = value
        elif argument == "password":
            password = value
            options += ["--user", "monitor", "--password-stdin"]
        else:
            options = [*(options if argument != "--host" else []), argument, value]
        if name.startswith("-"):
            name = "x" + name  # an option-looking name is argparse's business, tested above
        code, stderr = server_add_in_process(workspace, [*ADD, name, *options], password)
        event("refused" if code else "accepted")
        if code != 0:
            assert code == 2, (argument, value, stderr)
            assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr, stderr
            return
        with engine.connect() as conn:
            rows = read_servers(conn, config, DeferredSecretBox(config.secret_key_file), name=name)
        assert len(rows.targets) == 1 and not rows.invalid, (argument, value, rows)
        target = rows.targets[0]
        if argument == "password":
            assert target.endpoint.password == value
        with engine.begin() as conn:
            server_id = target.server_id
            conn.execute(text("DELETE FROM collection_configs WHERE server_id = :id"), {"id": server_id})
            conn.execute(text("DELETE FROM servers WHERE id = :id"), {"id": server_id})

    try:
        check()
    finally:
        engine.dispose()
    assert rules.SERVER_NAME_MAX == 128 and rules.HOST_MAX == 255


def test_server_list_shows_rows_another_program_wrote_with_bad_values(tmp_path: Path, workspace: Workspace) -> None:
    """A date column holding text or a blob, a boolean holding 'maybe' (SQLite stores anything): listed, not an
    internal error."""
    registered(workspace)
    engine = create_engine(workspace.tenant_url("acme"), poolclass=NullPool)
    sqlite = engine.dialect.name == "sqlite"
    with engine.begin() as conn:
        if sqlite:
            conn.execute(text("UPDATE servers SET last_checked_at = 'garbage', status_changed_at = 5, port = 'x'"))
            conn.execute(text("UPDATE servers SET created_at = x'00', trust_server_certificate = 'odd'"))
            conn.execute(text("UPDATE collection_configs SET enabled = 'maybe', interval_seconds = 'abc'"))
        else:
            conn.execute(text("UPDATE servers SET last_checked_at = '9999-12-31', port = -1, encrypt = 'bogus'"))
    engine.dispose()
    listed = workspace.ok("server", "list", "acme")
    assert "sql01" in listed
    [row] = json.loads(workspace.ok("server", "list", "acme", "--json"))
    assert row["name"] == "sql01"
    if sqlite:
        assert (row["port"], row["enabled"], row["last_checked_at"]) == ("x", "maybe", None)


@pytest.mark.parametrize(
    "args",
    [
        ("server", "disable", "acme", "n" * 100_000),
        ("server", "remove", "acme", "n" * 100_000),
        ("server", "list", "t" * 100_000),
        ("tenant", "suspend", "t" * 100_000),
        ("collect-once", "acme", "n" * 100_000),
    ],
    ids=["disable", "remove", "list", "suspend", "collect-once"],
)
def test_a_huge_unknown_name_is_not_echoed_whole(workspace: Workspace, args: tuple[str, ...]) -> None:
    registered(workspace)
    result = workspace.run(*args)
    assert_one_line_error(result, "unknown", "100,000 characters")
    assert len(result.stderr) < 400


def test_a_db_url_under_a_regular_file_is_a_usage_error(workspace: Workspace, tmp_path: Path) -> None:
    registered(workspace)
    plain = tmp_path / "plain-file"
    plain.write_text("not a folder\n")
    before = workspace.snapshot()
    result = workspace.run("tenant", "add", "m", "--db-url", f"sqlite:///{plain}/m.db")
    assert_one_line_error(result, "db_url", "cannot create the folder", "part of its path is a file")
    assert workspace.snapshot() == before


def test_demo_dir_that_is_a_file_is_a_usage_error(workspace: Workspace, tmp_path: Path) -> None:
    plain = tmp_path / "plain-file"
    plain.write_text("not a folder\n")
    result = workspace.run("demo", "--dir", str(plain), "--seconds", "1")
    assert_one_line_error(result, "--dir", "is not a folder")
    assert plain.read_text() == "not a folder\n"


def test_server_list_shows_hostile_stored_text_escaped_and_cut(workspace: Workspace) -> None:
    """A name with a terminal escape sequence and a newline, a megabyte-long host (written by another program):
    printed escaped, on one line, cut short."""
    registered(workspace)
    engine = create_engine(workspace.tenant_url("acme"), poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text("UPDATE servers SET name = :name"), {"name": "evil\x1b[2J\nname"})
        if engine.dialect.name == "sqlite":  # PostgreSQL enforces the column's length
            conn.execute(text("UPDATE servers SET host = :host"), {"host": "h" * 1_000_000})
    engine.dispose()
    listed = workspace.ok("server", "list", "acme")
    assert "\x1b" not in listed
    assert "evil\\x1b[2J\\nname" in listed
    assert len(listed.splitlines()) == 2
    assert len(listed) < 5000


def test_a_key_file_created_on_a_full_disk_is_not_left_empty(tmp_path: Path) -> None:
    """Before: ``internal error: OSError: [Errno 28]`` without the file's name, and a 0-byte key file left behind
    that every later command refused ("not a valid Fernet key") until removed by hand. The disk: a one-page tmpfs,
    full, in a mount namespace of the command's own (``unshare``, root)."""
    ws = Workspace(tmp_path, f"sqlite:///{tmp_path}/var/system.db", f"sqlite:///{tmp_path}/var/tenants/{{slug}}.db")
    keys = tmp_path / "keys"
    keys.mkdir()
    (tmp_path / "collector.ini").write_text(
        f"[collector]\nsystem_db = {ws.system_url}\ntenant_db_url = {ws.tenant_template}\n"
        f"secret_key_file = {keys}/secret.key\n[logging]\nlevel = INFO\n"
    )
    ws.setup("init-db")
    ws.setup("tenant", "add", "acme")
    add = [*CLI, "-c", str(tmp_path / "collector.ini"), *ADD, "sql02", "--host", "h", "--password-env", "PW"]
    script = (f"mount --make-rprivate / && mount -t tmpfs -o size=4k tmpfs {keys} && head -c 4096 /dev/zero > "
              f"{keys}/fill; {' '.join(add)}; echo rc=$? >&2; ls -A {keys} >&2")  # fmt: skip
    full = subprocess.run(["unshare", "-m", "sh", "-c", script], env={**os.environ, "PW": "pw"}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    error, code, left = full.stderr.strip().splitlines()
    assert code == "rc=2" and left == "fill", full.stderr
    assert "collector.secret_key_file" in error and "No space left on device" in error, error
    assert "Traceback" not in full.stderr
    ws.ok(*ADD, "sql02", "--host", "h", "--password-env", "PW", env={"PW": "pw"})  # room again: a key, a server
    assert len((keys / "secret.key").read_bytes().strip()) == 44


def test_run_with_standard_error_closed_says_so(tmp_path: Path) -> None:
    """Before: ``internal error: AttributeError: 'NoneType' object has no attribute 'fileno'``, exit 1. With a log
    file instead, the supervisor runs (descriptor 2 is ``/dev/null``, not the next file it opens)."""
    config = tmp_path / "collector.ini"
    config.write_text(f"[collector]\nsystem_db = sqlite:///{tmp_path}/system.db\n[metrics]\nlisten =\n")
    closed = subprocess.run(["sh", "-c", f"exec {' '.join(CLI)} -c {config} run 2>&-"], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert closed.returncode == 2, (closed.returncode, closed.stdout)
    assert closed.stdout.strip().splitlines() == [
        "collector-supervisor: error: logging.file = '-' (standard error), but standard error is closed: set "
        "logging.file to a path, or start it with standard error open"
    ], closed.stdout
    log = tmp_path / "supervisor.log"
    config.write_text(config.read_text() + f"[logging]\nfile = {log}\n")
    running = subprocess.Popen(["sh", "-c", f"exec {' '.join(CLI)} -c {config} run 2>&-"])
    try:
        wait_until(lambda: log.exists() and "supervisor.started" in log.read_text(), 60, "the supervisor's start")
        assert os.readlink(f"/proc/{running.pid}/fd/2") == os.devnull
    finally:
        running.terminate()
        assert running.wait(30) == 0


@pytest.mark.parametrize(("library", "problem"), [
    ("/bin/true", "not an ODBC driver (it exports no SQLDriverConnect)"),
    ("/usr/lib/x86_64-linux-gnu/libm.so.6", "not an ODBC driver (it exports no SQLDriverConnect)"),
    ("/etc/passwd", "not a shared library (no ELF header)"),
    ("/tmp", "not a readable driver library (Is a directory)"),
    ("/nonexistent/libdriver.so", "no such driver library"),
])  # fmt: skip
def test_an_odbc_driver_path_that_is_no_driver_is_a_config_error(tmp_path: Path, library: str, problem: str) -> None:
    """Before, a path that exists was taken: every server then read as unreachable (offline, class ``connect``,
    "Can't open lib" or "SQLAllocHandle failed") and outage events were stored for a wrong setting."""
    ws = Workspace(tmp_path, f"sqlite:///{tmp_path}/var/system.db", f"sqlite:///{tmp_path}/var/tenants/{{slug}}.db")
    (tmp_path / "collector.ini").write_text(
        f"[collector]\nsystem_db = {ws.system_url}\ntenant_db_url = {ws.tenant_template}\nodbc_driver = {library}\n"
    )
    registered(ws)
    result = ws.run("collect-once", "acme", "sql01")
    assert_one_line_error(result, f"invalid collector.odbc_driver = {library!r}: {problem}")


def test_a_system_db_it_may_not_write_says_why_reading_fails_too(tmp_path: Path) -> None:
    """Another user's file or a read-only mount (``chattr +i`` here, which binds root too): SQLite cannot even read
    it (its journal and WAL live beside it), and the bare "unable to open database file" read like a write that
    ``status`` never meant."""
    folder = tmp_path / "db"
    folder.mkdir()
    config = tmp_path / "collector.ini"
    config.write_text(f"[collector]\nsystem_db = sqlite:///{folder}/system.db\n")
    ws = Workspace(tmp_path, f"sqlite:///{folder}/system.db", "")
    ws.setup("init-db")
    subprocess.run(["chattr", "+i", str(folder), str(folder / "system.db")], check=True)
    try:
        for command in (["status"], ["tenant", "list"]):
            result = ws.run(*command)
            assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
            assert "unable to open database file (SQLite needs write access to the file and its folder" in result.stderr
        config.write_text(config.read_text() + "[metrics]\nlisten =\n")
        running = subprocess.Popen([*CLI, "-c", str(config), "run"], stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        assert running.stderr is not None
        lines = iter(running.stderr)
        wait_until(lambda: '"system_db.unavailable"' in next(lines), 60, "the system DB found unwritable")
        running.terminate()
        events = {line["event"]: line for line in map(json.loads, lines)}
        assert running.wait(30) == 0
        # before: SQLAlchemy's whole text, its newline and its "Background on this error" link
        assert events["supervisor.stop_unrecorded"]["error"] == "unable to open database file"
    finally:
        subprocess.run(["chattr", "-i", str(folder), str(folder / "system.db")], check=True)


@pytest.mark.parametrize("command", [("status",), ("status", "--json"), ("tenant", "list"), ("procedures", "--print")])
def test_output_the_disk_refuses_is_named_as_such(workspace: Workspace, command: tuple[str, ...]) -> None:
    """Before: ``internal error: OSError: [Errno 28] No space left on device (run with --debug for details)``."""
    registered(workspace)
    with open("/dev/full", "w") as full:
        refused = subprocess.run([*CLI, "-c", str(workspace.path / "collector.ini"), *command], stdout=full,
                                 stderr=subprocess.PIPE, text=True, cwd=workspace.path, timeout=60)  # fmt: skip
    assert refused.returncode == 1
    refusal = "collector-supervisor: error: cannot write the output: No space left on device"
    assert refused.stderr.splitlines() == [refusal]
