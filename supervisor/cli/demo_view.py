"""The demo's live table, within 80 columns: per server its status, CPU % and Batch Requests/sec with a
sparkline each (scaled to that series' own range), memory %, connections, how old the values are, and a note
(the deliberately broken servers and the scripted outage are labelled). The outage note stays on screen.
Colour (status, stale values) only on a terminal that takes it (not with NO_COLOR or TERM=dumb).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from supervisor.charts import number, sparkline
from supervisor.cli.output import age
from supervisor.cli.server_listing import shorten
from supervisor.clock import utcnow
from supervisor.storage.tenant_schema import metric_snapshots, servers

SAMPLES = 6
WIDTH = 80
#: style -> (start, end): each ends only its own attribute, so a sparkline inside dimmed values stays dim.
_STYLES = {
    "online": ("32", "39"),
    "offline": ("31", "39"),
    "unknown": ("33", "39"),
    "spark": ("36", "39"),
    "dim": ("2", "22"),
    "bold": ("1", "22"),
}
HEADER = f"{'SERVER':<13} {'STATUS':<7} {'CPU %':<11} {'MEMORY %':<11} {'CONN':>4} {'BATCH/S':<12} {'AGE':>4} NOTE"


def colour_wanted(stream: Any = None) -> bool:
    stream = stream or sys.stdout
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM", "") not in ("", "dumb")


@dataclass
class ServerView:
    tenant: str
    name: str
    status: str
    error_class: str | None
    error: str | None
    samples: list[dict[str, Any]] = field(default_factory=list)  # oldest first

    def series(self, key: str) -> list[float | None]:
        return [None if s[key] is None else float(s[key]) for s in self.samples]

    def last(self, key: str) -> float | None:
        values = [v for v in self.series(key) if v is not None]
        return values[-1] if values else None


def read_views(engines: dict[str, Engine]) -> list[ServerView]:
    views = []
    for tenant, engine in engines.items():
        try:
            with engine.connect() as conn:
                rows = conn.execute(select(servers).order_by(servers.c.name)).mappings().all()
                for row in rows:
                    recent = conn.execute(
                        select(
                            metric_snapshots.c.collected_at,
                            metric_snapshots.c.cpu_percent,
                            metric_snapshots.c.memory_percent,
                            metric_snapshots.c.connection_count,
                            metric_snapshots.c.batch_requests_per_sec,
                        )
                        .where(metric_snapshots.c.server_id == row["id"])
                        .order_by(metric_snapshots.c.collected_at.desc())
                        .limit(SAMPLES)
                    ).mappings()
                    samples = [dict(r) for r in recent][::-1]
                    view = ServerView(tenant, row["name"], row["status"], row["last_error_class"], row["last_error"])
                    view.samples = samples
                    views.append(view)
        except SQLAlchemyError:
            continue  # the tenant DB is being created or is busy: shown at the next redraw
    return views


def render(
    views: list[ServerView],
    *,
    elapsed: float,
    headline: str,
    note: str,
    labels: dict[str, str],
    colour: bool,
    now: dt.datetime | None = None,
) -> str:
    """``labels``: server name -> what the demo did to it (e.g. "broken: down")."""
    paint = _painter(colour)
    now = now or utcnow()
    online = sum(v.status == "online" for v in views)
    lines = [
        paint("bold", f"collector-supervisor demo · {elapsed:.0f}s · {online} of {len(views)} servers online")
        + " · Ctrl-C stops",
        paint("bold", shorten(f"▶ {headline}", WIDTH)),
        shorten(note, WIDTH),
        "",
        HEADER,
    ]
    for view in views:
        lines.append(_row(view, labels.get(view.name, ""), paint, now))
    lines.append("")
    lines.append(
        paint("dim", f"sparklines: the last {SAMPLES} samples, each scaled to its own range; AGE: of the values")
    )
    lines += _errors(views, labels)
    return "\n".join(lines)


def _row(view: ServerView, label: str, paint: Callable[[str, str], str], now: dt.datetime) -> str:
    newest = view.samples[-1]["collected_at"] if view.samples else None
    stale = view.status != "online" and newest is not None
    cpu, rate = view.last("cpu_percent"), view.last("batch_requests_per_sec")
    memory, connections = view.last("memory_percent"), view.last("connection_count")
    cells = [
        _pad(f"{_fit(cpu, '%', 4)} {paint('spark', sparkline(view.series('cpu_percent')))}", 11),
        _pad(f"{_fit(memory, '%', 4)} {paint('spark', sparkline(view.series('memory_percent')))}", 11),
        _fit(connections, "", 4),
        _pad(f"{_fit(rate, '', 5)} {paint('spark', sparkline(view.series('batch_requests_per_sec')))}", 12),
        f"{age(newest, now) if newest else '-':>4}",
    ]
    values = " ".join(cells)
    if stale:
        values = paint("dim", values)
    note = label or (f"[{view.error_class}]" if view.error and view.status == "offline" else "")
    status = paint(view.status, f"{view.status:<7}")
    return f"{view.name[:13]:<13} {status} {values} {shorten(note, WIDTH - 70)}".rstrip()


def _errors(views: list[ServerView], labels: dict[str, str]) -> list[str]:
    """The offline servers' last errors, one line per distinct error."""
    by_error: dict[str, list[str]] = {}
    for view in views:
        if view.status == "offline" and view.error:
            by_error.setdefault(f"[{view.error_class}] {view.error}", []).append(view.name)
    lines = []
    for error, names in by_error.items():
        who = names[0] if len(names) == 1 else f"{len(names)} servers"
        lines.append(shorten(f"{who}: {error}", WIDTH))
    return lines


def _fit(value: float | None, unit: str, width: int) -> str:
    text = "-" if value is None else number(value if unit != "%" else round(value)) + unit
    return f"{text:>{width}}"


def _pad(text: str, width: int) -> str:
    """Pad to ``width`` visible characters (colour codes take none)."""
    visible = len(_strip(text))
    return text + " " * max(0, width - visible)


def _strip(text: str) -> str:
    out, skipping = [], False
    for ch in text:
        if ch == "\x1b":
            skipping = True
        elif skipping and ch == "m":
            skipping = False
        elif not skipping:
            out.append(ch)
    return "".join(out)


def _painter(colour: bool) -> Callable[[str, str], str]:
    if not colour:
        return lambda _style, text: text

    def paint(style: str, text: str) -> str:
        if style not in _STYLES or not text:
            return text
        start, end = _STYLES[style]
        return f"\x1b[{start}m{text}\x1b[{end}m"

    return paint
