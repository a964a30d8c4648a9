"""Commands racing on a fresh install (J8), through the real command line, on SQLite and on PostgreSQL.

Before, the loser of two ``init-db``, two ``tenant add`` or two ``server add`` started at once printed a raw
"table ... already exists", "UNIQUE constraint failed" or UniqueViolation and exited 1. Now what is idempotent
succeeds for both, and of two adds of one name the loser gets the error a second add gets, its exit code too.

Each command runs in a process of its own, forked from one of two racers that have imported the command line
already and wait for the go on their standard input: the two commands start within microseconds of each other
(started as new interpreters, the half second of imports would set them apart more than the race lasts).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.pool import NullPool

from supervisor.secret_box import SECRET_KEY_ENV, SecretBox
from supervisor.storage import system_schema, tenant_schema
from supervisor.storage.migrations import SYSTEM_ADDITIONS, SYSTEM_VERSION, TENANT_ADDITIONS, TENANT_VERSION
from tests.cli.conftest import Workspace, dump

#: Rounds per test: each race is lost by chance, so a few rounds make a regression show in every run (a
#: PostgreSQL round costs more: each fresh install creates databases).
ROUNDS = {"sqlite": 5, "postgresql": 3}

RACER = r"""
import json, os, sys, traceback
import psycopg, sqlalchemy.dialects.postgresql.psycopg  # loaded before the go, as the command line is
import supervisor.cli.admin_cmds, supervisor.cli.server_cmds, supervisor.cli.tenant_cmds
from supervisor.cli.main import main

for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.chdir(job["cwd"])
        for fd, name in ((1, "stdout"), (2, "stderr")):
            os.dup2(os.open(job[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
        try:
            code = main(job["argv"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 99
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str


class Racers:
    """Two processes that each run one command (in a fresh fork) per job, both jobs of a race released at once."""

    def __init__(self) -> None:
        env = {**os.environ, "PW": "s3cret"}
        env.pop(SECRET_KEY_ENV, None)
        self.processes = [
            subprocess.Popen(
                [sys.executable, "-c", RACER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
            )
            for _ in range(2)
        ]
        self.jobs = 0

    def race(self, ws: Workspace, *argvs: tuple[str, ...]) -> list[Outcome]:
        """Start each of ``argvs`` (two at most) at the same moment in ``ws``; their outcomes, in order."""
        files = []
        for process, argv in zip(self.processes, argvs, strict=False):
            self.jobs += 1
            out, err = ws.path / f"job{self.jobs}.out", ws.path / f"job{self.jobs}.err"
            job = {"argv": ["-c", str(ws.path / "collector.ini"), *argv], "cwd": str(ws.path)}
            assert process.stdin is not None
            process.stdin.write(json.dumps({**job, "stdout": str(out), "stderr": str(err)}) + "\n")
            files.append((out, err))
        for process in self.processes[: len(argvs)]:
            assert process.stdin is not None
            process.stdin.flush()  # the go: the racers wait on their standard input
        outcomes = []
        for process, (out, err) in zip(self.processes, files, strict=False):
            assert process.stdout is not None
            code = int(process.stdout.readline())
            outcomes.append(Outcome(code, out.read_text(), err.read_text()))
        return outcomes

    def alone(self, ws: Workspace, *argv: str) -> Outcome:
        return self.race(ws, argv)[0]

    def close(self) -> None:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.close()
        for process in self.processes:
            process.wait(30)


@pytest.fixture(scope="module")
def racers() -> Iterator[Racers]:
    started = Racers()
    yield started
    started.close()


class FreshInstalls:
    """Fresh installs on one backend: a config file, no DB yet (PostgreSQL: an empty system DB, no tenant DB)."""

    def __init__(self, backend: str, folder: Path, pg_database: Callable[[], str] | None) -> None:
        self.backend, self.folder, self.pg_database = backend, folder, pg_database
        self.made = 0

    def __iter__(self) -> Iterator[Workspace]:
        """``ROUNDS`` fresh installs, one per round."""
        for _ in range(ROUNDS[self.backend]):
            yield self.new()

    def new(self) -> Workspace:
        self.made += 1
        folder = self.folder / f"install{self.made}"
        folder.mkdir()
        if self.pg_database is None:
            system_url, template = f"sqlite:///{folder}/var/system.db", f"sqlite:///{folder}/var/tenants/{{slug}}.db"
        else:
            system_url = self.pg_database()
            template = system_url + "_{slug}"
        (folder / "collector.ini").write_text(f"[collector]\nsystem_db = {system_url}\ntenant_db_url = {template}\n")
        return Workspace(folder, system_url, template)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def installs(request: pytest.FixtureRequest, tmp_path: Path) -> FreshInstalls:
    pg_database = request.getfixturevalue("pg_database") if request.param == "postgresql" else None
    return FreshInstalls(request.param, tmp_path, pg_database)


def assert_succeeded(outcome: Outcome) -> None:
    assert outcome.code == 0 and outcome.stderr == "", outcome


def assert_one_winner(racers: Racers, ws: Workspace, outcomes: list[Outcome], argv: tuple[str, ...]) -> None:
    """One racer succeeded; the other failed as the same command run after both fails (one line, same code)."""
    won = [o for o in outcomes if o.code == 0]
    assert len(won) == 1 and won[0].stderr == "", outcomes
    lost = next(o for o in outcomes if o.code != 0)
    second = racers.alone(ws, *argv)
    assert second.code != 0 and second.stderr.count("\n") == 1 and "already exists" in second.stderr, second
    assert (lost.code, lost.stderr) == (second.code, second.stderr), outcomes


SYSTEM_ADDITIONS_LEVEL = max(SYSTEM_ADDITIONS, default=0)
TENANT_ADDITIONS_LEVEL = max(TENANT_ADDITIONS, default=0)


def assert_system_schema_complete(ws: Workspace) -> None:
    engine = create_engine(ws.system_url, poolclass=NullPool)
    try:
        assert set(system_schema.metadata.tables) <= set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT name, version FROM schema_info")).all()
    finally:
        engine.dispose()
    assert sorted(rows) == [("system", SYSTEM_VERSION), ("system_additions", SYSTEM_ADDITIONS_LEVEL)], rows


def assert_tenants(ws: Workspace, *slugs: str) -> None:
    """Exactly these tenants, each once, each with its whole DB schema stamped with its id."""
    system = dump(ws.system_url)
    stored = sorted(row[1] for row in system["tenants"])
    assert stored == sorted(repr(slug) for slug in slugs), system["tenants"]
    for slug in slugs:
        engine = create_engine(ws.tenant_url(slug), poolclass=NullPool)
        try:
            assert set(tenant_schema.metadata.tables) <= set(inspect(engine).get_table_names()), slug
            with engine.connect() as conn:
                info = {name: version for name, version in conn.execute(text("SELECT name, version FROM schema_info"))}
        finally:
            engine.dispose()
        tenant_id = next(int(row[0]) for row in system["tenants"] if row[1] == repr(slug))
        assert info == {"tenant": TENANT_VERSION, "tenant_additions": TENANT_ADDITIONS_LEVEL,
                        "owner_tenant_id": tenant_id}, (slug, info)  # fmt: skip


def test_two_init_db_at_once_both_succeed(racers: Racers, installs: FreshInstalls) -> None:
    for ws in installs:
        for outcome in racers.race(ws, ("init-db",), ("init-db",)):
            assert_succeeded(outcome)
        assert_system_schema_complete(ws)


def test_init_db_while_a_tenant_is_added_both_succeed(racers: Racers, installs: FreshInstalls) -> None:
    for ws in installs:
        for outcome in racers.race(ws, ("init-db",), ("tenant", "add", "acme")):
            assert_succeeded(outcome)
        assert_system_schema_complete(ws)
        assert_tenants(ws, "acme")


def test_two_tenants_added_at_once_both_succeed(racers: Racers, installs: FreshInstalls) -> None:
    for ws in installs:
        for outcome in racers.race(ws, ("tenant", "add", "acme"), ("tenant", "add", "beta")):
            assert_succeeded(outcome)
        assert_tenants(ws, "acme", "beta")


def test_one_tenant_added_twice_at_once_has_one_winner(racers: Racers, installs: FreshInstalls) -> None:
    add = ("tenant", "add", "acme")
    for ws in installs:
        assert_one_winner(racers, ws, racers.race(ws, add, add), add)
        assert_tenants(ws, "acme")


def assert_servers(ws: Workspace, *names: str) -> None:
    """Exactly these servers, each with its collection config, each password decrypted by the key file there."""
    tenant = dump(ws.tenant_url("acme"))
    assert len(tenant["servers"]) == len(names) == len(tenant["collection_configs"]), tenant
    engine = create_engine(ws.tenant_url("acme"), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            tokens = dict(conn.execute(text("SELECT name, password_encrypted FROM servers")).all())
    finally:
        engine.dispose()
    key = SecretBox.load(str(ws.path / "var" / "secret.key"), create=False)
    assert sorted(tokens) == sorted(names) and all(key.decrypt(token) == "s3cret" for token in tokens.values())


SERVER_ADD = ("server", "add", "acme", "s1", "--host", "db1", "--user", "monitor", "--password-env", "PW")


def test_one_server_added_twice_at_once_has_one_winner(racers: Racers, installs: FreshInstalls) -> None:
    """On a fresh install: the first password also creates the secret key file."""
    for ws in installs:
        ws.setup("tenant", "add", "acme")
        assert_one_winner(racers, ws, racers.race(ws, SERVER_ADD, SERVER_ADD), SERVER_ADD)
        assert_servers(ws, "s1")


def test_two_servers_with_passwords_added_at_once_to_a_fresh_install_both_succeed_under_one_key(
    racers: Racers, installs: FreshInstalls
) -> None:
    """The first password creates the secret key file; the other command uses that key, whether it found the file
    missing first or not (and then perhaps the first one's password, which a new key would not decrypt)."""
    for ws in installs:
        ws.setup("tenant", "add", "acme")
        other = ("server", "add", "acme", "s2", *SERVER_ADD[4:])
        for outcome in racers.race(ws, SERVER_ADD, other):
            assert_succeeded(outcome)
        assert_servers(ws, "s1", "s2")


def test_a_removed_server_added_back_twice_at_once_has_one_winner(racers: Racers, installs: FreshInstalls) -> None:
    for ws in installs:
        ws.setup("tenant", "add", "acme")
        ws.setup(*SERVER_ADD, env={"PW": "s3cret"})
        ws.setup("server", "remove", "acme", "s1")
        assert_one_winner(racers, ws, racers.race(ws, SERVER_ADD, SERVER_ADD), SERVER_ADD)
        assert_servers(ws, "s1")


def test_two_upgrades_of_an_older_schema_at_once_both_succeed_and_keep_the_rows(
    racers: Racers, installs: FreshInstalls
) -> None:
    """A system DB of schema version 2 (before the ``process_key`` columns), upgraded by two commands at once."""
    for ws in installs:
        ws.setup("tenant", "add", "acme")
        engine = create_engine(ws.system_url, poolclass=NullPool)
        with engine.begin() as conn:
            for table in ("supervisor_instances", "tenant_children"):
                conn.execute(text(f"ALTER TABLE {table} DROP COLUMN process_key"))
            conn.execute(text("UPDATE schema_info SET version = 2 WHERE name = 'system'"))
        engine.dispose()
        for outcome in racers.race(ws, ("init-db",), ("init-db",)):
            assert_succeeded(outcome)
        assert_system_schema_complete(ws)
        assert_tenants(ws, "acme")
