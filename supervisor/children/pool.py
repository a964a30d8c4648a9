"""The collection threads of one child: ``size`` of them count, abandoned ones don't.

Like a ``ThreadPoolExecutor`` but a job that overran its deadline can be written off: its thread stops
counting against ``size`` at once, a fresh thread takes the slot, and the written-off thread exits
when the driver finally returns (``sockets.shut_down`` makes that prompt). So a stalled server never
holds a slot past its deadline. Written-off threads are bounded by ``max_abandoned`` (twice the size): past it no
replacement is started (the pool shrinks instead of growing without limit) until some return.
Threads are daemons: a thread stuck in a driver call never keeps the process from exiting.

Jobs of servers whose last collection failed (``suspect``) come after the others and may hold at most ``size``
less ``reserved`` threads: a tenant with half its servers behind a dead link held every thread with their
timeouts, and its healthy servers missed 70 % of their slots; now they find a thread within milliseconds.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

from supervisor.children.os_thread_name import name_os_thread
from supervisor.errors import INTERNAL

log = logging.getLogger("supervisor.child.pool")

Job = Callable[[], None]
#: At most one ``pool.thread_refused`` line this often.
REFUSAL_LOG_EVERY = 60.0


class CollectionPool:
    def __init__(self, size: int, name: str, max_abandoned: int | None = None) -> None:
        self.size = size
        self.max_abandoned = 2 * size if max_abandoned is None else max_abandoned
        #: Threads that suspect jobs may never take: at least one, a fifth of the pool.
        self.reserved = max(1, size // 5) if size > 1 else 0
        self._name = name
        self._jobs: collections.deque[Job] = collections.deque()
        self._suspect_jobs: collections.deque[Job] = collections.deque()
        self._lock = threading.Lock()
        self._job_ready = threading.Condition(self._lock)
        self._counted = 0  # live threads that count against size
        self._idle = 0
        self._abandoned: set[int] = set()  # thread idents written off, still inside their job
        self._on_suspect: set[int] = set()  # counted threads running a suspect job
        self._spawned = 0
        self._stopped = False
        self._refusal_logged_at = -REFUSAL_LOG_EVERY

    def submit(self, job: Job, *, suspect: bool = False) -> None:
        """``suspect``: the job of a server whose last collection failed."""
        with self._lock:
            (self._suspect_jobs if suspect else self._jobs).append(job)
            if self._idle == 0:
                self._spawn_locked()
            self._job_ready.notify()

    def abandon(self, thread_ident: int) -> bool:
        """Write off the thread running a job that overran; False if that thread is not ours or gone."""
        with self._lock:
            if thread_ident in self._abandoned or self._stopped:
                return False
            self._abandoned.add(thread_ident)
            self._on_suspect.discard(thread_ident)
            self._counted -= 1
            if len(self._abandoned) <= self.max_abandoned:
                self._spawn_locked()
            self._job_ready.notify()
            return True

    def shutdown(self) -> None:
        """Counted threads exit once the queues are empty; written-off ones when their job returns."""
        with self._lock:
            self._stopped = True
            self._job_ready.notify_all()

    def _may_take_suspect_locked(self) -> bool:
        return self._stopped or len(self._on_suspect) < self.size - self.reserved

    def _next_job_locked(self, me: int) -> Job | None:
        """The next job for thread ``me``, waiting for one; None once the pool is shut down and nothing is left."""
        while True:
            if self._jobs:
                return self._jobs.popleft()
            if self._suspect_jobs and self._may_take_suspect_locked():
                self._on_suspect.add(me)
                return self._suspect_jobs.popleft()
            if self._stopped and not self._suspect_jobs:
                return None
            self._idle += 1
            self._job_ready.wait()
            self._idle -= 1

    def _spawn_locked(self) -> None:
        if self._stopped or self._counted >= self.size or len(self._abandoned) > self.max_abandoned:
            return
        try:
            threading.Thread(target=self._work, name=f"{self._name}-{self._spawned + 1}", daemon=True).start()
        except RuntimeError as exc:  # "can't start new thread": a thread or process limit (pids.max, RLIMIT_NPROC)
            self._refused(exc)
            return
        self._counted += 1
        self._spawned += 1

    def _refused(self, exc: RuntimeError) -> None:
        """The queued jobs wait for the threads there are (with none, they reach their deadline unstarted)."""
        now = time.monotonic()
        if now >= self._refusal_logged_at + REFUSAL_LOG_EVERY:
            self._refusal_logged_at = now
            log.warning(
                "cannot start another collection thread (%s): %d threads collect, the rest of the jobs wait for them "
                "(a thread or process limit: pids.max of the cgroup, RLIMIT_NPROC, threads-max)", exc, self._counted,
                extra={"event": "pool.thread_refused", "error_class": INTERNAL},
            )  # fmt: skip

    def _work(self) -> None:
        name_os_thread("collect")
        me = threading.get_ident()
        while True:
            with self._lock:
                job = self._next_job_locked(me)
                if job is None:
                    self._counted -= 1
                    return
            try:
                job()
            except Exception:  # a job reports its own failures; this is a bug, not a server's fault
                log.exception("collection thread failed", extra={"event": "pool.job_failed", "error_class": INTERNAL})
            with self._lock:
                if me in self._on_suspect:
                    self._on_suspect.discard(me)
                    self._job_ready.notify()  # a suspect job held back by the cap may go now
                if me in self._abandoned:
                    self._abandoned.discard(me)
                    if (self._jobs or self._suspect_jobs) and self._idle == 0:
                        self._spawn_locked()
                    return
