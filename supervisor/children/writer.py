"""The child's only tenant-DB writer: a thread that stores finished collections in batches.

Collection results arrive through ``put()`` (main thread). The writer lets a batch fill for up to
``BATCH_WINDOW`` seconds, takes up to ``BATCH_SIZE`` items and stores them in one transaction. While
the tenant DB is unavailable it keeps them and retries with backoff; a buffer over ``max_buffer``
items spills its oldest half to the spool, and ``stop()`` spills whatever could not be written in
time. Spool files (from this or an earlier run) are replayed whenever the DB accepts writes again.
Retention runs here too, between batches.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from supervisor.backoff import Backoff
from supervisor.children.os_thread_name import name_os_thread
from supervisor.children.outage import Outage
from supervisor.children.persist import current_items, write_items
from supervisor.children.records import WriteItem
from supervisor.children.rejects import is_outage, store_one_by_one
from supervisor.children.retention import purge_batch
from supervisor.children.spool import Spool
from supervisor.errors import INTERNAL, STORAGE
from supervisor.logs import log_event
from supervisor.storage.engine import describe_db_error

log = logging.getLogger("supervisor.child.writer")

BATCH_SIZE = 200
#: How long a batch may wait to fill before it is written. A tenant of 200 servers at 30 s hands over
#: about 7 results a second; a 5 s window makes that one transaction of ~33 instead of 15 of ~2: a
#: transaction's fixed cost, not its rows, is most of the writer's CPU (bench/collection_cost.py, storage
#: by batch size). Results reach the tenant DB at most this much later; a graceful stop writes them at once.
BATCH_WINDOW = 5.0
MAX_BUFFER = 10_000
#: With the spool unwritable too, results are kept in memory up to this many times ``max_buffer``.
HARD_BUFFER_FACTOR = 3
SPOOL_RETRY_EVERY = 30.0
BACKOFF_START = 0.5
BACKOFF_MAX = 10.0
RETENTION_EVERY = 3600.0
UNHEALTHY_FLUSH_TIMEOUT = 0.5
#: How often the writer looks for spool files to replay and for expired rows (an idle writer sleeps until then).
HOUSEKEEPING_EVERY = 10.0
RETENTION_FIRST_AFTER = 30.0
#: After an unforeseen error, the writer starts over this much later.
RESTART_AFTER = 5.0


class Writer:
    #: How much longer than its ``timeout`` ``stop`` may wait for the thread.
    JOIN_GRACE = 0.5

    def __init__(
        self,
        engine: Engine,
        spool: Spool,
        tenant: str,
        *,
        retention_days: int = 0,
        max_buffer: int = MAX_BUFFER,
    ) -> None:
        self._engine = engine
        self._spool = spool
        self._tenant = tenant
        self._retention_days = retention_days
        self._max_buffer = max_buffer
        self._buffer: collections.deque[WriteItem] = collections.deque()
        self._in_hand: list[WriteItem] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._flush_deadline = 0.0
        self._thread = threading.Thread(target=self._run, name=f"writer-{tenant}", daemon=True)
        self._outage = Outage(log, tenant, "writer.db_available", "tenant DB available again after %.0f s")
        self._next_retention = time.monotonic() + RETENTION_FIRST_AFTER
        self._lost_logged_at = -SPOOL_RETRY_EVERY
        self._lost_unlogged = 0
        self._spool_retry_at = 0.0
        self.written = 0
        #: Results waiting in spool files (this run's and earlier ones'), for the heartbeat.
        self.spooled = spool.count_items()
        self.dropped = 0

    # --- main thread ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def put(self, item: WriteItem) -> None:
        with self._cond:
            self._buffer.append(item)
            if len(self._buffer) > self._max_buffer:
                self._spill_oldest_locked(len(self._buffer) // 2)
            if len(self._buffer) in (1, BATCH_SIZE):  # wake an idle writer, or one letting a batch fill
                self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._buffer) + len(self._in_hand)

    def stop(self, timeout: float) -> None:
        """Write what can be written within ``timeout`` seconds, spool the rest, end the thread.

        With the DB already failing there is no point in waiting: spool at once."""
        if self._outage.ongoing:
            timeout = min(timeout, UNHEALTHY_FLUSH_TIMEOUT)
        with self._cond:
            self._stopping = True
            self._flush_deadline = time.monotonic() + timeout
            self._cond.notify_all()
        if self._thread.is_alive():  # never started when the child stopped before its first load
            self._thread.join(timeout + self.JOIN_GRACE)
        with self._cond:
            leftover = [*self._in_hand, *self._buffer]
            self._in_hand = []
            self._buffer.clear()
        if leftover:
            try:
                path = self._spool.write(leftover)
                self.spooled += len(leftover)
            except OSError as exc:
                log_event(
                    log, logging.ERROR, "writer.lost", "could not store or spool %d results, they are lost: %s",
                    len(leftover), exc, tenant=self._tenant, error_class=STORAGE, error=str(exc), lost=len(leftover),
                )  # fmt: skip
                return
            log_event(log, logging.WARNING, "writer.spooled", "spooled %d unwritten results to %s", len(leftover),
                      path, tenant=self._tenant)  # fmt: skip

    # --- writer thread ---------------------------------------------------------------------------------
    def _run(self) -> None:
        name_os_thread("writer")
        while True:
            try:
                return self._serve()
            except Exception as exc:  # an error nobody foresaw: storing must outlive it (heartbeats would not tell)
                log_event(log, logging.ERROR, "writer.failed", "writer failed, going on in %g s: %s: %s", RESTART_AFTER,
                          type(exc).__name__, exc, tenant=self._tenant, error_class=INTERNAL)  # fmt: skip
                log.debug("why the writer failed", exc_info=exc, extra={"tenant": self._tenant})
                time.sleep(RESTART_AFTER)

    def _serve(self) -> None:
        backoff = Backoff(base=BACKOFF_START, cap=BACKOFF_MAX)
        next_housekeeping = time.monotonic()
        while True:
            if not self._outage.ongoing and not self._stopping_now() and time.monotonic() >= next_housekeeping:
                self._replay_spool()
                self._maybe_purge()
                next_housekeeping = time.monotonic() + HOUSEKEEPING_EVERY
            with self._cond:
                if not self._in_hand:
                    if not self._buffer and not self._stopping:
                        self._cond.wait(timeout=max(0.05, next_housekeeping - time.monotonic()))
                    self._gather_locked()
                    for _ in range(min(BATCH_SIZE, len(self._buffer))):
                        self._in_hand.append(self._buffer.popleft())
                batch = list(self._in_hand)
                stopping = self._stopping
            if stopping and (not batch or time.monotonic() >= self._flush_deadline):
                return
            if batch:
                if self._store(batch):
                    with self._cond:
                        self._in_hand = []
                    backoff.reset()
                else:
                    self._sleep(backoff.next_delay())
                continue
            if stopping:
                return

    def _gather_locked(self) -> None:
        """Let a batch fill for up to BATCH_WINDOW seconds: one transaction per item costs several times
        the CPU of a shared one (measured with bench/collection_cost.py)."""
        deadline = time.monotonic() + BATCH_WINDOW
        while self._buffer and len(self._buffer) < BATCH_SIZE and not self._stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(timeout=left)

    def _store(self, batch: list[WriteItem]) -> bool:
        try:
            try:
                with self._engine.begin() as conn:
                    batch = self._of_current_rows(conn, batch)
                    self.written += write_items(conn, batch)
            except Exception as exc:  # data the DB rejects, or a value this code did not foresee: not the others'
                if is_outage(exc):
                    raise
                self.written += store_one_by_one(self._engine, batch, self._tenant)
        except SQLAlchemyError as exc:
            self._note_failure(exc)
            return False
        self._note_success()
        return True

    def _of_current_rows(self, conn: Connection, batch: list[WriteItem]) -> list[WriteItem]:
        kept, gone = current_items(conn, batch)
        for sid, (why, count) in gone.items():
            log_event(log, logging.INFO, "writer.server_gone", "dropping %d results of server id %s: its row was %s "
                      "since they were collected", count, sid, why, tenant=self._tenant, reason=why)  # fmt: skip
        return kept

    def _replay_spool(self) -> None:
        for path in self._spool.files():
            if self._stopping_now():
                return
            items = self._spool.read(path)
            for start in range(0, len(items), BATCH_SIZE):
                if not self._store(items[start : start + BATCH_SIZE]):
                    return
            self._spool.remove(path)
            self.spooled = max(0, self.spooled - len(items))
            log_event(log, logging.INFO, "writer.replayed", "replayed %d spooled results from %s", len(items),
                      path.name, tenant=self._tenant)  # fmt: skip

    def _maybe_purge(self) -> None:
        if self._retention_days <= 0 or time.monotonic() < self._next_retention:
            return
        try:
            while not self._stopping_now() and self._buffer_empty():
                if purge_batch(self._engine, self._retention_days) == 0:
                    self._next_retention = time.monotonic() + RETENTION_EVERY
                    return
        except SQLAlchemyError as exc:
            self._next_retention = time.monotonic() + 60.0
            log_event(log, logging.WARNING, "retention.failed", "retention failed: %s", describe_db_error(exc),
                      tenant=self._tenant, error_class=STORAGE)  # fmt: skip

    def _spill_oldest_locked(self, count: int) -> None:
        """The buffer is full: move its oldest ``count`` items to the spool. If the spool cannot be written
        (a full or read-only disk), keep them in memory and try again later, up to ``HARD_BUFFER_FACTOR``
        times ``max_buffer``; only beyond that are the oldest dropped, and counted."""
        now = time.monotonic()
        if now < self._spool_retry_at:
            self._drop_beyond_hard_limit_locked()
            return
        spilled = [self._buffer.popleft() for _ in range(count)]
        try:
            path = self._spool.write(spilled)
            self.spooled += len(spilled)
        except OSError as exc:
            self._buffer.extendleft(reversed(spilled))
            self._spool_retry_at = now + SPOOL_RETRY_EVERY
            log_event(
                log, logging.ERROR, "writer.spool_failed", "cannot spool (%s): keeping %d results in memory, "
                "at risk if this process stops", exc, len(self._buffer), tenant=self._tenant, error_class=STORAGE,
                error=str(exc), at_risk=len(self._buffer),
            )  # fmt: skip
            self._drop_beyond_hard_limit_locked()
            return
        self._spool_retry_at = 0.0
        log_event(log, logging.WARNING, "writer.spooled", "write buffer full: spooled %d results to %s", count, path,
                  tenant=self._tenant, error_class=STORAGE)  # fmt: skip

    def _drop_beyond_hard_limit_locked(self) -> None:
        excess = len(self._buffer) - HARD_BUFFER_FACTOR * self._max_buffer
        if excess <= 0:
            return
        for _ in range(excess):
            self._buffer.popleft()
        self.dropped += excess
        self._lost_unlogged += excess
        now = time.monotonic()
        if now < self._lost_logged_at + SPOOL_RETRY_EVERY:
            return  # once in a while, not at every result that comes in
        self._lost_logged_at = now
        log_event(
            log, logging.ERROR, "writer.lost", "tenant DB and spool both unavailable: dropped the %d oldest results "
            "(%d in all)", self._lost_unlogged, self.dropped, tenant=self._tenant, error_class=STORAGE,
            lost=self.dropped,
        )  # fmt: skip
        self._lost_unlogged = 0

    def _note_failure(self, exc: SQLAlchemyError) -> None:
        if not self._outage.ongoing:
            error = describe_db_error(exc)
            self._outage.failed("writer.db_unavailable", "tenant DB unavailable, keeping results and retrying: %s",
                                error, error=error)  # fmt: skip

    def _note_success(self) -> None:
        self._outage.recovered()

    def _sleep(self, seconds: float) -> None:
        with self._cond:
            if self._stopping:
                seconds = max(0.0, min(seconds, self._flush_deadline - time.monotonic()))
            self._cond.wait(timeout=seconds)

    def _stopping_now(self) -> bool:
        with self._cond:
            return self._stopping

    def _buffer_empty(self) -> bool:
        with self._cond:
            return not self._buffer
