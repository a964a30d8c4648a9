"""An outage of something a child depends on, told twice: once when it starts failing, once when it works again."""

from __future__ import annotations

import logging
import time

from supervisor.errors import STORAGE
from supervisor.logs import log_event


class Outage:
    """``failed`` logs the first failure of a run of them as a WARNING; ``recovered`` ends the run with one INFO line
    saying how long it lasted (``outage_s``)."""

    def __init__(self, logger: logging.Logger, tenant: str, recovered_event: str, recovered_message: str) -> None:
        self._log = logger
        self._tenant = tenant
        self._recovered_event = recovered_event
        self._recovered_message = recovered_message  # "%.0f": the outage's seconds
        self._since: float | None = None

    @property
    def ongoing(self) -> bool:
        return self._since is not None

    def failed(self, event: str, message: str, *args: object, **fields: object) -> None:
        if self._since is None:
            self._since = time.monotonic()
            log_event(self._log, logging.WARNING, event, message, *args, tenant=self._tenant, error_class=STORAGE,
                      **fields)  # fmt: skip

    def recovered(self) -> None:
        if self._since is not None:
            outage = time.monotonic() - self._since
            self._since = None
            log_event(self._log, logging.INFO, self._recovered_event, self._recovered_message, outage,
                      tenant=self._tenant, outage_s=round(outage, 1))  # fmt: skip
