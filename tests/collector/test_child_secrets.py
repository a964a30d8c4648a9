"""Secrets in a tenant child (issue 12): a child masks the passwords it decrypted before a log record leaves it
(the parent never knows them), and a key it cannot use is a ``config`` error of each server with a password,
logged once, not on every server-list read, and over once the key is back."""

from __future__ import annotations

import json
import logging
import multiprocessing
import shutil
import time
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path

from sqlalchemy import select, update

from supervisor.ipc import PipeLogHandler, message_to_record
from supervisor.logs import ContractJsonFormatter
from supervisor.storage.tenant_schema import servers
from tests.helpers.deployment import TenantDeployment
from tests.helpers.waiting import wait_until

SECRET = "Tr0ub4dor&3-never-logged"


def _child(conn: Connection) -> None:
    from supervisor.logs import register_secret

    logger = logging.getLogger("supervisor.child.test")
    handler = PipeLogHandler(conn)
    logger.handlers[:] = [handler]
    logger.propagate = False
    register_secret(SECRET)  # what load_targets does with each password it decrypts
    try:
        raise RuntimeError(f"driver said: login with {SECRET} refused")
    except RuntimeError:
        logger.exception("collection failed: %s", f"password {SECRET}", extra={"event": "t", "error": SECRET})
    logger.warning("server %s", SECRET, extra={"event": "t2", "detail": {"nested": SECRET}})
    handler.close()  # what logging.shutdown does at the child's exit: the queued records are sent
    conn.close()


def test_child_masks_its_secrets_before_the_record_leaves_it() -> None:
    """A real forked process sends its records through the pipe the parent reads; the parent, which never
    decrypted the password, formats them as it does every child record."""
    receive, send = multiprocessing.get_context("fork").Pipe(duplex=False)
    process = multiprocessing.get_context("fork").Process(target=_child, args=(send,))
    process.start()
    send.close()
    lines = []
    formatter = ContractJsonFormatter()
    while True:
        try:
            kind, payload = receive.recv()
            assert kind == "log"
        except EOFError:
            break
        lines.append(formatter.format(message_to_record(payload)))
    process.join(10)
    assert process.exitcode == 0 and len(lines) == 2
    first = json.loads(lines[0])
    assert "RuntimeError" in first["exc_info"] and first["error"] == "***"
    for line in lines:
        assert SECRET not in line, line
        assert "***" in line


def test_unusable_key_file_is_a_config_error_once_per_server_and_clears(tmp_path: Path, simulator, child_processes):
    sim = simulator([{"name": "sql"}])
    deployment = TenantDeployment(tmp_path, "freetds", f"sqlite:///{tmp_path}/tenant.db", server_refresh_interval=1)
    with_password = deployment.add("with-password", sim.ports["sql"])
    no_password = deployment.add("no-password", sim.ports["sql"])
    with deployment.engine.begin() as conn:
        conn.execute(update(servers).where(servers.c.id == no_password).values(password_encrypted=None))
    key = Path(deployment.settings.secret_key_file)
    saved = key.read_bytes()
    key.unlink()
    key.mkdir()  # the key file is a directory

    child_processes(deployment)

    def row(server_id: int) -> tuple[str, str | None, str | None]:
        with deployment.engine.connect() as conn:
            query = select(servers.c.status, servers.c.last_error_class, servers.c.last_error)
            status, error_class, error = conn.execute(query.where(servers.c.id == server_id)).one()
            return status, error_class, error

    wait_until(lambda: row(with_password)[1] == "config", 30, lambda: str(deployment.log_events()[-10:]))
    wait_until(lambda: row(no_password)[1] == "login", 30, "the server without a password still tried")
    time.sleep(4)  # four more server-list reads
    status, error_class, error = row(with_password)
    assert (status, error_class) == ("offline", "config")
    assert "collector.secret_key_file" in error and "is a directory" in error
    lines = [e for e in deployment.log_events() if e.get("event") == "server.config_error"]
    assert Counter(e["server"] for e in lines) == {"with-password": 1}, lines
    assert not [e for e in deployment.log_events() if e.get("event") == "child.crashed"]

    key.rmdir()
    key.write_bytes(saved)  # restored: no restart needed
    wait_until(lambda: row(with_password)[0] == "online", 30, lambda: str(deployment.log_events()[-10:]))
    assert SECRET not in (tmp_path / "child.log").read_text()
    shutil.rmtree(tmp_path / "spool", ignore_errors=True)
