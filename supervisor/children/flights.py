"""Collections in flight: one per server at most, each ended by the collector's own deadline.

A flight's deadline starts when a pool thread really starts it (a queued collection has none yet).
Whichever comes first settles the flight: the thread's outcome, or — at the deadline — a ``timeout``
outcome made by the main thread, naming the phase the collection was in. A flight settled by its
deadline is abandoned: its session's sockets are shut down so the stuck driver call returns
(``sockets``), its thread is written off in the pool so the slot is free at once (``pool``), and
its late result, if any, is dropped. The main thread keeps shutting down the sockets of abandoned
sessions until their threads return (a driver may open a new connection after the first is cut).
A result that wins is recorded by its own thread (``on_result``) while its data is still in the CPU's
caches; a deadline's timeout is recorded by the main thread, which harvests both.
See docs/architecture.md, "The deadline".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from supervisor.children.collect import CollectionOutcome, ServerSession
from supervisor.children.errors import CollectionFailure
from supervisor.children.pool import CollectionPool
from supervisor.children.targets import Target
from supervisor.errors import TIMEOUT

#: How often the sockets of abandoned calls are shut down again while their threads are still inside
#: the driver (Driver 18 opens a new connection when one is cut during its login).
RECUT_EVERY = 0.1
#: How long a collection abandoned at its deadline takes to leave the driver once its sockets are cut (20 ms seen).
RETURN_GRACE = 2.0


@dataclass
class Flight:
    target: Target
    session: ServerSession
    timeout: float
    on_result: Callable[[CollectionOutcome], None] | None = None
    started: float | None = None  # monotonic, when a thread began it
    started_wall: float = 0.0
    thread_ident: int | None = None
    outcome: CollectionOutcome | None = None
    abandoned: bool = False
    written_off: bool = False  # abandoned, and known as such to the main thread (its session forgotten)
    dropped: bool = False
    returned: bool = False  # the thread is out of the driver
    recorded: bool = False  # ``on_result`` had the outcome
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Set once ``outcome`` is, and recorded if its thread won: the flight can be harvested.
    settled: threading.Event = field(default_factory=threading.Event)

    @property
    def deadline(self) -> float | None:
        return None if self.started is None else self.started + self.timeout

    def run(self) -> None:
        """On a pool thread."""
        with self.lock:
            if self.dropped:
                return
            self.started, self.started_wall = time.monotonic(), time.time()
            self.thread_ident = threading.get_ident()
            deadline = self.started + self.timeout
        outcome = self.session.collect(deadline)
        if outcome.sample is not None and time.monotonic() > deadline:
            outcome = _answered_late(self, outcome)
        with self.lock:
            self.returned = True
            won = self.outcome is None
            if won:
                self.outcome = outcome
        if won:
            try:
                if self.on_result is not None:
                    self.on_result(outcome)
                    self.recorded = True
            finally:
                self.settled.set()
        if self.abandoned:
            self.session.close()  # the session was retired when the flight was abandoned


class Flights:
    def __init__(
        self, pool: CollectionPool, timeout: float, on_result: Callable[[CollectionOutcome], None] | None = None
    ) -> None:
        self._pool = pool
        self._timeout = timeout
        self._on_result = on_result
        self._flights: dict[int, Flight] = {}
        self._abandoned: list[Flight] = []  # settled by the deadline, thread still in the driver
        #: Servers whose last collection failed: their jobs come after the others (``CollectionPool`` ``suspect``).
        self._failing: set[int] = set()
        self._next_cut = 0.0
        self._cuts: list[Flight] = []  # cut by the memory guard's thread, not yet seen by the main thread
        self._cuts_lock = threading.Lock()
        #: Flights started so far: the memory guard's checks see whether one started since the last.
        self.starts = 0
        #: Set by the first flight started after the memory guard went to sleep (``sleep_while_idle``), and by ``wake``.
        self._launched = threading.Event()

    def __len__(self) -> int:
        return len(self._flights)

    def __contains__(self, server_id: int) -> bool:
        """In flight: running, or abandoned at its deadline less than ``RETURN_GRACE`` ago and still in the driver
        (its sockets were just cut: it returns in a moment). Its server's slot then passes without a collection,
        as while it runs, instead of counting a failure of its own."""
        if server_id in self._flights:
            return True
        held = self._held_in_driver(server_id)
        return held is not None and held.deadline is not None and held.deadline > time.monotonic() - RETURN_GRACE

    def _held_in_driver(self, server_id: int) -> Flight | None:
        """The server's collection abandoned at its deadline whose thread has not left the driver yet, if any."""
        return next((f for f in self._abandoned if f.target.server_id == server_id and not f.returned), None)

    def sessions(self) -> list[ServerSession]:
        """Sessions a thread may still be using (in flight or abandoned): not to be closed by others."""
        return [f.session for f in self._flights.values()] + [f.session for f in self._abandoned]

    def start(self, target: Target, session: ServerSession) -> Flight:
        """A collection of ``target`` on a pool thread; or, while its last one abandoned at its deadline is still
        inside the driver, none: a failure at once (a second thread would pile up behind the first, each slot
        one more, for as long as the driver holds them)."""
        flight = Flight(target, session, self._timeout, self._on_result)
        self._flights[target.server_id] = flight
        held = self._held_in_driver(target.server_id)
        if held is None:
            self._pool.submit(flight.run, suspect=target.server_id in self._failing)
        else:
            flight.outcome = _still_held(flight, held)
            flight.settled.set()
        self.starts += 1
        if not self._launched.is_set():  # after the flight is in ``_flights``: see ``sleep_while_idle``
            self._launched.set()  # the guard's wake, once per idle spell; a look at a flag for the other flights
        return flight

    def growing(self) -> bool:
        """Whether a collection may be growing the child's memory: one queued or running, or abandoned (at its
        deadline, or cut by the memory guard) with its thread still inside the driver. Safe on any thread."""
        flights = list(self._flights.values())  # first: an abandoned flight joins ``_abandoned`` before it leaves
        flights += list(self._abandoned)  # ``_flights``, so a look in this order cannot miss it
        return any(not f.returned and (f.outcome is None or f.started is not None) for f in flights)

    def sleep_while_idle(self, stopped: threading.Event) -> bool:
        """On the memory guard's thread: sleep while no collection may be growing the child's memory, until a flight
        starts or ``stopped`` is set (then ``wake``); whether it slept. The event is cleared before the last look, so a
        flight started during that look, or ``stopped`` set then, still wakes it at once."""
        if self.growing():
            return False
        self._launched.clear()
        if self.growing() or stopped.is_set():
            return False
        self._launched.wait()
        return True

    def wake(self) -> None:
        """End a ``sleep_while_idle`` (the memory guard stopping)."""
        self._launched.set()

    def next_deadline(self) -> float | None:
        """The earliest deadline of a flight still running, or the next re-cut of abandoned sockets."""
        running = [f for f in self._flights.values() if f.outcome is None]
        deadlines = [f.started + f.timeout for f in running if f.started is not None]
        if any(f.started is None for f in running):  # it starts any moment (a thread is on it): its deadline
            deadlines.append(time.monotonic() + self._timeout)  # comes no sooner than this, known by then
        if self._abandoned:
            deadlines.append(self._next_cut)
        return min(deadlines, default=None)

    def enforce_deadlines(self, now: float) -> list[int]:
        """Settle every flight past its deadline as a timeout; returns their server ids, and those of flights
        the memory guard cut since (their sessions are abandoned: the caller must not give them another
        collection)."""
        with self._cuts_lock:
            cuts, self._cuts = self._cuts, []
        for flight in cuts:
            flight.written_off = True
        self._abandoned.extend(cuts)
        overrun = [flight.target.server_id for flight in cuts]
        for server_id, flight in self._flights.items():
            deadline = flight.deadline
            if deadline is None or now < deadline:
                continue
            with flight.lock:
                if flight.outcome is not None:
                    continue
                flight.abandoned = True
                phase = flight.session.phase
                where = flight.session.abandon()
                flight.outcome = _timeout(flight, phase, where, now - deadline + flight.timeout)
                flight.settled.set()
            overrun.append(server_id)
            self._write_off(flight)
        self._cut_abandoned()
        return overrun

    def cut_largest_answer(self, least: int, failure: Callable[[int], CollectionFailure]) -> int | None:
        """Abandon the running flight whose connection received the most, if at least ``least`` bytes, with
        ``failure(received)``; returns its server id, None if none is that big. On the memory guard's thread: the
        main thread takes the cut flight over at its next ``enforce_deadlines``."""
        flights = list(self._flights.values())  # one step under the GIL, while the main thread may change the dict
        running = [(f.session.bytes_received(), f) for f in flights if f.started and not f.outcome]
        received, flight = max(running, key=lambda pair: pair[0], default=(0, None))
        if flight is None or received < least:
            return None
        with flight.lock:
            if flight.outcome is not None:
                return None
            flight.abandoned = True
            flight.session.abandon()
            elapsed = time.monotonic() - (flight.started or time.monotonic())
            flight.outcome = CollectionOutcome(flight.target, flight.started_wall, round(elapsed * 1000), None,
                                               failure(received))  # fmt: skip
            flight.settled.set()
        if flight.thread_ident is not None:
            self._pool.abandon(flight.thread_ident)
        with self._cuts_lock:
            self._cuts.append(flight)
        return flight.target.server_id

    def _write_off(self, flight: Flight) -> None:
        if flight.thread_ident is not None:
            self._pool.abandon(flight.thread_ident)
        flight.written_off = True
        self._abandoned.append(flight)

    def harvest(self) -> list[tuple[CollectionOutcome, bool]]:
        """The outcomes of the flights settled since the last call, each with whether ``on_result`` had it. A flight
        the memory guard has just cut waits for the next ``enforce_deadlines``, so that its server gets no new
        collection on the abandoned session."""
        outcomes = []
        for server_id, flight in list(self._flights.items()):
            if flight.settled.is_set() and (flight.written_off or not flight.abandoned):
                del self._flights[server_id]
                assert flight.outcome is not None
                outcomes.append((flight.outcome, flight.recorded))
                if flight.outcome.failure is None:
                    self._failing.discard(server_id)
                else:
                    self._failing.add(server_id)
        return outcomes

    def drop_queued(self) -> None:
        """Forget the flights no thread has started yet (at shutdown)."""
        for server_id, flight in list(self._flights.items()):
            with flight.lock:
                if flight.started is None:
                    flight.dropped = True
                    del self._flights[server_id]

    def _cut_abandoned(self) -> None:
        self._abandoned = [flight for flight in self._abandoned if not flight.returned]
        now = time.monotonic()
        if self._abandoned and now >= self._next_cut:
            self._next_cut = now + RECUT_EVERY
            for flight in self._abandoned:
                flight.session.abandon()


def collect_within_deadline(session: ServerSession, timeout: float) -> CollectionOutcome:
    """One collection on a thread of its own, ended by its deadline as in the child (``collect-once``)."""
    pool = CollectionPool(1, name="collect-once")
    flights = Flights(pool, timeout)
    flight = flights.start(session.target, session)
    try:
        while True:
            deadline = flight.deadline
            wait = 0.05 if deadline is None else max(0.0, deadline - time.monotonic())
            flight.settled.wait(wait)
            flights.enforce_deadlines(time.monotonic())
            outcomes = flights.harvest()
            if outcomes:
                return outcomes[0][0]
    finally:
        pool.shutdown()


def _timeout(flight: Flight, phase: str, where: str, elapsed: float) -> CollectionOutcome:
    """The collection as ended by the main thread at (or, on a loaded machine, shortly after) its deadline:
    ``elapsed`` is the time from its start to that moment, when its sockets were cut and its slot freed."""
    failure = CollectionFailure(
        TIMEOUT, f"no answer within collection_timeout {flight.timeout:g}s (during {where})", phase=phase
    )
    return CollectionOutcome(flight.target, flight.started_wall, round(elapsed * 1000), None, failure)


def _still_held(flight: Flight, held: Flight) -> CollectionOutcome:
    """The slot of a server whose collection abandoned at ``held``'s deadline has not left the driver: a message
    flood it is still reading after the bytes all arrived (no socket to cut), a name lookup that ends at the
    resolver's own timeout."""
    assert held.deadline is not None and held.outcome is not None and held.outcome.failure is not None
    ago = time.monotonic() - held.deadline
    failure = CollectionFailure(
        TIMEOUT, f"not started: the collection abandoned at its deadline {ago:.0f} s ago has not returned from the "
        "ODBC driver yet", phase=held.outcome.failure.phase,
    )  # fmt: skip
    flight.started_wall = time.time()
    return CollectionOutcome(flight.target, flight.started_wall, 0, None, failure)


def _answered_late(flight: Flight, outcome: CollectionOutcome) -> CollectionOutcome:
    """An answer that came after the deadline, before the main thread could cut it (a child with hundreds of
    threads on two cores wakes late): a timeout like any other, not a success that took longer than allowed."""
    failure = CollectionFailure(
        TIMEOUT, f"no answer within collection_timeout {flight.timeout:g}s (it came after {outcome.duration_ms} ms)",
        phase=flight.session.phase,
    )  # fmt: skip
    return CollectionOutcome(flight.target, outcome.started_at, outcome.duration_ms, None, failure)
