"""Tracks system DB outages: one log line when it starts, one when it ends, retries with backoff."""

from __future__ import annotations

import logging
import time

from supervisor.backoff import Backoff
from supervisor.errors import STORAGE
from supervisor.logs import log_event
from supervisor.storage.engine import describe_db_error, masked_url

log = logging.getLogger("supervisor.system_db")


class SystemDbHealth:
    def __init__(self, url: str, max_retry_delay: float) -> None:
        self.url = url
        self.outage_started: float | None = None
        self._backoff = Backoff(base=1.0, cap=max(1.0, max_retry_delay))

    @property
    def available(self) -> bool:
        return self.outage_started is None

    def failed(self, exc: BaseException) -> float:
        """Record a failed use; returns how long to wait before the next attempt."""
        if self.outage_started is None:
            self.outage_started = time.monotonic()
            error = describe_db_error(exc)
            log_event(log, logging.ERROR, "system_db.unavailable", "system DB %s unavailable, children keep running: "
                      "%s", masked_url(self.url), error, error=error, error_class=STORAGE)  # fmt: skip
        return self._backoff.next_delay()

    def succeeded(self) -> None:
        if self.outage_started is not None:
            seconds = time.monotonic() - self.outage_started
            log_event(log, logging.INFO, "system_db.recovered", "system DB %s available again after %.0fs",
                      masked_url(self.url), seconds, duration_ms=int(seconds * 1000))  # fmt: skip
            self.outage_started = None
        self._backoff.reset()
