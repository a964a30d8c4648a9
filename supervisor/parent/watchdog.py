"""Watchdog checks on a live child: heartbeat age and memory (psutil)."""

from __future__ import annotations

from dataclasses import dataclass

import psutil

from supervisor.parent.handle import ChildHandle, ChildState, StopReason

MIB = 1024 * 1024
#: What each server a child collects may add to ``max_child_rss_mb``: its kept connection (about 105 KiB with
#: Driver 18, 160 KiB with TLS), its state and its share of the writer's buffer. A 5,000-server tenant runs at
#: about 580 MiB: against the bare 512 MiB it was recycled every 20 to 30 s, missing a third of its collections.
SERVER_ALLOWANCE_MIB = 0.25


@dataclass(frozen=True)
class WatchdogVerdict:
    reason: StopReason
    detail: str


def check_heartbeat(handle: ChildHandle, now: float, heartbeat_timeout: float) -> WatchdogVerdict | None:
    if handle.state not in (ChildState.STARTING, ChildState.RUNNING):
        return None
    age = handle.heartbeat_age(now)
    if age <= heartbeat_timeout:
        return None
    return WatchdogVerdict(
        StopReason.NO_HEARTBEAT, f"no heartbeat for {age:.0f}s (heartbeat_timeout {heartbeat_timeout:g}s)"
    )


def memory_limit_mb(handle: ChildHandle, max_rss_mb: int) -> float:
    """``max_child_rss_mb`` plus ``SERVER_ALLOWANCE_MIB`` for each server the child last reported."""
    servers = handle.last_heartbeat.servers_total if handle.last_heartbeat is not None else 0
    return max_rss_mb + SERVER_ALLOWANCE_MIB * max(0, servers)


def check_memory(handle: ChildHandle, max_rss_mb: int) -> WatchdogVerdict | None:
    """Measures the child's RSS (stored on the handle); a verdict when it is over the limit."""
    if handle.state not in (ChildState.STARTING, ChildState.RUNNING) or handle.pid is None:
        return None
    try:
        rss_mb = psutil.Process(handle.pid).memory_info().rss / MIB
    except (psutil.Error, OSError):  # gone, or not measurable now (out of descriptors): measured next turn
        return None
    handle.rss_mb = round(rss_mb, 1)
    limit = memory_limit_mb(handle, max_rss_mb)
    if rss_mb <= limit:
        return None
    allowance = f" + {limit - max_rss_mb:g} MiB for its servers" if limit > max_rss_mb else ""
    return WatchdogVerdict(StopReason.RSS_LIMIT, f"RSS {rss_mb:.0f} MiB over max_child_rss_mb {max_rss_mb}{allowance}")
