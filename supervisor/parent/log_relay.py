"""A child's pipe, read by the parent's loop: its log records re-emitted through the parent's handlers (the
parent is the only writer of the log) and its heartbeats handed to its handle."""

from __future__ import annotations

import logging
import time
from typing import Any

from supervisor.ipc import HEARTBEAT, LOG, message_to_record
from supervisor.parent.handle import ChildHandle


def relay_child_record(payload: dict[str, Any]) -> None:
    """Write a record received from a child. It keeps its own pid, logger name and ``exc_text``.

    The child already applied its level; the record goes straight to the root handlers, so one
    handler call writes one complete line.
    """
    record = message_to_record(payload)
    for handler in logging.getLogger().handlers:
        if record.levelno >= handler.level:
            handler.handle(record)


def read_messages(handle: ChildHandle, limit: int | None) -> None:
    """Up to ``limit`` messages (all with None) that wait in the child's pipe, without blocking."""
    conn = handle.conn
    count = 0
    while conn is not None and (limit is None or count < limit):
        try:
            if not conn.poll():
                return
            kind, payload = conn.recv()
        except (EOFError, OSError):
            conn.close()
            handle.conn = None  # the child is gone or going: its sentinel reports the exit
            return
        count += 1
        if kind == LOG:
            relay_child_record(payload)
        elif kind == HEARTBEAT:
            handle.on_heartbeat(payload, time.monotonic(), time.time())
