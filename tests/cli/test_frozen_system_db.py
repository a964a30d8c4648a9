"""A PostgreSQL system DB host that hangs (no answer, no TCP error), through a forwarder that stops reading
(``tests.helpers.frozen_db``): ``status`` and ``tenant list`` say so and exit after one connect timeout
(``COMMAND_WAIT``). Before, each schema check connected again, each waiting out its 10 s, and the last (the
maintenance connection that would create the database) had no timeout at all: ``status`` hung for as long as
the host did (over 400 s seen)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from supervisor.cli.context import COMMAND_WAIT
from tests.helpers.cli import run_cli
from tests.helpers.frozen_db import FreezableForwarder


@pytest.mark.postgres
@pytest.mark.parametrize("command", [("status",), ("tenant", "list")])
def test_a_command_against_a_hung_system_db_fails_after_one_connect_timeout(
    tmp_path: Path, pg_database, command: tuple[str, ...]
) -> None:
    forwarder = FreezableForwarder(pg_database())
    try:
        config = tmp_path / "collector.ini"
        config.write_text(
            f"[collector]\nsystem_db = {forwarder.url}\ntenant_db_url = sqlite:///{tmp_path}/tenants/{{slug}}.db\n"
            f"secret_key_file = {tmp_path}/secret.key\n"
        )
        assert run_cli("-c", str(config), "init-db", cwd=tmp_path).returncode == 0
        with forwarder.frozen():
            started = time.monotonic()
            done = run_cli("-c", str(config), *command, cwd=tmp_path, timeout=COMMAND_WAIT * 6)
            took = time.monotonic() - started
    finally:
        forwarder.close()
    assert done.returncode != 0 and "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "system schema" in line and "timeout" in line, line
    assert took < COMMAND_WAIT * 2, took  # one connect timeout and the interpreter's start, not three or more
