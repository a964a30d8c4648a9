"""Faults a simulated server can be told to show; changeable at run time through the fleet file."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from sqlserver_sim.values import FleetError, as_bool, as_int, reject_unknown

#: The phases a server can stall in, in the order a connection goes through them.
STALL_PHASES = ("connect", "prelogin", "tls", "login", "query", "mid_result", "before_done")
#: The stalls of the collection request (login and other requests still work).
QUERY_STALLS = ("query", "mid_result", "before_done")


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
    #: None, or the phase (one of STALL_PHASES) in which the server stops answering for good: it
    #: then ignores everything the client sends, ATTENTION included, until the client closes.
    stall: str | None = None
    #: ATTENTION is never acknowledged (nor does it cancel a slow query) on this server.
    ignore_attention: bool = False
    #: The server's clock runs this many seconds ahead of the host's (behind if negative): its sample and ring
    #: buffer times; a change steps the clock (counters and the start time are not affected, as on a real server).
    clock_offset_s: int = 0


def parse_faults(value: Any, where: str) -> Faults:
    """The ``faults`` object of a fleet entry; ``where`` names it in errors."""
    if not isinstance(value, dict):
        raise FleetError(f"{where}: expected an object")
    reject_unknown(value, {f.name for f in fields(Faults)}, where)
    values: dict[str, Any] = {}
    for name, item in value.items():
        path = f"{where}.{name}"
        if name == "restart":
            values[name] = int(item) if isinstance(item, bool) else as_int(item, path)
        elif name == "stall":
            if item is not None and item not in STALL_PHASES:
                choices = ", ".join(repr(phase) for phase in STALL_PHASES)
                raise FleetError(f"{path}: expected null or one of {choices}, not {item!r}")
            values[name] = item
        elif name.endswith("_ms"):
            values[name] = as_int(item, path)
        elif name == "clock_offset_s":
            values[name] = as_int(item, path, minimum=-(10**9))
        else:
            values[name] = as_bool(item, path)
    return Faults(**values)
