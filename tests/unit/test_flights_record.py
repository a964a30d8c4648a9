"""Who records a flight's outcome: the thread that collected it (``on_result``, at once, while its data is hot)
or, for a deadline's timeout, the main thread from ``harvest``; a late result after the deadline is dropped."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from supervisor.children.collect import CollectionOutcome
from supervisor.children.connection_string import Endpoint
from supervisor.children.flights import Flights
from supervisor.children.pool import CollectionPool
from supervisor.children.targets import Target
from supervisor.errors import TIMEOUT
from tests.helpers.waiting import wait_until

TARGET = Target(7, "sql-7", Endpoint("127.0.0.1", 1433, "mon", "pw", "no", False), 30.0, "auto")


class FakeSession:
    """Stands in for ServerSession: ``collect`` returns once ``release`` is set."""

    phase = "query"

    def __init__(self, release: threading.Event) -> None:
        self.release = release
        self.target = TARGET

    def collect(self, deadline: float) -> CollectionOutcome:
        self.release.wait(10)
        return CollectionOutcome(TARGET, time.time(), 1, None, None)

    def abandon(self) -> str:
        self.release.set()
        return "query"

    def close(self) -> None:
        pass


def settle(flights: Flights, timeout: float = 10.0) -> list[tuple[CollectionOutcome, bool]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        flights.enforce_deadlines(time.monotonic())
        if harvested := flights.harvest():
            return harvested
        time.sleep(0.005)
    raise AssertionError("the flight never settled")


def test_a_result_is_recorded_on_its_own_thread_and_harvested_as_recorded() -> None:
    recorded: list[tuple[CollectionOutcome, int]] = []
    pool = CollectionPool(2, name="t")
    flights = Flights(pool, 5.0, on_result=lambda outcome: recorded.append((outcome, threading.get_ident())))
    release = threading.Event()
    release.set()
    flights.start(TARGET, FakeSession(release))  # type: ignore[arg-type]
    [(outcome, by_thread)] = settle(flights)
    assert by_thread and outcome.failure is None
    assert [r[0] for r in recorded] == [outcome] and recorded[0][1] != threading.get_ident()
    pool.shutdown()


def test_a_timeout_is_left_to_the_main_thread_and_the_late_result_is_not_recorded() -> None:
    recorded: list[Any] = []
    pool = CollectionPool(2, name="t")
    flights = Flights(pool, 0.2, on_result=recorded.append)
    release = threading.Event()
    session = FakeSession(release)
    session.abandon = lambda: "query"  # type: ignore[method-assign]  # the driver call goes on past the deadline
    flights.start(TARGET, session)  # type: ignore[arg-type]
    [(outcome, by_thread)] = settle(flights)
    assert not by_thread and outcome.failure is not None and outcome.failure.error_class == TIMEOUT
    release.set()  # the late result arrives
    time.sleep(0.2)
    assert recorded == []
    pool.shutdown()


def test_a_failing_recorder_still_settles_the_flight() -> None:
    def broken(outcome: CollectionOutcome) -> None:
        raise RuntimeError("recorder bug")

    pool = CollectionPool(1, name="t")
    flights = Flights(pool, 5.0, on_result=broken)
    release = threading.Event()
    release.set()
    flights.start(TARGET, FakeSession(release))  # type: ignore[arg-type]
    [(outcome, by_thread)] = settle(flights)  # harvested, so the server is scheduled again; the main thread records it
    assert outcome.failure is None and not by_thread
    assert len(flights) == 0
    pool.shutdown()


class LateSession(FakeSession):
    """Answers 0.3 s into a 0.2 s collection, with a sample."""

    def collect(self, deadline: float) -> CollectionOutcome:
        time.sleep(0.3)
        return CollectionOutcome(TARGET, time.time(), 300, object(), None)  # type: ignore[arg-type]


def test_an_answer_after_the_deadline_is_a_timeout_even_when_the_main_thread_was_late_to_cut_it() -> None:
    """With 1,000 threads on two cores the main thread woke seconds late, and 5,796 answers that came after 5 s
    were stored as successes (up to 6.6 s)."""
    recorded: list[CollectionOutcome] = []
    pool = CollectionPool(2, name="t")
    flights = Flights(pool, 0.2, on_result=recorded.append)
    flight = flights.start(TARGET, LateSession(threading.Event()))  # type: ignore[arg-type]
    assert flight.settled.wait(5)  # no enforce_deadlines meanwhile: the main thread is busy elsewhere
    [(outcome, by_thread)] = flights.harvest()
    assert by_thread and recorded == [outcome]
    assert outcome.sample is None and outcome.failure is not None and outcome.failure.error_class == TIMEOUT
    assert "no answer within collection_timeout 0.2s (it came after 300 ms)" in outcome.failure.message
    pool.shutdown()


def test_the_slot_right_after_a_deadline_passes_while_the_cut_call_leaves_the_driver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cut call leaves the driver within milliseconds. The server's next slot in that time (an interval as short
    as the timeout) passes without a collection, as while one runs; before, it was a failure of its own ("abandoned
    at its deadline 0 s ago has not returned"), counted and stored as the server's error. A call still in the driver
    after ``RETURN_GRACE`` (a message flood, a name lookup) is one: its slots fail at once."""
    from supervisor.children import flights as flights_module

    monkeypatch.setattr(flights_module, "RETURN_GRACE", 0.3)
    pool = CollectionPool(2, name="t")
    flights = Flights(pool, 0.1, on_result=lambda _outcome: None)
    release = threading.Event()
    session = FakeSession(release)
    session.abandon = lambda: "query"  # type: ignore[method-assign]  # the call goes on past the deadline
    flights.start(TARGET, session)  # type: ignore[arg-type]
    settle(flights)
    assert TARGET.server_id in flights  # just cut: the slot passes
    time.sleep(0.35)
    assert TARGET.server_id not in flights  # held past the grace: the driver holds it
    flights.start(TARGET, FakeSession(threading.Event()))  # type: ignore[arg-type]
    [(held, _)] = settle(flights)
    assert held.failure is not None and "has not returned from the ODBC driver yet" in held.failure.message
    release.set()
    wait_until(lambda: TARGET.server_id not in flights, 5, "the cut call returned")
    pool.shutdown()
