"""Watchdog verdicts: heartbeat age against heartbeat_timeout, and RSS (psutil) against max_child_rss_mb."""

from __future__ import annotations

import math
import os
import subprocess
from collections.abc import Iterator

import psutil
import pytest

from supervisor.ipc import ChildSpec, Heartbeat
from supervisor.parent.handle import STARTSECS, ChildHandle, ChildState, Due, StopReason
from supervisor.parent.watchdog import MIB, SERVER_ALLOWANCE_MIB, check_heartbeat, check_memory, memory_limit_mb
from supervisor.tenants import Tenant
from tests.unit.fakes import FakeContext, SignalRecorder

TENANT = Tenant(id=1, slug="acme", name="Acme", status="active", db_url=None)
SPEC = ChildSpec(tenant_id=1, slug="acme", db_url="sqlite://", instance_id="test", settings=None)
TIMEOUT = 20.0


def noop(*_args: object) -> None:
    raise AssertionError("never runs")


@pytest.fixture
def context() -> Iterator[FakeContext]:
    context = FakeContext()
    yield context
    context.close_all()


def started(context: FakeContext) -> ChildHandle:
    handle = ChildHandle(TENANT, kill=SignalRecorder())
    handle.start(context, SPEC, noop, [], [])  # type: ignore[arg-type]
    return handle


def t0(handle: ChildHandle) -> float:
    assert handle.started_at is not None
    return handle.started_at


def test_a_heartbeat_exactly_heartbeat_timeout_old_is_still_fine(context: FakeContext) -> None:
    handle = started(context)
    beat_at = float(math.ceil(t0(handle))) + 5  # whole seconds: (beat_at + TIMEOUT) - beat_at is TIMEOUT exactly
    handle.on_heartbeat(Heartbeat(sent_at=0.0), beat_at)
    assert check_heartbeat(handle, beat_at + TIMEOUT, TIMEOUT) is None
    verdict = check_heartbeat(handle, beat_at + TIMEOUT + 0.01, TIMEOUT)
    assert verdict is not None and verdict.reason is StopReason.NO_HEARTBEAT
    assert "no heartbeat for 20s" in verdict.detail and "heartbeat_timeout 20s" in verdict.detail


def test_a_child_that_never_sent_a_heartbeat_is_judged_from_its_start(context: FakeContext) -> None:
    handle = started(context)  # (t0 + TIMEOUT) - t0 may be a hair above TIMEOUT: the exact bound is tested above
    assert check_heartbeat(handle, t0(handle) + TIMEOUT - 0.01, TIMEOUT) is None
    assert check_heartbeat(handle, t0(handle) + TIMEOUT + 0.01, TIMEOUT) is not None


def test_a_fresh_heartbeat_clears_the_verdict(context: FakeContext) -> None:
    handle = started(context)
    late = t0(handle) + TIMEOUT + 5
    assert check_heartbeat(handle, late, TIMEOUT) is not None
    handle.on_heartbeat(Heartbeat(sent_at=0.0), late - 1)
    assert check_heartbeat(handle, late, TIMEOUT) is None


def test_only_starting_and_running_children_are_judged(context: FakeContext) -> None:
    handle = started(context)
    stale = t0(handle) + 10 * TIMEOUT
    assert handle.state is ChildState.STARTING and check_heartbeat(handle, stale, TIMEOUT) is not None
    handle.on_heartbeat(Heartbeat(sent_at=0.0), t0(handle))
    assert handle.transition(t0(handle) + STARTSECS, wanted=True) is Due.PROMOTED
    assert check_heartbeat(handle, stale, TIMEOUT) is not None  # RUNNING
    handle.request_stop(StopReason.NO_HEARTBEAT, stale, 5.0)
    assert check_heartbeat(handle, stale, TIMEOUT) is None  # STOPPING: already on its way out
    context.processes[-1].exit(-15)
    assert handle.settle(handle.reap(stale), True, stale) is not None
    assert handle.state is ChildState.BACKOFF and check_heartbeat(handle, stale, TIMEOUT) is None
    handle.cancel_backoff()
    assert handle.state is ChildState.STOPPED and check_heartbeat(handle, stale, TIMEOUT) is None


# --- memory: the test process itself stands in for the child ------------------------------------------------


@pytest.fixture
def myself() -> Iterator[ChildHandle]:
    context = FakeContext(pid=os.getpid())
    handle = ChildHandle(TENANT, kill=SignalRecorder())
    handle.start(context, SPEC, noop, [], [])  # type: ignore[arg-type]
    yield handle
    context.close_all()


def test_rss_over_the_limit_is_a_verdict_and_is_recorded(myself: ChildHandle) -> None:
    rss_mb = psutil.Process().memory_info().rss / MIB
    assert rss_mb > 2  # a Python interpreter with SQLAlchemy loaded
    verdict = check_memory(myself, max_rss_mb=1)
    assert verdict is not None and verdict.reason is StopReason.RSS_LIMIT
    assert "over max_child_rss_mb 1" in verdict.detail
    assert myself.rss_mb is not None and myself.rss_mb == pytest.approx(rss_mb, rel=0.2)


def test_rss_under_the_limit_is_only_recorded(myself: ChildHandle) -> None:
    rss_mb = psutil.Process().memory_info().rss / MIB
    assert check_memory(myself, max_rss_mb=int(rss_mb) + 1024) is None
    assert myself.rss_mb is not None and myself.rss_mb == pytest.approx(rss_mb, rel=0.2)


def test_memory_of_a_stopping_child_is_not_judged(myself: ChildHandle) -> None:
    myself.request_stop(StopReason.NOT_WANTED, 0.0, 5.0)
    assert check_memory(myself, max_rss_mb=1) is None
    assert myself.rss_mb is None


def test_a_child_that_vanished_gets_no_verdict() -> None:
    finished = subprocess.Popen(["true"])
    finished.wait()
    context = FakeContext(pid=finished.pid)  # reaped: no such process any more
    handle = ChildHandle(TENANT, kill=SignalRecorder())
    handle.start(context, SPEC, noop, [], [])  # type: ignore[arg-type]
    try:
        assert not psutil.pid_exists(finished.pid)
        assert check_memory(handle, max_rss_mb=1) is None
        assert handle.rss_mb is None
    finally:
        context.close_all()


def test_each_server_the_child_reported_adds_its_allowance_to_the_limit(myself: ChildHandle) -> None:
    """A 5,000-server tenant runs at about 580 MiB with its kept connections: against the bare limit it was
    recycled every 20 to 30 s, missing a third of its collections."""
    rss_mb = psutil.Process().memory_info().rss / MIB
    servers = math.ceil(rss_mb / SERVER_ALLOWANCE_MIB) + 100
    myself.on_heartbeat(Heartbeat(sent_at=0.0, servers_total=servers), t0(myself))
    assert memory_limit_mb(myself, 1) == 1 + SERVER_ALLOWANCE_MIB * servers
    assert check_memory(myself, max_rss_mb=1) is None
    myself.on_heartbeat(Heartbeat(sent_at=0.0, servers_total=1), t0(myself))
    verdict = check_memory(myself, max_rss_mb=1)
    assert verdict is not None and "over max_child_rss_mb 1 + 0.25 MiB for its servers" in verdict.detail
