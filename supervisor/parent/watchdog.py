"""Watchdog checks on a live child: heartbeat age and memory (psutil)."""

from __future__ import annotations

from dataclasses import dataclass

import psutil

from supervisor.parent.handle import ChildHandle, ChildState, StopReason

MIB = 1024 * 1024


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


def check_memory(handle: ChildHandle, max_rss_mb: int) -> WatchdogVerdict | None:
    """Measures the child's RSS (stored on the handle); a verdict when it is over the limit."""
    if handle.state not in (ChildState.STARTING, ChildState.RUNNING) or handle.pid is None:
        return None
    try:
        rss_mb = psutil.Process(handle.pid).memory_info().rss / MIB
    except (psutil.Error, OSError):  # gone, or not measurable now (out of descriptors): measured next turn
        return None
    handle.rss_mb = round(rss_mb, 1)
    if rss_mb <= max_rss_mb:
        return None
    return WatchdogVerdict(StopReason.RSS_LIMIT, f"RSS {rss_mb:.0f} MiB over max_child_rss_mb {max_rss_mb}")
