"""Faults a simulated server can be told to show; changeable at run time through the fleet file."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Faults:
    #: The listener is closed (connections refused) and open sessions are dropped.
    down: bool = False
    #: TCP connections are accepted but nothing is ever answered.
    blackhole: bool = False
    #: Delay before the reply to LOGIN7.
    slow_login_ms: int = 0
    #: Delay before answering the collection procedure / batch (an ATTENTION cancels it).
    slow_query_ms: int = 0
    #: Every login is refused with error 18456.
    login_failed: bool = False
    #: The collection procedure / batch fails with errors 300 and 297.
    permission_denied: bool = False
    #: Part of the collection response is sent, then the socket is closed.
    disconnect_mid_result: bool = False
    #: Restart generation: whenever it changes the instance restarts (new start time, counters reset).
    restart: int = 0
