"""Supervisors running the real tenant runtime (not the scripted fake): orphan exit, take-over by a second
supervisor, and what reaches the supervisor's log, against the SQL Server simulator."""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import create_engine, func, select

from supervisor.ipc import CHILD_EXIT_OK
from supervisor.storage.tenant_schema import metric_snapshots, servers
from tests.helpers.cli import CLI
from tests.helpers.deployment import Deployment
from tests.helpers.simulator import SIM_USER, Simulator
from tests.helpers.waiting import wait_until

PR_SET_CHILD_SUBREAPER = 36
COLLECTION_TIMEOUT = 2.0
#: A child's graceful stop: its in-flight collections end by their deadline, then the writer's flush.
STOP_BOUND_S = COLLECTION_TIMEOUT + 2.0


def _real_deployment(root: Path, **options: Any) -> Deployment:
    deployment = Deployment(root, fake_runtime=False)
    deployment.logging["level"] = "DEBUG"
    settings = {"odbc_driver": "FreeTDS", "encrypt": "no", "collection_interval": 1,
                "collection_timeout": COLLECTION_TIMEOUT, "login_timeout": 1}  # fmt: skip
    deployment.write_config(**{**settings, **options})
    return deployment


def _add_server(deployment: Deployment, tenant: str, name: str, port: int, password: str) -> None:
    """``server add`` through the real CLI, the password on its standard input."""
    result = subprocess.run(
        [*CLI, "-c", str(deployment.config), "server", "add", tenant, name, "--host", "127.0.0.1", "--port",
         str(port), "--user", SIM_USER, "--password-stdin", "--interval", "1", "--encrypt", "no"],
        input=password + "\n", capture_output=True, text=True, env=deployment.env(), timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def _snapshots(root: Path, tenant: str, since: dt.datetime | None = None) -> int:
    engine = create_engine(f"sqlite:///{root}/var/tenants/{tenant}.db")
    try:
        with engine.connect() as conn:
            query = select(func.count()).select_from(metric_snapshots)
            if since is not None:
                query = query.where(metric_snapshots.c.collected_at >= since)
            return int(conn.execute(query).scalar() or 0)
    finally:
        engine.dispose()


@pytest.fixture
def subreaper() -> Iterator[Callable[[int, float], int | None]]:
    """This process adopts its orphaned descendants (Linux ``PR_SET_CHILD_SUBREAPER``), so a test can read the
    exit code of a child whose parent it killed. Yields ``reap(pid, timeout)``: the exit code, None if still alive."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0, os.strerror(ctypes.get_errno())
    adopted: set[int] = set()

    def reap(pid: int, timeout: float) -> int | None:
        adopted.add(pid)
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(ChildProcessError):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    adopted.discard(pid)
                    return os.waitstatus_to_exitcode(status)
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.01)

    try:
        yield reap
    finally:
        for pid in adopted:  # a child that never exited (the test failed): gone, and not left a zombie
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def test_real_children_exit_by_themselves_when_their_parent_is_killed(
    tmp_path: Path, simulator: Callable[[list[dict[str, Any]]], Simulator], subreaper
) -> None:
    """The kernel's parent-death signal (TERM) stops a real child gracefully: exit 0 within its stop bound.
    Without it the runtime's own parent check would still stop it, but with CHILD_EXIT_ORPHANED; without
    both it would collect forever with nobody watching."""
    sim = simulator([{"name": "sql-a"}, {"name": "sql-b", "faults": {"slow_query_ms": 700}}])
    deployment = _real_deployment(tmp_path)
    for tenant, server in (("one", "sql-a"), ("two", "sql-b")):
        deployment.add_tenant(tenant)
        _add_server(deployment, tenant, server, sim.ports[server], "S3cret;pw}x")
    supervisor = deployment.start()
    try:
        supervisor.wait_event("collection.succeeded", tenant="one", timeout=30)
        supervisor.wait_event("collection.succeeded", tenant="two", timeout=30)
        children = supervisor.running_children()
        assert sorted(children) == ["one", "two"]
        supervisor.signal(signal.SIGKILL)
        supervisor.wait_exit()
        killed_at = time.monotonic()
        codes = {tenant: subreaper(pid, STOP_BOUND_S + 10) for tenant, pid in children.items()}
        took = time.monotonic() - killed_at
        assert codes == {"one": CHILD_EXIT_OK, "two": CHILD_EXIT_OK}, codes
        assert took <= STOP_BOUND_S, took
    finally:
        supervisor.kill_group()


def test_a_killed_supervisors_tenants_are_collected_by_the_survivor(
    tmp_path: Path, simulator: Callable[[list[dict[str, Any]]], Simulator], subreaper
) -> None:
    """Two supervisors with real children split two tenants; the first is killed: its child exits by itself and
    the survivor's own child collects that tenant from then on (same host: taken over at once)."""
    sim = simulator([{"name": "sql-a"}, {"name": "sql-b"}])
    deployment = _real_deployment(tmp_path, lease_duration=30)
    for tenant, server in (("one", "sql-a"), ("two", "sql-b")):
        deployment.add_tenant(tenant)
        _add_server(deployment, tenant, server, sim.ports[server], "S3cret;pw}x")
    first = deployment.start("first")
    first.wait_event("collection.succeeded", timeout=30)
    second = deployment.start("second")
    try:
        wait_until(lambda: len(first.running_children()) == len(second.running_children()) == 1, 30,
                   "the two supervisors to run one tenant each")  # fmt: skip
        [(victim, orphan)] = first.running_children().items()
        second.wait_event("collection.succeeded", timeout=30)
        first.signal(signal.SIGKILL)
        first.wait_exit()
        killed_wall = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        assert subreaper(orphan, STOP_BOUND_S + 10) == CHILD_EXIT_OK
        [taken] = second.wait_event("instance.taken_over", timeout=20)
        assert taken["level"] == "WARNING"
        [started] = second.wait_event("child.started", tenant=victim, timeout=20)
        new_pid = started["child_pid"]
        assert new_pid != orphan
        # The survivor's child collects the tenant: its own log lines, and snapshots stored after the kill.
        second.wait_event("collection.succeeded", tenant=victim, pid=new_pid, count=2, timeout=20)
        wait_until(lambda: _snapshots(tmp_path, victim, since=killed_wall) >= 2, 20, "snapshots after the kill")
        assert sorted(second.running_children()) == ["one", "two"]
        assert not psutil.pid_exists(orphan)
    finally:
        second.signal(signal.SIGTERM)
        assert second.wait_exit(timeout=20) == 0
        first.kill_group()


def test_the_survivor_starts_a_taken_over_tenant_only_after_the_orphan_exited(
    tmp_path: Path, simulator: Callable[[list[dict[str, Any]]], Simulator], subreaper
) -> None:
    """"Two supervisors never run the same tenant" (docs/architecture.md): a lease is released once the child
    has exited. A server that stalls keeps the orphan's collection in flight until its deadline (8 s), so the
    orphan lives on for seconds after its parent was killed; the survivor must wait for it."""
    timeout = 8.0
    sim = simulator([{"name": "stalled", "faults": {"stall": "query"}}])
    deployment = _real_deployment(tmp_path, lease_duration=30, collection_timeout=timeout, heartbeat_timeout=30)
    deployment.add_tenant("one")
    _add_server(deployment, "one", "stalled", sim.ports["stalled"], "S3cret;pw}x")
    first = deployment.start("first")
    [refreshed] = first.wait_event("servers.refreshed", tenant="one", timeout=30)
    orphan = first.running_children()["one"]
    # Its first collection starts within one interval (1 s) of the server list and stalls until its deadline.
    time.sleep(max(0.0, _epoch(refreshed) + 1.5 - time.time()))
    first.signal(signal.SIGKILL)
    first.wait_exit()
    second = deployment.start("second")
    try:
        [started] = second.wait_event("child.started", tenant="one", timeout=30)
        orphan_alive_at_start = _running(orphan)  # an exited child not yet reaped (a zombie) is gone
        assert subreaper(orphan, timeout + 10) == CHILD_EXIT_OK
        orphan_gone = time.time()
        assert not orphan_alive_at_start and _epoch(started) >= orphan_gone - 0.2, (
            f"the survivor started tenant one {orphan_gone - _epoch(started):.1f} s before the orphan exited")
    finally:
        second.signal(signal.SIGTERM)
        second.wait_exit(timeout=30)
        first.kill_group()


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _epoch(record: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()


def test_a_password_never_reaches_the_supervisors_log(
    tmp_path: Path, simulator: Callable[[list[dict[str, Any]]], Simulator]
) -> None:
    """End to end at DEBUG: a server refusing the (right) password, one given a wrong password, one healthy; the
    children decrypt the passwords and log every failure; neither password appears in the supervisor's log,
    nor in the error stored for the server."""
    right, wrong = "Pw-9f3c1e77-right;}", "Pw-4b2d88a0-wrong;}"
    sim = simulator([
        {"name": "refusing", "faults": {"login_failed": True}, "password": right},
        {"name": "other-password", "password": right},
        {"name": "healthy", "password": right},
    ])  # fmt: skip
    deployment = _real_deployment(tmp_path)
    deployment.add_tenant("acme")
    for name, password in (("refusing", right), ("other-password", wrong), ("healthy", right)):
        _add_server(deployment, "acme", name, sim.ports[name], password)
    supervisor = deployment.start()
    try:
        failed = supervisor.wait_event("collection.failed", count=2, timeout=30)
        assert {e["server"] for e in failed} >= {"refusing", "other-password"}
        assert all(e["error_class"] == "login" for e in failed if e["server"] in ("refusing", "other-password"))
        supervisor.wait_event("collection.succeeded", server="healthy", timeout=30)
        supervisor.signal(signal.SIGTERM)
        assert supervisor.wait_exit(timeout=20) == 0
    finally:
        supervisor.kill_group()
    log_text = supervisor.log_path.read_text(encoding="utf-8")
    assert "Login failed" in log_text  # the failures are there, with the driver's words
    for password in (right, wrong):
        for fragment in (password, password.split("-")[1]):  # the whole password, and its distinctive part
            assert fragment not in log_text, fragment
    engine = create_engine(f"sqlite:///{tmp_path}/var/tenants/acme.db")
    with engine.connect() as conn:
        errors = dict(conn.execute(select(servers.c.name, servers.c.last_error)).all())
    engine.dispose()
    assert errors["refusing"] and "Login failed" in errors["refusing"]
    assert not any(p.split("-")[1] in (e or "") for e in errors.values() for p in (right, wrong))
