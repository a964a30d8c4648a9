"""``server show`` for people: a header, four area charts, the top waits and the status events, within 80
columns. Each chart is scaled to what it shows (its lowest and highest bucket average label the axis); the
line above it gives min / avg / max over the raw snapshots of the window."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from supervisor import charts, history
from supervisor.cli.output import age
from supervisor.cli.server_listing import shorten
from supervisor.rules import printable

if TYPE_CHECKING:
    from supervisor.cli.show_cmd import ServerHistory

ROWS = 4
LABEL = 6
WIDTH = 78
LATEST = {
    "cpu_percent": ("CPU", " %"),
    "memory_percent": ("memory", " %"),
    "connection_count": ("connections", ""),
    "batch_requests_per_sec": ("batch requests", "/s"),
}
UNITS = {"cpu_percent": "%", "memory_percent": "%", "connection_count": "", "batch_requests_per_sec": "/s"}


def render(data: ServerHistory) -> str:
    lines = _header(data)
    snapshots = data.summary["snapshots"]
    window = data.window
    if not snapshots:
        lines += ["", f"no snapshots in the last {data.since} ({_span(window)})"]
    else:
        per_column = age(window.end - dt.timedelta(seconds=window.bucket_seconds), window.end)
        lines += [
            "",
            f"last {data.since} ({_span(window)}): {snapshots:,} snapshots, a column = {per_column} (its average)",
        ]
        for name, label in history.METRICS.items():
            lines += ["", *_chart(data, name, label)]
    lines += ["", *_waits(data), "", *_events(data)]
    return "\n".join(map(printable, lines))  # the stored rows are another program's text too


def _header(data: ServerHistory) -> list[str]:
    info, now = data.info, data.now
    interval = f"every {info.interval_seconds} s" if isinstance(info.interval_seconds, int) else "default interval"
    collection = f"collection {'enabled' if info.enabled is True else 'disabled'}, {interval}"
    since = f" for {age(info.status_changed_at, now)}" if info.status_changed_at else ""
    first = f"{data.tenant} / {info.name}  {info.host}:{info.port}  {info.status}{since}"
    lines = [f"{first}  ({collection})"] if len(first) + len(collection) + 4 <= 80 else [first, f"({collection})"]
    if info.removed_at is not None:
        lines.append(f"removed {info.removed_at:%Y-%m-%d %H:%M} UTC: no longer collected, its history is kept")
    success = f"last success {age(info.last_success_at, now)} ago" if info.last_success_at else "never collected"
    lines.append(success)
    if info.last_error:
        error = f"last error [{info.last_error_class or '?'}] {info.last_error}"
        lines += _wrapped(error + (f" ({data.hint})" if data.hint else ""), "  ")
    latest = data.latest
    if latest is None:
        lines.append("no snapshot stored yet")
        return lines
    values = " · ".join(
        f"{label} {charts.number(_float(latest[name]))}{unit}" for name, (label, unit) in LATEST.items()
    )
    mark = ""
    if info.status == "offline":
        mark = "  STALE: the server is offline"
    elif (data.latest_age_s or 0) > 3 * _interval(info):
        mark = "  STALE: nothing newer was stored"
    lines.append(f"latest {latest['collected_at']:%Y-%m-%d %H:%M:%S} UTC, {age(latest['collected_at'], now)} ago{mark}")
    lines += _wrapped(values, "  ")
    return lines


def _interval(info: Any) -> float:
    return float(info.interval_seconds) if isinstance(info.interval_seconds, int) else 60.0


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _chart(data: ServerHistory, name: str, label: str) -> list[str]:
    window = data.window
    values = history.columns(data.points, name, window.buckets)
    stats = data.summary["metrics"][name]
    if stats is None:
        return [f"{label}: no values in this window"]
    unit = UNITS[name]
    numbers = " · ".join(f"{key} {charts.number(stats[key])}{unit}" for key in ("min", "avg", "max"))
    span = charts.value_range(values)
    assert span is not None
    low, high = span
    rows = charts.area_chart(values, ROWS)
    out = [f"{label:<{WIDTH - len(numbers)}}{numbers}"]
    for i, row in enumerate(rows):
        text = charts.number(high) if i == 0 else charts.number(low) if i == ROWS - 1 else ""
        if low == high:
            text = charts.number(low) if i == ROWS // 2 else ""
        tick = "┤" if text else "│"
        out.append(f"{text:>{LABEL}} {tick}{row}".rstrip())
    out.append(" " * LABEL + " └" + "─" * window.buckets)
    out.append(" " * (LABEL + 2) + _time_axis(window))
    return out


def _time_axis(window: history.Window) -> str:
    fmt = "%H:%M" if window.seconds < 86400 else "%m-%d %H:%M" if window.seconds <= 14 * 86400 else "%Y-%m-%d"
    labels = [
        moment.strftime(fmt) for moment in (window.start, window.start + (window.end - window.start) / 2, window.end)
    ]
    width = window.buckets
    middle = labels[1].center(width - len(labels[0]) - len(labels[2]))
    return (labels[0] + middle + labels[2])[: width + 4]


def _span(window: history.Window) -> str:
    fmt = "%H:%M" if window.seconds < 86400 else "%Y-%m-%d %H:%M"
    return f"{window.start:{fmt}} to {window.end:{fmt}} UTC"


def _waits(data: ServerHistory) -> list[str]:
    if not data.top_waits:
        return [f"top waits (last {data.since}): none stored (benign wait types are never stored)"]
    sampled = data.waits_sampled
    how = "" if sampled["exact"] else f", estimated from {sampled['sampled']:,} of {sampled['snapshots']:,} snapshots"
    lines = [f"top waits by time (last {data.since}{how})"]
    header = f"  {'WAIT TYPE':<28} {'WAIT S':>11} {'SHARE':>6} {'TASKS':>11} {'AVG MS':>8} {'SIGNAL':>7}"
    lines.append(header)
    for wait in data.top_waits:
        total, tasks = wait["wait_time_ms"], wait["waiting_tasks_count"]
        average = f"{total / tasks:,.1f}" if tasks else "-"
        signal = f"{wait['signal_wait_time_ms'] / total:.0%}" if total else "-"
        lines.append(
            f"  {shorten(wait['wait_type'], 28):<28} {total / 1000:>11,.1f} {wait['share']:>6.0%} "
            f"{tasks:>11,} {average:>8} {signal:>7}"
        )
    return lines


def _events(data: ServerHistory) -> list[str]:
    if not data.event_count:
        return [f"status events (last {data.since}): none ({data.info.status} throughout)"]
    shown = len(data.events)
    more = f", the newest {shown} shown" if shown < data.event_count else ""
    lines = [f"status events (last {data.since}): {data.event_count}{more}"]
    for event in data.events:
        start = f"  {event['at']:%Y-%m-%d %H:%M:%S}  {event['status']:<8}"
        error = shorten(event["error"] or "", WIDTH - len(start) - 1)
        lines.append(f"{start} {error}".rstrip())
    return lines


def _wrapped(text: str, indent: str) -> list[str]:
    """Whole text over as many lines as it takes, cut between words."""
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > WIDTH:
            lines.append(line)
            line = indent + word
        else:
            line = f"{line} {word}" if line else word
    return [*lines, line] if line else lines
