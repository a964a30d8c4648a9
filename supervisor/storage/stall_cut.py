"""A PostgreSQL statement that gets no answer at all is cut by the client.

The server's ``statement_timeout`` and ``lock_timeout`` end a slow statement, and ``connect_timeout`` a slow
connect; none of them fires when the server host itself hangs (a frozen VM, a stopped server process, a storage
stall): the kernel still acknowledges every byte, so no TCP timeout or keepalive fires either, and the caller waits
for ever. So each statement and commit on the engine is timed, and one still unanswered ``limit`` seconds after it
was sent has its connection's socket shut down: libpq sees the end of the connection, the call fails as an outage
(retried by the caller), and SQLAlchemy drops that connection. ``limit`` is meant to be well past the server-side
timeouts, which end any statement a live server is merely slow with."""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from sqlalchemy import Engine, event

log = logging.getLogger("supervisor.storage")

#: How much longer than the server-side timeouts a call may go unanswered before it is cut.
GRACE = 5.0


class StallCut:
    def __init__(self, limit: float, what: str) -> None:
        self.limit = limit
        self._what = what
        self._cond = threading.Condition()
        self._waiting: dict[int, tuple[float, int]] = {}  # id(DBAPI connection) -> (deadline, its socket)
        self._thread: threading.Thread | None = None
        self._watching = False  # the thread waits for a deadline (else for a first call: wake it)

    def attach(self, engine: Engine) -> None:
        event.listen(engine, "before_cursor_execute", self._on_execute)
        event.listen(engine, "after_cursor_execute", self._on_answer)
        event.listen(engine, "handle_error", self._on_error)
        event.listen(engine, "commit", self._on_commit)
        event.listen(engine, "rollback", self._on_commit)
        event.listen(engine.pool, "checkin", self._on_checkin)

    def _on_execute(self, conn: Any, *_args: Any) -> None:
        self._sent(conn.connection.dbapi_connection)

    def _on_commit(self, conn: Any) -> None:  # before the commit is sent; answered by the connection's checkin
        self._sent(conn.connection.dbapi_connection)

    def _on_answer(self, conn: Any, *_args: Any) -> None:
        self._answered(conn.connection.dbapi_connection)

    def _on_error(self, context: Any) -> None:
        connection = getattr(context, "connection", None)
        if connection is not None and connection.connection is not None:
            self._answered(connection.connection.dbapi_connection)

    def _on_checkin(self, dbapi_connection: Any, _record: Any) -> None:
        self._answered(dbapi_connection)

    def _sent(self, dbapi_connection: Any) -> None:
        try:
            fd = int(dbapi_connection.fileno())
        except Exception:  # closed, or a driver without a socket to cut
            return
        with self._cond:
            self._waiting[id(dbapi_connection)] = (time.monotonic() + self.limit, fd)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="db-stall-cut", daemon=True)
                self._thread.start()
            elif not self._watching:  # a later call's deadline is never earlier than one already watched
                self._cond.notify()

    def _answered(self, dbapi_connection: Any) -> None:
        with self._cond:
            self._waiting.pop(id(dbapi_connection), None)

    def _watch(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for key, (deadline, fd) in list(self._waiting.items()):
                    if now >= deadline:
                        del self._waiting[key]
                        self._cut(fd)
                next_deadline = min((deadline for deadline, _fd in self._waiting.values()), default=None)
                self._watching = next_deadline is not None
                self._cond.wait(None if next_deadline is None else max(0.0, next_deadline - now))

    def _cut(self, fd: int) -> None:
        """Under the lock: the connection is still in its call (its thread is blocked in it), so ``fd`` is its."""
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            return
        finally:
            sock.detach()
        log.warning("%s gave no answer within %g s: its connection was cut (a hung host or a storage stall)",
                    self._what, self.limit, extra={"event": "storage.stall_cut", "error_class": "storage"})  # fmt: skip
