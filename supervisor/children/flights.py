"""Collections in flight: one per server at most, each with its deadline and, past it, a cancel.

The main thread starts flights on the pool, watches their deadlines and harvests finished ones;
the collection thread sets the deadline when it really starts (a queued collection has none yet).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from supervisor.children.collect import CollectionOutcome, ServerSession
from supervisor.children.targets import Target

#: The watchdog cancels a collection this long after its deadline (the query timeout should come first).
CANCEL_GRACE = 0.3


@dataclass
class Flight:
    target: Target
    session: ServerSession
    future: Future[CollectionOutcome] | None = None
    deadline: float | None = None  # set by the worker when it really starts
    canceller: threading.Thread | None = None


class Flights:
    def __init__(self, pool: ThreadPoolExecutor, timeout: float) -> None:
        self._pool = pool
        self._timeout = timeout
        self._flights: dict[int, Flight] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def __contains__(self, server_id: int) -> bool:
        return server_id in self._flights

    def server_ids(self) -> set[int]:
        return set(self._flights)

    def sessions(self) -> list[ServerSession]:
        return [flight.session for flight in self._flights.values()]

    def start(self, target: Target, session: ServerSession) -> None:
        flight = Flight(target, session)
        self._flights[target.server_id] = flight
        flight.future = self._pool.submit(self._collect, flight, self._timeout)

    @staticmethod
    def _collect(flight: Flight, timeout: float) -> CollectionOutcome:
        flight.deadline = time.monotonic() + timeout
        return flight.session.collect(flight.deadline)

    def watch_deadlines(self, now: float) -> None:
        for flight in self._flights.values():
            if flight.deadline is None or flight.canceller is not None:
                continue
            if now > flight.deadline + CANCEL_GRACE:
                flight.canceller = threading.Thread(
                    target=flight.session.cancel, name=f"cancel-{flight.target.server_id}", daemon=True
                )
                flight.canceller.start()

    def harvest(self) -> list[CollectionOutcome]:
        """The outcomes of the flights that ended since the last call."""
        outcomes = []
        for server_id, flight in list(self._flights.items()):
            if flight.future is None or not flight.future.done():
                continue
            if flight.canceller is not None:
                flight.canceller.join(2.0)
            del self._flights[server_id]
            outcomes.append(flight.future.result())
        return outcomes

    def drop_queued(self) -> list[int]:
        """Forget the flights still waiting for a pool thread (at shutdown); returns their server ids."""
        dropped = []
        for server_id, flight in list(self._flights.items()):
            if flight.future is not None and flight.future.cancel():
                del self._flights[server_id]
                dropped.append(server_id)
        return dropped

    def join_cancellers(self, timeout: float) -> None:
        for flight in self._flights.values():
            if flight.canceller is not None:
                flight.canceller.join(timeout)
