"""The memory guard sleeps while no collection is in flight and wakes at once when one starts: an idle child's guard
costs no wake between its collections, and an answer without end is still cut within ``CHECK_EVERY`` of its start.
Real ``Flights`` and pool, fake sessions, and a reader of the resident memory that counts its calls."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from supervisor.children.collect import CollectionOutcome
from supervisor.children.connection_string import Endpoint
from supervisor.children.flights import Flights
from supervisor.children.memory_guard import CHECK_EVERY, LEAST_ANSWER, QUIET_CHECKS, MemoryGuard
from supervisor.children.pool import CollectionPool
from supervisor.children.targets import Target

MIB = 1024 * 1024
LIMIT_MB = 100  # the guard cuts from 40 MiB on
#: A wake on a loaded machine (two cores, two test workers) may come this much late.
SLACK = 0.15
#: From the last collection's end until the guard sleeps: its quiet checks.
QUIET = (QUIET_CHECKS + 1) * CHECK_EVERY + SLACK


def target(server_id: int) -> Target:
    return Target(server_id, f"sql-{server_id}", Endpoint("127.0.0.1", 1433, "mon", "pw", "no", False), 30.0, "auto")


class Session:
    """Stands in for ServerSession: ``collect`` returns once ``release`` is set; ``abandon`` (the guard's cut) sets it
    unless ``stuck`` (a driver call that goes on after its sockets are shut down)."""

    phase = "fetch"

    def __init__(self, server_id: int, received: int = 0, stuck: bool = False) -> None:
        self.target = target(server_id)
        self.release = threading.Event()
        self.received = received
        self.stuck = stuck
        self.cut_at: float | None = None

    def collect(self, deadline: float) -> CollectionOutcome:
        self.release.wait(10)
        return CollectionOutcome(self.target, time.time(), 1, None, None)

    def bytes_received(self) -> int:
        return self.received

    def abandon(self) -> str:
        if self.cut_at is None:
            self.cut_at = time.monotonic()
        if not self.stuck:
            self.release.set()
        return "fetch"

    def close(self) -> None:
        pass


class Reads:
    """The guard's reads of ``/proc/self/statm``: when each came; the memory is ``rss``."""

    def __init__(self, rss: int = 10 * MIB) -> None:
        self.rss = rss
        self.times: list[float] = []

    def __call__(self, statm: int) -> int:
        self.times.append(time.monotonic())
        return self.rss

    def since(self, moment: float) -> int:
        return sum(1 for t in list(self.times) if t >= moment)


@pytest.fixture
def flights() -> Iterator[Flights]:
    pool = CollectionPool(4, name="guard-test")
    yield Flights(pool, 5.0)
    pool.shutdown()


def start_guard(flights: Flights, reads: Reads) -> MemoryGuard:
    guard = MemoryGuard(LIMIT_MB, flights, "t", read=reads)
    guard.start()
    return guard


def stop_guard(guard: MemoryGuard) -> None:
    guard.stop()
    guard._thread.join(2)
    assert not guard._thread.is_alive(), "stop() did not end the guard's sleep"


def settle(flights: Flights) -> None:
    deadline = time.monotonic() + 10
    while flights and time.monotonic() < deadline:
        flights.enforce_deadlines(time.monotonic())
        flights.harvest()
        time.sleep(0.005)
    assert not flights, "the flights never settled"


def test_an_idle_guard_does_not_wake_and_sleeps_again_after_a_collection(flights: Flights) -> None:
    reads = Reads()
    guard = start_guard(flights, reads)
    try:
        time.sleep(QUIET)
        idle_from = time.monotonic()
        time.sleep(1.2)  # it used to read 4 times a second
        assert reads.since(idle_from) == 0, f"{reads.since(idle_from)} reads with nothing in flight"

        session = Session(1)
        flights.start(session.target, session)  # type: ignore[arg-type]
        began = time.monotonic()
        time.sleep(3 * CHECK_EVERY + SLACK)
        assert reads.since(began) >= 3, "the guard did not watch the collection"  # the wake's read and two checks
        session.release.set()
        settle(flights)
        time.sleep(QUIET)
        idle_from = time.monotonic()
        time.sleep(1.2)
        assert reads.since(idle_from) == 0, f"{reads.since(idle_from)} reads after the collection ended"
    finally:
        stop_guard(guard)


def test_a_collection_started_while_the_guard_sleeps_is_cut_within_check_every(flights: Flights) -> None:
    reads = Reads(rss=60 * MIB)  # past the guard's limit (40 MiB) for good: each check looks for an answer to cut
    guard = start_guard(flights, reads)
    try:
        for server_id in (1, 2):  # each after the guard went back to sleep
            time.sleep(QUIET + 0.15 * server_id)
            assert reads.since(time.monotonic() - 0.3) == 0, "the guard was not asleep"
            session = Session(server_id, received=LEAST_ANSWER + MIB)
            began = time.monotonic()
            flights.start(session.target, session)  # type: ignore[arg-type]
            session.release.wait(CHECK_EVERY + 2)
            assert session.cut_at is not None, "a collection that started while the guard slept was not watched"
            assert session.cut_at - began <= CHECK_EVERY + SLACK, f"cut {session.cut_at - began:.3f} s after its start"
            settle(flights)
    finally:
        stop_guard(guard)


def test_a_collection_abandoned_inside_the_driver_is_watched_until_its_thread_returns() -> None:
    pool = CollectionPool(2, name="guard-test")
    flights = Flights(pool, 0.2)  # its deadline comes first; its thread stays in the driver
    reads = Reads()
    guard = start_guard(flights, reads)
    session = Session(1, stuck=True)
    try:
        flights.start(session.target, session)  # type: ignore[arg-type]
        settle(flights)  # abandoned at its deadline and harvested: no flight left, its thread still held
        time.sleep(QUIET)  # past the quiet checks after its start
        held_from = time.monotonic()
        time.sleep(4 * CHECK_EVERY)
        assert reads.since(held_from) >= 2, "the guard slept while an abandoned collection could still grow"
        session.release.set()
        time.sleep(0.05)
        flights.enforce_deadlines(time.monotonic())
        time.sleep(QUIET)
        idle_from = time.monotonic()
        time.sleep(0.8)
        assert reads.since(idle_from) == 0, "the guard kept waking once the abandoned thread returned"
    finally:
        session.release.set()
        stop_guard(guard)
        pool.shutdown()


def test_stop_ends_the_sleep_at_once(flights: Flights) -> None:
    guard = start_guard(flights, Reads())
    time.sleep(QUIET)
    stopped = time.monotonic()
    stop_guard(guard)
    assert time.monotonic() - stopped < 0.2
