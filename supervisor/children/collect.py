"""One collection from one server, with a hard deadline.

``ServerSession`` belongs to one server and is used by one collection thread at a time; another
thread may only call ``cancel()``. Connect with login timeout = min(login_timeout, time left), set
the query timeout to what is left, send the collection in one round trip, read every result set.
After any error, timeout or cancel the connection is closed: it is never reused in an unknown state.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import pyodbc

from supervisor.children.connection_string import UnsafeValue, build
from supervisor.children.errors import MISSING_PROCEDURE_NUMBER, CollectionFailure, classify, has_number
from supervisor.children.odbc_driver import OdbcDriver
from supervisor.children.sample import RawSets, Sample, parse_sample
from supervisor.children.targets import Target
from supervisor.errors import CONFIG, CONNECT, PROTOCOL, TIMEOUT
from supervisor.procedures.tsql import exec_statement, snapshot_batch

# Connections are kept or closed by us (keep_connections), never parked by the driver manager's pool.
pyodbc.pooling = False

log = logging.getLogger("supervisor.child.collect")

AUTO = "auto"
PROCEDURE = "procedure"
ADHOC = "adhoc"
#: In ``auto`` mode, how long a server without the procedure is collected ad hoc before asking again.
PROCEDURE_RECHECK_SECONDS = 3600.0
#: Below this much time left there is no point in sending the query.
MIN_QUERY_SECONDS = 0.05


@dataclass(frozen=True)
class CollectionOutcome:
    """What a collection thread hands back: a sample or a classified failure, never both."""

    target: Target
    started_at: float  # time.time()
    duration_ms: int
    sample: Sample | None
    failure: CollectionFailure | None
    fell_back_to_adhoc: bool = False  # first time this server lacked the procedure (auto mode)


class ServerSession:
    def __init__(self, target: Target, driver: OdbcDriver, login_timeout: float, keep_connection: bool) -> None:
        self.target = target
        self._driver = driver
        self._login_timeout = login_timeout
        self._keep_connection = keep_connection
        self._conn: Any = None
        self._cursor: Any = None
        self._handle_lock = threading.Lock()  # cancel() and close never overlap (Driver 18 segfault)
        self._cancelled = False
        self._procedure_missing_until = 0.0

    # --- called by the collection thread -------------------------------------------------------------
    def collect(self, deadline: float) -> CollectionOutcome:
        """Collect once; ``deadline`` is a ``time.monotonic()`` value. Never raises."""
        started_at = time.time()
        start = time.monotonic()
        self._cancelled = False
        sample: Sample | None = None
        failure: CollectionFailure | None = None
        fell_back = False
        try:
            sample, fell_back = self._collect(deadline)
        except Exception as exc:  # every failure becomes a classified outcome
            failure = classify(exc, phase="connect" if self._conn is None else "query")
            if self._cancelled and failure.error_class not in (TIMEOUT,):
                failure = CollectionFailure(TIMEOUT, "collection cancelled at its deadline", phase=failure.phase)
            self.close()
        else:
            if not self._keep_connection:
                self.close()
        duration_ms = round((time.monotonic() - start) * 1000)
        return CollectionOutcome(self.target, started_at, duration_ms, sample, failure, fell_back)

    def _collect(self, deadline: float) -> tuple[Sample, bool]:
        reused = self._conn is not None
        if not reused:
            self._connect(deadline)
        try:
            return self._query(deadline)
        except pyodbc.Error as exc:
            if not reused or self._cancelled or classify(exc, phase="query").error_class not in (CONNECT, PROTOCOL):
                raise
        # The kept connection went stale (server restarted, idle connection cut): one fresh try in the time left.
        self.close()
        self._connect(deadline)
        return self._query(deadline)

    def _query(self, deadline: float) -> tuple[Sample, bool]:
        mode = self.target.collection_mode
        use_procedure = mode == PROCEDURE or (mode == AUTO and time.monotonic() >= self._procedure_missing_until)
        if not use_procedure:
            return self._run(snapshot_batch(), deadline), False
        try:
            return self._run(exec_statement(), deadline), False
        except pyodbc.Error as exc:
            if mode != AUTO or not has_number(exc, MISSING_PROCEDURE_NUMBER) or self._cancelled:
                if has_number(exc, MISSING_PROCEDURE_NUMBER):
                    raise CollectionFailure(
                        PROTOCOL,
                        "collection procedure not installed (error 2812): run 'collector-supervisor procedures deploy'"
                        " or set collection_mode to auto or adhoc",
                        native=MISSING_PROCEDURE_NUMBER,
                    ) from None
                raise
        self._procedure_missing_until = time.monotonic() + PROCEDURE_RECHECK_SECONDS
        return self._run(snapshot_batch(), deadline), True

    def _connect(self, deadline: float) -> None:
        try:
            connection_string = build(self._driver, self.target.endpoint)
        except UnsafeValue as exc:
            raise CollectionFailure(CONFIG, f"server settings cannot be used with this driver: {exc}") from None
        left = deadline - time.monotonic()
        login_timeout = max(1, math.floor(min(self._login_timeout, left)))
        conn = pyodbc.connect(connection_string, timeout=login_timeout, autocommit=True)
        with self._handle_lock:
            self._conn = conn

    def _run(self, statement: str, deadline: float) -> Sample:
        left = deadline - time.monotonic()
        if left < MIN_QUERY_SECONDS:
            raise CollectionFailure(TIMEOUT, "no time left for the query after the login")
        self._conn.timeout = max(1, math.floor(left))
        cursor = self._conn.cursor()
        with self._handle_lock:
            self._cursor = cursor
        try:
            cursor.execute(statement)
            if self._cancelled or cursor.description is None:
                # Driver 18 lets execute() return silently when cancel() interrupts it.
                raise CollectionFailure(TIMEOUT, "collection cancelled at its deadline")
            raw = read_result_sets(cursor)
            if self._cancelled:
                raise CollectionFailure(TIMEOUT, "collection cancelled at its deadline")
        finally:
            with self._handle_lock:
                self._cursor = None
            with contextlib.suppress(pyodbc.Error):
                cursor.close()
        return parse_sample(raw)

    # --- any thread -------------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Interrupt a running query (from the scheduler's watchdog). Safe to call at any time."""
        with self._handle_lock:
            self._cancelled = True
            if self._cursor is not None:
                with contextlib.suppress(pyodbc.Error):
                    self._cursor.cancel()

    def close(self) -> None:
        with self._handle_lock:
            conn, self._conn, self._cursor = self._conn, None, None
            if conn is not None:
                with contextlib.suppress(pyodbc.Error):
                    conn.close()


def read_result_sets(cursor: Any) -> RawSets:
    """Every result set with columns; sets without a description (the RETURNSTATUS tail) skipped."""
    sets = []
    while True:
        if cursor.description is not None:
            names = [column[0] for column in cursor.description]
            sets.append((names, cursor.fetchall()))
        if not cursor.nextset():
            break
    return sets
