"""A server whose clock is far from this host's. Its snapshots are dated by its own clock (``collected_at`` is the
server's ``SYSUTCDATETIME()``), so a clock an hour behind makes a live server's history look an hour stale, and one
ahead dates it in the future. One WARNING when a server's clock is found off by more than ``SKEW_WARN_SECONDS``,
again when the offset moves by as much, and one INFO when it is back within half of it."""

from __future__ import annotations

import logging
from typing import Any

from supervisor.logs import log_event

log = logging.getLogger("supervisor.child")

SKEW_WARN_SECONDS = 60.0


class ClockSkewWatch:
    def __init__(self) -> None:
        self._reported: dict[int, float] = {}

    def note(self, server_id: int, name: str, skew_seconds: float, context: dict[str, Any]) -> None:
        """``skew_seconds``: the server's sample time less this host's clock at the middle of the collection."""
        reported = self._reported.get(server_id)
        if abs(skew_seconds) > SKEW_WARN_SECONDS:
            if reported is None or abs(skew_seconds - reported) > SKEW_WARN_SECONDS:
                self._reported[server_id] = skew_seconds
                way = "ahead of" if skew_seconds > 0 else "behind"
                log_event(
                    log, logging.WARNING, "collection.clock_skew", "server %s: its clock is %.0f s %s this host's; "
                    "its snapshots are dated by its clock (collected_at)", name, abs(skew_seconds), way,
                    skew_s=round(skew_seconds, 1), **context,
                )  # fmt: skip
        elif reported is not None and abs(skew_seconds) <= SKEW_WARN_SECONDS / 2:
            del self._reported[server_id]
            log_event(log, logging.INFO, "collection.clock_skew", "server %s: its clock agrees with this host's again",
                      name, skew_s=round(skew_seconds, 1), **context)  # fmt: skip

    def forget(self, server_id: int) -> None:
        self._reported.pop(server_id, None)
