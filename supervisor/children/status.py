"""Online/offline: what one collection's outcome does to a server's status row.

Success → online, ``last_success_at``, no error, 0 consecutive failures. A connect or login failure,
or a deadline reached before the login finished, → offline at once and one more consecutive failure.
A server that answered but whose collection failed (permission, timeout, protocol) stays online and
records the error.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from supervisor.children.errors import UNREACHABLE, CollectionFailure
from supervisor.errors import CONNECT, TIMEOUT

ONLINE = "online"
OFFLINE = "offline"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class ServerState:
    status: str = UNKNOWN
    consecutive_failures: int = 0


@dataclass(frozen=True)
class StatusUpdate:
    """Absolute values for the server row; applied only if no newer check is stored."""

    server_id: int
    checked_at: dt.datetime
    status: str
    status_changed: bool
    success: bool
    consecutive_failures: int
    error: str | None
    error_class: str | None


def apply_outcome(
    server_id: int, state: ServerState, failure: CollectionFailure | None, now: dt.datetime
) -> tuple[ServerState, StatusUpdate]:
    if failure is None:
        status, failures = ONLINE, 0
    elif failure.error_class in UNREACHABLE or (failure.error_class == TIMEOUT and failure.phase == CONNECT):
        status, failures = OFFLINE, state.consecutive_failures + 1
    else:
        status, failures = ONLINE, state.consecutive_failures + 1
    update = StatusUpdate(
        server_id=server_id,
        checked_at=now,
        status=status,
        status_changed=status != state.status,
        success=failure is None,
        consecutive_failures=failures,
        error=None if failure is None else failure.message,
        error_class=None if failure is None else failure.error_class,
    )
    return ServerState(status, failures), update
