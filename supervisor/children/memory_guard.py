"""The child's memory against one answer without end: a value streamed for ever (a TEXT announcing 2 GB, an
endless NVARCHAR(MAX)), a packet stream that never ends its message. The driver keeps all of it (the row cap
of ``collect`` cannot help inside one value): 2 GB in two seconds, and the parent's watchdog killed the child
at ``max_child_rss_mb`` at every collection of that server, the tenant's other collections lost with it.

A thread of its own reads the child's resident memory every ``CHECK_EVERY`` seconds (one small read of
``/proc/self/statm``), every ``CHECK_FAST`` seconds while it grows by ``FAST_GROWTH`` or more between two reads
(a server on loopback sends 1 GB/s); past ``SOFT_SHARE`` of ``max_child_rss_mb``, the collection whose connection
received the most (``TCP_INFO``), if at least ``LEAST_ANSWER`` bytes, is cut as a ``protocol`` failure of its
server: the driver's call fails and lets go of what it held. On its own thread, the guard costs the main loop no
wake: it used to wake 50 ms into every batch of collections in case one of them was the endless one.

Once no collection has started or been in flight for ``QUIET_CHECKS`` checks in a row (an idle child between
its collections, most of the time), the guard sleeps without a timeout: the first flight started wakes it
(``Flights.sleep_while_idle``), and its first check comes ``CHECK_EVERY`` after, as before. A collection
abandoned with its thread still inside the driver counts as in flight: the driver may still add to what it holds."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from supervisor.children.errors import CollectionFailure
from supervisor.children.flights import Flights
from supervisor.children.os_thread_name import name_os_thread
from supervisor.errors import INTERNAL, PROTOCOL
from supervisor.logs import log_event

log = logging.getLogger("supervisor.child")

CHECK_EVERY = 0.25
CHECK_FAST = 0.02
FAST_GROWTH = 16 * 1024 * 1024
SOFT_SHARE = 0.4
#: Checks in a row with no flight started since the one before and none in flight before the guard sleeps until a
#: flight starts. That wake costs two switches (the wake, then the wait for the GIL the main thread holds while it
#: starts the batch), a tick one: a busy child's batches come about twice a second, and a guard that slept between
#: them woke 5 times a second instead of 4 (``bench.thread_cpu``).
QUIET_CHECKS = 4
#: Far above any real answer (10,000 wait rows and the three small sets are about 2 MB).
LEAST_ANSWER = 16 * 1024 * 1024
_PAGE = os.sysconf("SC_PAGE_SIZE")
_MIB = 1024 * 1024


def resident_bytes(statm: int) -> int:
    """From ``/proc/self/statm`` opened once (``statm``, a descriptor): a child out of descriptors still reads it."""
    return int(os.pread(statm, 128, 0).split()[1]) * _PAGE


class MemoryGuard:
    def __init__(
        self, max_child_rss_mb: int, flights: Flights, tenant: str, read: Callable[[int], int] = resident_bytes
    ) -> None:
        self.max_child_rss_mb = max_child_rss_mb
        self.limit = int(max_child_rss_mb * SOFT_SHARE * _MIB)
        self._flights = flights
        self._tenant = tenant
        self._read = read  # the resident bytes from the descriptor of ``/proc/self/statm`` (tests count the reads)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"memory-guard-{tenant}", daemon=True)

    def start(self) -> None:
        try:
            self._thread.start()
        except RuntimeError as exc:  # no thread to be had (a thread or process limit): collect without the guard
            log_event(log, logging.ERROR, "child.memory_guard_off", "no memory guard for this child (%s): an answer "
                      "without end will make the parent recycle it at max_child_rss_mb", exc, tenant=self._tenant,
                      error_class=INTERNAL)  # fmt: skip

    def stop(self) -> None:
        self._stopped.set()
        self._flights.wake()  # after the flag: the guard looks at it once it has cleared the wake-up

    def _run(self) -> None:
        name_os_thread("memory-guard")
        try:
            statm = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            log_event(log, logging.ERROR, "child.memory_guard_off", "no memory guard for this child (cannot read "
                      "its memory: %s)", exc, tenant=self._tenant, error_class=INTERNAL)  # fmt: skip
            return
        try:
            self._watch(statm)
        except Exception as exc:  # a bug, or the system refusing something: say the guard is gone
            log.error("the memory guard stopped: %s: %s", type(exc).__name__, exc, exc_info=exc,
                      extra={"event": "child.memory_guard_off", "tenant": self._tenant, "error_class": INTERNAL})
        finally:
            os.close(statm)

    def _watch(self, statm: int) -> None:
        last = self._read(statm)
        pause, quiet, starts = CHECK_EVERY, 0, self._flights.starts
        while True:
            if pause == CHECK_EVERY:
                seen, starts = starts, self._flights.starts
                quiet = 0 if starts != seen or self._flights.growing() else quiet + 1
                if quiet > QUIET_CHECKS and self._flights.sleep_while_idle(self._stopped):
                    last, quiet = self._read(statm), 0  # woken by a flight's start: the growth counts from here
            if self._stopped.wait(pause):
                return
            rss = self._read(statm)
            pause = CHECK_FAST if rss - last >= FAST_GROWTH else CHECK_EVERY
            last = rss
            if rss >= self.limit:
                self.cut(rss)

    def cut(self, rss: int) -> int | None:
        """Cut the largest answer still arriving, if large enough; its server id."""

        def too_large(received: int) -> CollectionFailure:
            return CollectionFailure(
                PROTOCOL, f"answer too large: {received / _MIB:,.0f} MiB received and not ended, the child's memory "
                f"at {rss / _MIB:,.0f} MiB (max_child_rss_mb {self.max_child_rss_mb}): cut",
            )  # fmt: skip

        return self._flights.cut_largest_answer(LEAST_ANSWER, too_large)
