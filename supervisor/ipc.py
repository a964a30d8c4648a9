"""What travels from a tenant child to the parent over its one pipe.

The parent is the only writer of the log stream: a child's log records and heartbeats are sent as
messages over a ``multiprocessing`` pipe, and the parent's main loop waits on those pipes together
with the children's sentinels (no listener thread, so the parent can ``fork``).

Messages are ``(kind, payload)`` tuples:

- ``("log", dict)``: a ``LogRecord``'s attributes, ``args`` merged into ``msg`` and the traceback
  already rendered into ``exc_text`` (so it stays a separate ``exc_info`` field in the JSON line).
- ``("heartbeat", Heartbeat)``: sent by the child's main loop every few seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from supervisor.log_writer import dropped_record
from supervisor.logs import redact

LOG = "log"
HEARTBEAT = "heartbeat"

# Child exit codes the parent tells apart.
CHILD_EXIT_OK = 0
CHILD_EXIT_CRASH = 1
#: The tenant's configuration is unusable (bad DB URL, undecryptable secret): retried slowly.
CHILD_EXIT_CONFIG = 3
#: The parent went away; the child stopped on its own.
CHILD_EXIT_ORPHANED = 4
#: The tenant DB has a schema newer than this collector's: the parent releases the tenant (a newer instance may run it)
#: and does not start it here again for a while.
CHILD_EXIT_NEWER_SCHEMA = 5


#: Upper bounds (seconds) of the collection-duration histogram; collection_timeout (5 s) is the last that matters.
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class ServerReport:
    """One server in a heartbeat, only with ``[metrics] per_server = yes``."""

    name: str
    up: bool
    last_duration_ms: int | None


@dataclass(frozen=True)
class Heartbeat:
    sent_at: float  # time.time() in the child
    servers_total: int = 0
    servers_online: int = 0
    servers_offline: int = 0
    collections_ok: int = 0
    collections_failed: int = 0
    newest_snapshot_at: str | None = None  # ISO 8601 UTC
    pending_writes: int = 0
    servers_disabled: int = 0
    #: Collections since the child started, by result (``ok`` or the error class).
    results: tuple[tuple[str, int], ...] = ()
    #: Non-cumulative counts per ``DURATION_BUCKETS`` bound plus one for +Inf, and the sum in seconds.
    duration_counts: tuple[int, ...] = ()
    duration_sum: float = 0.0
    spooled_results: int = 0
    servers: tuple[ServerReport, ...] | None = None


@dataclass(frozen=True)
class ChildSpec:
    """Everything a tenant child needs, as plain picklable values (never engines or connections)."""

    tenant_id: int
    slug: str
    db_url: str
    instance_id: str
    settings: Any  # supervisor.config.Settings (frozen dataclass of plain values)


def record_to_message(record: logging.LogRecord) -> tuple[str, dict[str, Any]]:
    """The record as a message, with every secret this process knows masked: only the child has decrypted
    the passwords, so the parent could not mask them (a traceback may quote one)."""
    data = dict(record.__dict__)
    data["msg"] = record.getMessage()
    data["args"] = None
    if record.exc_info:
        data["exc_text"] = record.exc_text or logging.Formatter().formatException(record.exc_info)
    data["exc_info"] = None
    data.pop("message", None)
    for key, value in data.items():
        if key not in _PLAIN_ATTRS:
            data[key] = _masked(value)
    return LOG, data


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _masked(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_masked(item) for item in value)
    return value


#: LogRecord attributes that never hold user text (the rest, ``msg``, ``exc_text`` and every ``extra=`` field,
#: are masked).
_PLAIN_ATTRS = frozenset({
    "name", "levelname", "pathname", "filename", "module", "funcName", "processName", "threadName", "taskName",
})  # fmt: skip


def message_to_record(payload: dict[str, Any]) -> logging.LogRecord:
    return logging.makeLogRecord(payload)


class PipeLogHandler(logging.Handler):
    """Child side: sends every record, and the heartbeats, to the parent, from a thread of its own.

    The pipe holds 64 KiB: a parent that does not read (stopped with SIGSTOP, a paused VM, a loop busy elsewhere)
    would block a thread in ``send`` and, behind the lock, every thread that logs, the main loop's heartbeat
    included: all collection stopped. So the callers only queue (never waiting), at most ``MAX_QUEUED`` messages;
    beyond that a record is dropped and counted, and one ``log.dropped`` record says how many once the parent
    reads again. At exit, ``flush`` gives the queue ``FLUSH_TIMEOUT`` seconds."""

    MAX_QUEUED = 10_000
    FLUSH_TIMEOUT = 2.0

    def __init__(self, conn: Connection) -> None:
        super().__init__()
        self._conn = conn
        self._queue: deque[tuple[str, Any]] = deque()
        self._ready = threading.Condition()
        self._dropped = 0
        self._sending = False
        self._closed = False
        self._thread = threading.Thread(target=self._send_queued, name="log-to-parent", daemon=True)
        self._thread.start()

    @property
    def sending(self) -> bool:
        """Whether a record handed over now still reaches the parent (not closed, the parent not gone)."""
        with self._ready:
            return not self._closed

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._put(record_to_message(record), droppable=True)
        except Exception:
            self.handleError(record)

    def send(self, message: tuple[str, Any]) -> None:
        """A non-log message (heartbeat), in order with the records; not queued past ``MAX_QUEUED``."""
        self._put(message, droppable=False)

    def _put(self, message: tuple[str, Any], droppable: bool) -> None:
        with self._ready:
            if self._closed:
                return
            if len(self._queue) >= self.MAX_QUEUED:
                self._dropped += droppable
                self._ready.notify()
                return
            self._queue.append(message)
            self._ready.notify()

    def _send_queued(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._dropped and not self._closed:
                    self._ready.wait()
                if not self._queue and not self._dropped:
                    return
                message = self._queue.popleft() if self._queue else None
                dropped, self._dropped = self._dropped, 0
                self._sending = True
            try:
                if dropped:
                    self._conn.send(record_to_message(dropped_record(dropped)))
                if message is not None:
                    self._conn.send(message)
            except (BrokenPipeError, EOFError, OSError):
                with self._ready:  # the parent is gone; the child notices through its own checks and stops
                    self._closed = True
                    self._queue.clear()
                    self._ready.notify_all()
                return
            finally:
                with self._ready:
                    self._sending = False
                    self._ready.notify_all()

    def flush(self) -> None:
        deadline = time.monotonic() + self.FLUSH_TIMEOUT
        with self._ready:
            while (self._queue or self._dropped or self._sending) and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._ready.wait(left)

    def close(self) -> None:
        self.flush()
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        super().close()
