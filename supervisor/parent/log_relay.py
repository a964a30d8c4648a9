"""Children's log records, re-emitted through the parent's handlers: the parent is the only writer."""

from __future__ import annotations

import logging
from typing import Any

from supervisor.ipc import message_to_record


def relay_child_record(payload: dict[str, Any]) -> None:
    """Write a record received from a child. It keeps its own pid, logger name and ``exc_text``.

    The child already applied its level; the record goes straight to the root handlers, so one
    handler call writes one complete line.
    """
    record = message_to_record(payload)
    for handler in logging.getLogger().handlers:
        if record.levelno >= handler.level:
            handler.handle(record)
