"""The per-tenant child state machine (``ChildHandle``) driven with a fake context, process and ``os.kill``."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from supervisor.backoff import HEALTHY_RUN_SECONDS
from supervisor.ipc import CHILD_EXIT_CONFIG, CHILD_EXIT_CRASH, CHILD_EXIT_OK, ChildSpec, Heartbeat
from supervisor.parent.handle import FINAL_STOPS, STARTSECS, ChildHandle, ChildState, Due, StopReason
from supervisor.tenants import Tenant
from tests.unit.fakes import FakeConnection, FakeContext, FakeProcess, SignalRecorder

TENANT = Tenant(id=7, slug="acme", name="Acme", status="active", db_url=None)
SPEC = ChildSpec(tenant_id=7, slug="acme", db_url="sqlite://", instance_id="test", settings=None)
GRACE = 5.0


def child_target(*_args: object) -> None:
    raise AssertionError("a fake process never runs its target")


class Rig:
    """A handle with its fake context and signal recorder, and verbs for what the loop and the OS do."""

    def __init__(self) -> None:
        self.context = FakeContext()
        self.kills = SignalRecorder()
        self.handle = ChildHandle(TENANT, kill=self.kills)

    @property
    def process(self) -> FakeProcess:
        return self.context.processes[-1]

    @property
    def started_at(self) -> float:
        assert self.handle.started_at is not None
        return self.handle.started_at

    def start(self, siblings: tuple[FakeConnection, ...] = (), inherited: tuple[int, ...] = ()) -> FakeProcess:
        self.handle.start(self.context, SPEC, child_target, siblings, inherited)  # type: ignore[arg-type]
        return self.process

    def running(self) -> FakeProcess:
        """Started, heartbeating and past STARTSECS."""
        process = self.start()
        self.handle.on_heartbeat(Heartbeat(sent_at=0.0), self.started_at + 0.1)
        assert self.handle.transition(self.started_at + STARTSECS, wanted=True) is Due.PROMOTED
        return process

    def exit_after(self, uptime: float, code: int, wanted: bool = True) -> float | None:
        """The child exits ``uptime`` seconds after its start; the loop reaps and settles it."""
        self.process.exit(code)
        now = self.started_at + uptime
        return self.handle.settle(self.handle.reap(now), wanted, now)

    def crash(self, uptime: float = 2.0) -> float:
        delay = self.exit_after(uptime, CHILD_EXIT_CRASH)
        assert delay is not None
        return delay


@pytest.fixture
def rig() -> Iterator[Rig]:
    rig = Rig()
    yield rig
    rig.context.close_all()


# --- STOPPED → STARTING → RUNNING ---------------------------------------------------------------------------


def test_a_new_handle_is_stopped_with_nothing_due(rig: Rig) -> None:
    handle = rig.handle
    assert handle.state is ChildState.STOPPED
    assert not handle.alive and handle.pid is None
    assert handle.next_deadline() is None
    assert handle.transition(1e9, wanted=True) is Due.NOTHING
    assert handle.state is ChildState.STOPPED


def test_start_forks_the_child_with_its_pipe_and_the_fds_it_must_close(rig: Rig) -> None:
    sibling = FakeConnection(99)  # never closed: only its place in the list matters
    process = rig.start(siblings=(sibling,), inherited=(41, 42))
    reader, writer = rig.context.pipes[0]
    handle = rig.handle
    assert process.started and process.name == "tenant-acme" and process.target is child_target
    assert process.daemon  # a parent failing unexpectedly does not wait on it at exit
    spec, child_conn, parent_conns, parent_fds = process.args
    assert spec is SPEC and child_conn is writer
    assert list(parent_conns) == [sibling, reader]  # the child closes its siblings' pipes and our read end
    assert {41, 42, reader.fileno()} <= set(parent_fds)
    assert writer.fileno() not in parent_fds and not {0, 1, 2} & set(parent_fds)
    assert writer.closed and not reader.closed  # the child holds the only write end
    assert handle.conn is reader and handle.process is process  # type: ignore[comparison-overlap]
    assert handle.state is ChildState.STARTING and handle.alive and handle.pid == process.pid
    assert (handle.starts, handle.restarts) == (1, 0)
    assert handle.next_deadline() is None


def test_running_needs_a_heartbeat_and_startsecs(rig: Rig) -> None:
    rig.start()
    handle, t0 = rig.handle, rig.started_at
    assert handle.transition(t0 + 100 * STARTSECS, wanted=True) is Due.NOTHING  # no heartbeat yet
    assert handle.state is ChildState.STARTING
    handle.on_heartbeat(Heartbeat(sent_at=0.0), t0 + 0.1)
    assert handle.heartbeat_age(t0 + 0.6) == pytest.approx(0.5)
    assert handle.transition(t0 + STARTSECS - 0.01, wanted=True) is Due.NOTHING
    assert handle.state is ChildState.STARTING
    assert handle.transition(t0 + STARTSECS, wanted=True) is Due.PROMOTED
    assert handle.state is ChildState.RUNNING
    assert handle.transition(t0 + STARTSECS + 1, wanted=True) is Due.NOTHING  # promoted once
    assert handle.state is ChildState.RUNNING


def test_the_heartbeat_age_counts_from_the_start_until_the_first_heartbeat(rig: Rig) -> None:
    rig.start()
    t0 = rig.started_at
    assert rig.handle.heartbeat_age(t0 + 3) == pytest.approx(3)
    rig.handle.on_heartbeat(Heartbeat(sent_at=0.0), t0 + 2)
    assert rig.handle.heartbeat_age(t0 + 3) == pytest.approx(1)


# --- STOPPING and the kill -----------------------------------------------------------------------------------


@pytest.mark.parametrize("promoted", [False, True], ids=["starting", "running"])
def test_request_stop_sends_term_once_and_makes_the_kill_due_after_the_grace(rig: Rig, promoted: bool) -> None:
    process = rig.running() if promoted else rig.start()
    handle, now = rig.handle, rig.started_at + 3
    assert handle.request_stop(StopReason.NOT_WANTED, now, GRACE)
    assert handle.state is ChildState.STOPPING and handle.stop_reason is StopReason.NOT_WANTED
    assert rig.kills.sent == [(process.pid, signal.SIGTERM)]
    assert handle.kill_at == now + GRACE and handle.next_deadline() == now + GRACE
    assert not handle.request_stop(StopReason.SHUTDOWN, now + 1, GRACE)  # already stopping: no second TERM
    assert rig.kills.sent == [(process.pid, signal.SIGTERM)]
    assert handle.stop_reason is StopReason.NOT_WANTED and handle.kill_at == now + GRACE


def test_request_stop_of_a_handle_without_a_process_does_nothing(rig: Rig) -> None:
    assert not rig.handle.request_stop(StopReason.SHUTDOWN, 10.0, GRACE)
    assert rig.handle.state is ChildState.STOPPED and rig.kills.sent == []


def test_the_kill_is_due_at_kill_at_and_only_once(rig: Rig) -> None:
    process = rig.running()
    handle, now = rig.handle, rig.started_at + 3
    handle.request_stop(StopReason.NO_HEARTBEAT, now, GRACE)
    assert handle.transition(now + GRACE - 0.01, wanted=True) is Due.NOTHING
    assert handle.transition(now + GRACE, wanted=True) is Due.KILL
    assert handle.state is ChildState.STOPPING  # the loop logs, then kills
    handle.kill()
    assert rig.kills.sent[-1] == (process.pid, signal.SIGKILL) and handle.killed
    assert handle.transition(now + GRACE + 1, wanted=True) is Due.NOTHING
    assert handle.next_deadline() is None
    assert handle.state is ChildState.STOPPING  # until the exit is reaped


def test_stop_by_only_brings_the_kill_forward(rig: Rig) -> None:
    rig.running()
    handle, now = rig.handle, rig.started_at + 3
    handle.request_stop(StopReason.NOT_WANTED, now, 30.0)
    handle.stop_by(now + 50)
    assert handle.kill_at == now + 30
    handle.stop_by(now + 5)
    assert handle.kill_at == now + 5
    assert handle.transition(now + 5, wanted=False) is Due.KILL
    handle.kill()
    handle.stop_by(now + 6)
    assert handle.kill_at is None  # already killed: nothing more to make due


def test_a_child_already_gone_when_signalled_is_left_to_its_sentinel(rig: Rig) -> None:
    rig.running()
    rig.kills.gone = True
    assert rig.handle.request_stop(StopReason.NOT_WANTED, rig.started_at + 3, GRACE)  # ProcessLookupError swallowed
    assert rig.handle.state is ChildState.STOPPING
    rig.handle.kill()
    assert rig.handle.killed


# --- exit: reap and settle ----------------------------------------------------------------------------------


def test_reap_joins_closes_and_describes_the_exit(rig: Rig) -> None:
    process = rig.running()
    handle = rig.handle
    reader = handle.conn
    handle.request_stop(StopReason.NOT_WANTED, rig.started_at + 3, GRACE)
    handle.kill()
    process.exit(-signal.SIGKILL)
    info = handle.reap(rig.started_at + 4)
    assert process.joined and process.closed and reader is not None and reader.closed  # type: ignore[attr-defined]
    assert handle.process is None and handle.conn is None and not handle.alive
    assert (info.pid, info.code, info.requested, info.killed) == (process.pid, -9, StopReason.NOT_WANTED, True)
    assert info.uptime == pytest.approx(4) and info.description == "killed by SIGKILL" and not info.expected
    assert handle.last_exit_code == -9 and handle.last_exit_wall is not None
    assert handle.last_error is None  # a stop we asked for is no error


def test_an_unexpected_exit_is_recorded_as_the_last_error(rig: Rig) -> None:
    rig.running()
    rig.process.exit(CHILD_EXIT_CRASH)
    info = rig.handle.reap(rig.started_at + 2)
    assert info.requested is None and not info.expected and info.description == "exit code 1"
    assert rig.handle.last_error == "exit code 1"


def test_a_clean_exit_on_request_is_expected(rig: Rig) -> None:
    rig.running()
    rig.handle.request_stop(StopReason.SHUTDOWN, rig.started_at + 2, GRACE)
    rig.process.exit(CHILD_EXIT_OK)
    assert rig.handle.reap(rig.started_at + 3).expected


@pytest.mark.parametrize("reason", sorted(FINAL_STOPS))
def test_after_a_final_stop_the_child_stays_stopped(rig: Rig, reason: StopReason) -> None:
    rig.running()
    rig.handle.request_stop(reason, rig.started_at + 2, GRACE)
    assert rig.exit_after(3, CHILD_EXIT_OK, wanted=True) is None
    assert rig.handle.state is ChildState.STOPPED and rig.handle.retry_at is None
    assert rig.handle.next_deadline() is None
    assert rig.handle.transition(rig.started_at + 1000, wanted=True) is Due.NOTHING


def test_final_stops_are_the_three_that_end_the_tenant_here() -> None:
    assert frozenset({StopReason.NOT_WANTED, StopReason.SHUTDOWN, StopReason.LEASE_EXPIRING}) == FINAL_STOPS


@pytest.mark.parametrize("reason", [None, StopReason.NO_HEARTBEAT, StopReason.RSS_LIMIT])
def test_a_tenant_no_longer_wanted_stays_stopped_whatever_the_exit(rig: Rig, reason: StopReason | None) -> None:
    rig.running()
    if reason is not None:
        rig.handle.request_stop(reason, rig.started_at + 2, GRACE)
    assert rig.exit_after(3, CHILD_EXIT_CRASH, wanted=False) is None
    assert rig.handle.state is ChildState.STOPPED


def test_a_crash_backs_off_exponentially(rig: Rig) -> None:
    expected_ceilings = [1.0, 2.0, 4.0, 8.0]
    for ceiling in expected_ceilings:
        rig.running()
        delay = rig.crash()
        assert ceiling / 2 <= delay <= ceiling
        now = rig.started_at + 2.0
        assert rig.handle.state is ChildState.BACKOFF
        assert rig.handle.retry_at == pytest.approx(now + delay) and rig.handle.next_deadline() == rig.handle.retry_at
        assert rig.handle.transition(now + delay, wanted=True) is Due.START
    assert rig.handle.restarts == len(expected_ceilings) - 1


def test_a_watchdog_stop_restarts_with_the_crash_backoff(rig: Rig) -> None:
    rig.running()
    rig.handle.request_stop(StopReason.NO_HEARTBEAT, rig.started_at + 30, GRACE)
    delay = rig.exit_after(31, -signal.SIGTERM)
    assert delay is not None and 0.5 <= delay <= 1.0 and rig.handle.state is ChildState.BACKOFF
    assert rig.handle.crash_backoff.failures == 1


def test_a_configuration_error_backs_off_slowly_and_apart_from_crashes(rig: Rig) -> None:
    rig.running()
    first = rig.exit_after(2, CHILD_EXIT_CONFIG)
    assert first is not None and 30.0 <= first <= 60.0
    rig.start()
    second = rig.exit_after(2, CHILD_EXIT_CONFIG)
    assert second is not None and 60.0 <= second <= 120.0
    assert rig.handle.crash_backoff.failures == 0
    rig.start()
    assert 0.5 <= rig.crash() <= 1.0  # a crash after config errors starts at the crash backoff's own start


def test_a_memory_recycle_after_a_healthy_run_restarts_at_once_without_counting_as_a_failure(rig: Rig) -> None:
    rig.running()
    rig.crash()
    rig.start()
    stop_at = HEALTHY_RUN_SECONDS + 1  # grown past the limit after a healthy run: a leak, recycled
    rig.handle.request_stop(StopReason.RSS_LIMIT, rig.started_at + stop_at, GRACE)
    assert rig.exit_after(stop_at + 1, CHILD_EXIT_OK) == 0.0
    assert rig.handle.state is ChildState.BACKOFF
    assert rig.handle.retry_at == pytest.approx(rig.started_at + stop_at + 1)
    assert rig.handle.transition(rig.started_at + stop_at + 1, wanted=True) is Due.START
    assert rig.handle.crash_backoff.failures == 1  # untouched


def test_a_child_over_the_memory_limit_soon_after_its_start_backs_off(rig: Rig) -> None:
    """Too big from its start (a tenant whose normal size is above the limit): before, it was restarted at once,
    every 20 to 30 s for ever, each restart dropping all its connections."""
    delays = []
    for _ in range(3):
        rig.running()
        rig.handle.request_stop(StopReason.RSS_LIMIT, rig.started_at + 20, GRACE)
        delay = rig.exit_after(21, CHILD_EXIT_OK)
        assert delay is not None
        delays.append(delay)
        rig.start()
    assert 0.5 <= delays[0] <= 1.0 and 1.0 <= delays[1] <= 2.0 and 2.0 <= delays[2] <= 4.0, delays


def test_a_healthy_run_resets_the_backoffs(rig: Rig) -> None:
    for _ in range(3):
        rig.start()
        rig.crash()
    rig.start()
    rig.exit_after(2, CHILD_EXIT_CONFIG)
    rig.start()
    assert 4.0 <= rig.crash(uptime=HEALTHY_RUN_SECONDS - 0.5) <= 8.0  # not quite healthy: the backoff goes on
    rig.start()
    assert 0.5 <= rig.crash(uptime=HEALTHY_RUN_SECONDS) <= 1.0  # healthy: starts over
    assert rig.handle.config_backoff.failures == 0
    rig.start()
    config_delay = rig.exit_after(2, CHILD_EXIT_CONFIG)
    assert config_delay is not None and 30.0 <= config_delay <= 60.0


# --- BACKOFF → STARTING, or cancelled -------------------------------------------------------------------------


def test_backoff_waits_for_retry_at_then_asks_for_a_start(rig: Rig) -> None:
    first = rig.running()
    delay = rig.crash()
    handle, retry_at = rig.handle, rig.started_at + 2 + delay
    assert handle.transition(retry_at - 0.01, wanted=True) is Due.NOTHING
    assert handle.state is ChildState.BACKOFF
    assert handle.transition(retry_at, wanted=True) is Due.START
    assert handle.state is ChildState.BACKOFF  # until the loop starts it
    second = rig.start()
    assert second is not first and second.pid != first.pid
    assert handle.state is ChildState.STARTING and handle.pid == second.pid
    assert (handle.starts, handle.restarts) == (2, 1)
    assert handle.retry_at is None and handle.stop_reason is None and not handle.killed
    assert handle.last_heartbeat_at is None  # the new child must send its own first heartbeat
    assert handle.transition(rig.started_at + STARTSECS, wanted=True) is Due.NOTHING


def test_backoff_of_a_tenant_no_longer_wanted_is_cancelled(rig: Rig) -> None:
    rig.running()
    delay = rig.crash()
    after = rig.started_at + 2 + delay + 1
    assert rig.handle.transition(after, wanted=False) is Due.NOTHING  # past retry_at, yet no start
    assert rig.handle.state is ChildState.STOPPED and rig.handle.retry_at is None
    assert rig.handle.next_deadline() is None
    assert rig.handle.transition(after, wanted=True) is Due.NOTHING


def test_cancel_backoff_only_cancels_a_backoff(rig: Rig) -> None:
    rig.running()
    rig.handle.cancel_backoff()
    assert rig.handle.state is ChildState.RUNNING
    rig.crash()
    rig.handle.cancel_backoff()
    assert rig.handle.state is ChildState.STOPPED and rig.handle.retry_at is None


def test_a_failed_fork_closes_the_pipe_and_backs_off(rig: Rig) -> None:
    rig.context.next_start_error = OSError(11, "Resource temporarily unavailable")
    with pytest.raises(OSError):
        rig.start()
    reader, writer = rig.context.pipes[0]
    assert reader.closed and writer.closed
    handle = rig.handle
    assert handle.state is ChildState.STOPPED and not handle.alive and handle.starts == 0
    delay = handle.start_failed(100.0)
    assert 0.5 <= delay <= 1.0
    assert handle.state is ChildState.BACKOFF and handle.retry_at == 100.0 + delay
    assert handle.next_deadline() == 100.0 + delay
    assert handle.transition(100.0 + delay, wanted=True) is Due.START
    assert 1.0 <= handle.start_failed(101.0) <= 2.0  # a fork that keeps failing backs off like a crash loop
    assert 2.0 <= handle.start_failed(103.0) <= 4.0


def test_next_deadline_is_none_while_nothing_is_timed(rig: Rig) -> None:
    rig.start()
    assert rig.handle.next_deadline() is None  # STARTING: promotion waits for a heartbeat, not a time
    rig.handle.on_heartbeat(Heartbeat(sent_at=0.0), rig.started_at)
    rig.handle.transition(rig.started_at + STARTSECS, wanted=True)
    assert rig.handle.state is ChildState.RUNNING and rig.handle.next_deadline() is None


def test_only_a_start_after_an_exit_the_parent_did_not_mean_is_a_restart(rig: Rig) -> None:
    """Five suspend/activate cycles 0.3 s apart reused the handle and counted 4 restarts (status, and
    ``collector_child_restarts_total``), with no crash at all."""
    for _ in range(3):
        rig.running()
        rig.handle.request_stop(StopReason.NOT_WANTED, rig.started_at + 1, GRACE)
        assert rig.exit_after(1.5, CHILD_EXIT_OK) is None  # suspended: STOPPED
        rig.start()  # activated again
    rig.running()
    rig.handle.request_stop(StopReason.TENANT_CHANGED, rig.started_at + 1, GRACE)
    assert rig.exit_after(1.5, CHILD_EXIT_OK) == 0.0
    rig.start()  # on the tenant's new DB
    assert rig.handle.restarts == 0
    rig.running()
    rig.crash()
    rig.start()
    assert rig.handle.restarts == 1


def test_a_sigkill_the_supervisor_did_not_send_is_named_as_such(rig: Rig) -> None:
    """The out-of-memory killer's SIGKILL read "killed by SIGKILL", like the supervisor's own."""
    process = rig.running()
    process.exit(-signal.SIGKILL)
    info = rig.handle.reap(rig.started_at + 4)
    assert info.description == "killed by SIGKILL, not sent by the supervisor (the out-of-memory killer? see dmesg)"
