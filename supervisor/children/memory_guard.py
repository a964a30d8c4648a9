"""The child's memory against one answer without end: a value streamed for ever (a TEXT announcing 2 GB, an
endless NVARCHAR(MAX)), a packet stream that never ends its message. The driver keeps all of it (the row cap
of ``collect`` cannot help inside one value): 2 GB in two seconds, and the parent's watchdog killed the child
at ``max_child_rss_mb`` at every collection of that server, the tenant's other collections lost with it.

While a collection has been in flight for ``LONG_FLIGHT`` seconds or more (a healthy one takes milliseconds:
no extra wake-up for those), the child's resident memory is read every ``CHECK_EVERY`` seconds (one small read
of ``/proc/self/statm``), every ``CHECK_FAST`` seconds while it grows by ``FAST_GROWTH`` or more between two
reads (a server on loopback sends 1 GB/s); past ``SOFT_SHARE`` of ``max_child_rss_mb``, the collection whose
connection received the most (``TCP_INFO``), if at least ``LEAST_ANSWER`` bytes, is cut as a ``protocol``
failure of its server: the driver's call fails and lets go of what it held."""

from __future__ import annotations

import os

from supervisor.children.errors import CollectionFailure
from supervisor.children.flights import Flights
from supervisor.errors import PROTOCOL

LONG_FLIGHT = 0.05
CHECK_EVERY = 0.25
CHECK_FAST = 0.02
FAST_GROWTH = 16 * 1024 * 1024
SOFT_SHARE = 0.4
#: Far above any real answer (10,000 wait rows and the three small sets are about 2 MB).
LEAST_ANSWER = 16 * 1024 * 1024
_PAGE = os.sysconf("SC_PAGE_SIZE")
_MIB = 1024 * 1024


def resident_bytes() -> int:
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE


class MemoryGuard:
    def __init__(self, max_child_rss_mb: int) -> None:
        self.max_child_rss_mb = max_child_rss_mb
        self.limit = int(max_child_rss_mb * SOFT_SHARE * _MIB)
        self._next = 0.0
        self._last_rss = 0

    def next_check(self, now: float, flights: Flights) -> float:
        """Seconds until the next check is due: only while a collection has been running for a while."""
        return max(0.0, self._due(flights) - now)

    def _due(self, flights: Flights) -> float:
        oldest = flights.oldest_start()
        return float("inf") if oldest is None else max(self._next, oldest + LONG_FLIGHT)

    def check(self, now: float, flights: Flights) -> list[int]:
        """The server ids cut (their sessions abandoned, as ``Flights.enforce_deadlines`` returns them)."""
        if now < self._due(flights):
            return []
        rss = resident_bytes()
        self._next = now + (CHECK_FAST if rss - self._last_rss >= FAST_GROWTH else CHECK_EVERY)
        self._last_rss = rss
        if rss < self.limit:
            return []

        def too_large(received: int) -> CollectionFailure:
            return CollectionFailure(
                PROTOCOL, f"answer too large: {received / _MIB:,.0f} MiB received and not ended, the child's memory "
                f"at {rss / _MIB:,.0f} MiB (max_child_rss_mb {self.max_child_rss_mb}): cut",
            )  # fmt: skip

        cut = flights.cut_largest_answer(LEAST_ANSWER, too_large)
        return [] if cut is None else [cut]
