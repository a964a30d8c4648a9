"""One collection from one server, within a deadline.

``ServerSession`` belongs to one server and is used by one collection thread at a time; another
thread may only call ``abandon()``. Connect with login timeout = min(login_timeout, time left),
rounded up, set the query timeout to the time left, rounded up (pyodbc takes whole seconds), send the
collection in one round trip, read every result set. The deadline itself is enforced from outside
(``flights``): at the deadline the main thread calls ``abandon()``, which shuts down the sockets to
the server so the driver call returns. After any error or abandonment the connection is closed: it
is never reused in an unknown state.
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

from supervisor.children import sockets, thread_waits
from supervisor.children.access_token import TOKENS, attrs_before
from supervisor.children.connection_string import UnsafeValue, build
from supervisor.children.errors import MISSING_PROCEDURE_NUMBER, CollectionFailure, classify, has_number
from supervisor.children.odbc_driver import MSODBC, OdbcDriver, with_hint
from supervisor.children.result_reader import read_result_sets
from supervisor.children.sample import Sample, parse_sample
from supervisor.children.targets import Target
from supervisor.clock import utcnow
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
QUERY = "query"
FETCH = "fetch"


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
        self._handle_lock = threading.Lock()
        self._abandoned = False
        self._peers: list[str] = []  # the server's addresses, resolved before each connect
        self._thread_id: int | None = None  # the native id of the thread inside collect(), while it is
        self._thread_lock = threading.Lock()  # never held across a driver call (the main thread takes it)
        self._procedure_missing_until = 0.0
        #: What the collection thread is doing: connect, query (before the first result set) or fetch.
        self.phase = CONNECT

    # --- called by the collection thread -------------------------------------------------------------
    def collect(self, deadline: float) -> CollectionOutcome:
        """Collect once; ``deadline`` is a ``time.monotonic()`` value. Never raises."""
        with self._thread_lock:
            self._thread_id = threading.get_native_id()
        try:
            return self._collect_once(deadline)
        finally:
            with self._thread_lock:  # abandon() cuts what this thread waits on only while it is in here
                self._thread_id = None

    def _collect_once(self, deadline: float) -> CollectionOutcome:
        started_at = time.time()
        start = time.monotonic()
        sample: Sample | None = None
        failure: CollectionFailure | None = None
        fell_back = False
        try:
            sample, fell_back = self._collect(deadline)
        except Exception as exc:  # every failure becomes a classified outcome
            failure = classify(exc, phase="connect" if self._conn is None else "query")
            if self._abandoned and failure.error_class not in (TIMEOUT,):
                failure = CollectionFailure(TIMEOUT, "collection abandoned at its deadline", phase=failure.phase)
            elif failure.error_class == CONNECT and failure.phase == "connect":  # with the hint, as the CLI shows it
                hinted = with_hint(failure.message, self.target.endpoint.encrypt)
                failure = CollectionFailure(CONNECT, hinted, phase=failure.phase, native=failure.native)
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
            if not reused or self._abandoned or classify(exc, phase="query").error_class not in (CONNECT, PROTOCOL):
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
            if mode != AUTO or not has_number(exc, MISSING_PROCEDURE_NUMBER) or self._abandoned:
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
        self.phase = CONNECT
        endpoint = self.target.endpoint
        self._peers = sockets.resolve(endpoint.host, endpoint.port)
        # auth entra-token: the access token goes to the driver before it connects (access_token.py).
        extra = {"attrs_before": attrs_before(TOKENS.token(endpoint, deadline))} if endpoint.uses_token else {}
        left = deadline - time.monotonic()
        if left <= 0:
            raise CollectionFailure(TIMEOUT, "no time left for the login", phase=CONNECT)
        try:
            conn = pyodbc.connect(
                connection_string, timeout=driver_timeout(self._login_timeout, left), autocommit=True, **extra
            )
        except pyodbc.Error:
            if endpoint.token_command:
                TOKENS.forget(endpoint.token_command)  # a rejected token is fetched anew next time
            raise
        with self._handle_lock:
            self._conn = conn

    def _run(self, statement: str, deadline: float) -> Sample:
        left = deadline - time.monotonic()
        if left < MIN_QUERY_SECONDS:
            raise CollectionFailure(TIMEOUT, "no time left for the query after the login")
        self._conn.timeout = driver_timeout(None, left)
        cursor = self._conn.cursor()
        try:
            self.phase = QUERY
            try:
                cursor.execute(statement)
            except UnicodeDecodeError:  # the first rows (or a message) come with the call
                raise CollectionFailure(PROTOCOL, "server sent invalid UTF-16 in its answer") from None
            self.phase = FETCH
            if self._abandoned or cursor.description is None:
                raise CollectionFailure(TIMEOUT, "collection abandoned at its deadline")
            try:
                raw = read_result_sets(cursor, self._is_abandoned)
            except CollectionFailure:
                # The rest of the answer is not read: cut the connection, or closing the cursor would drain it
                # (a server streaming rows for ever would hold the call until the deadline).
                self._cut()
                raise
            if self._abandoned:
                raise CollectionFailure(TIMEOUT, "collection abandoned at its deadline")
        finally:
            with contextlib.suppress(pyodbc.Error):
                cursor.close()
        return parse_sample(raw, now=utcnow())

    def _is_abandoned(self) -> bool:
        return self._abandoned

    def _cut(self) -> None:
        sockets.shut_down(sockets.sockets_to(self._peers, self.target.endpoint.port))

    # --- any thread -------------------------------------------------------------------------------------
    def abandon(self) -> str:
        """Give up the running collection (its deadline passed): shut down the sockets to the server so
        the driver call returns; returns the phase it was in, for the timeout's message. The session is
        not used again but to be closed."""
        self._abandoned = True
        peers = sockets.sockets_to(self._peers, self.target.endpoint.port)
        sockets.shut_down(peers)
        peers += self._cut_what_the_thread_waits_on()
        if self.phase != CONNECT:
            return "query, before the first result set" if self.phase == QUERY else "fetch of the result sets"
        if not peers and self._resolving():
            return "name resolution (DNS)"
        if not peers or any(peer.state == sockets.SYN_SENT for peer in peers):
            return "TCP connect"
        login = "login (PRELOGIN or LOGIN7)"
        return f"TLS handshake or {login}" if self._tls_possible() else login

    def _cut_what_the_thread_waits_on(self) -> list[sockets.PeerSocket]:
        """The TCP sockets the collection thread is blocked on, shut down: a connection the driver opened to
        another address than the server's (a TDS routing answer, an Azure gateway's redirect) included."""
        with self._thread_lock:
            if self._thread_id is None:
                return []
            fds = thread_waits.blocked_fds(self._thread_id)
            found = sockets.tcp_sockets(fds)
            if found and thread_waits.still_blocked(self._thread_id, fds):
                sockets.shut_down(found)
                return found
            return []

    def bytes_received(self) -> int:
        """What the collection's connections to the server received so far (any thread may ask)."""
        found = {peer.fd: peer for peer in sockets.sockets_to(self._peers, self.target.endpoint.port)}
        with self._thread_lock:
            if self._thread_id is not None:
                found.update((peer.fd, peer) for peer in sockets.tcp_sockets(thread_waits.blocked_fds(self._thread_id)))
        return sockets.bytes_received(found.values())

    def _resolving(self) -> bool:
        """The thread waits on a UDP socket: the resolver's, on a DNS server that does not answer (the wait ends at
        the resolver's own timeout: shutting its socket down does not end it sooner)."""
        with self._thread_lock:
            thread_id = self._thread_id
        return thread_id is not None and bool(sockets.dns_sockets(thread_waits.blocked_fds(thread_id)))

    def _tls_possible(self) -> bool:
        """Driver 18 with encrypt = no still encrypts the login when the server asks for it; FreeTDS does not."""
        return self.target.endpoint.encrypt != "no" or self._driver.kind == MSODBC

    def close(self) -> None:
        with self._handle_lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                with contextlib.suppress(pyodbc.Error):
                    conn.close()


def driver_timeout(own_limit: float | None, left: float) -> int:
    """The whole seconds to give the driver: its own limit (login_timeout) where that comes first, else
    past the collection's deadline, so that the collector's deadline (``flights``) ends the call at the
    exact time left and not at a rounded second, and classifies it as the collector's timeout."""
    if own_limit is not None and own_limit < left:
        return max(1, math.ceil(own_limit))
    return math.ceil(left) + 1
