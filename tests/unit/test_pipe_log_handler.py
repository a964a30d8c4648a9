"""A child's log records reach the parent through a pipe without ever blocking the thread that logs: a parent
that does not read costs records dropped and counted, never a stuck collection thread."""

from __future__ import annotations

import logging
import multiprocessing
import threading

from supervisor.ipc import PipeLogHandler, message_to_record
from supervisor.log_writer import DROPPED_EVENT


def test_logging_never_waits_for_a_parent_that_does_not_read() -> None:
    reader, writer = multiprocessing.Pipe(duplex=False)
    handler = PipeLogHandler(writer)
    handler.MAX_QUEUED = 50  # type: ignore[misc]
    total = 5000  # ~1.5 MB of records: far more than the pipe (64 KiB) and the queue hold

    def log_all() -> None:
        for number in range(total):
            handler.handle(logging.LogRecord("supervisor.child", logging.INFO, __file__, 0, "line %d", (number,), None))

    logging_thread = threading.Thread(target=log_all, daemon=True)
    logging_thread.start()
    logging_thread.join(timeout=30)
    assert not logging_thread.is_alive(), "a thread that logs waited for the pipe's reader"
    received, dropped = 0, 0
    while True:
        if not reader.poll(2 if received + dropped < total else 0.5):
            break
        _kind, payload = reader.recv()
        record = message_to_record(payload)
        if getattr(record, "event", None) == DROPPED_EVENT:
            dropped += record.dropped  # type: ignore[attr-defined]
        else:
            received += 1
    assert handler.sending
    handler.close()
    assert not handler.sending  # a child's crash report then goes straight to the pipe (``fork._report_crash``)
    assert dropped > 0 and received + dropped == total, (received, dropped)
