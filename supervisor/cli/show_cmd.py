"""``server show TENANT NAME [--since 1h] [--json] [--png FILE]``: a server's stored history.

Reads the tenant DB only (no collection): the server's row, the newest snapshot with its age, the metric
series over the window downsampled by the database (``supervisor.history``), the top waits and the status
events of the window. Text for people (``show_text``), JSON for scripts, and a PNG with matplotlib
(``show_png``, the ``plot`` extra). A removed server can be shown too: its history is kept.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import re
from dataclasses import dataclass
from typing import Any

from supervisor import history, history_waits
from supervisor.cli.context import CliContext
from supervisor.cli.output import print_json
from supervisor.cli.server_listing import hint_for
from supervisor.clock import utcnow
from supervisor.errors import UsageError
from supervisor.servers import ServerInfo, get_server

TEXT_COLUMNS = 64  # one chart column per bucket; with the labels a chart is 72 characters wide
JSON_POINTS = 360
PNG_POINTS = 480
MAX_SINCE = dt.timedelta(days=3660)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_since(text: str) -> dt.timedelta:
    """``90s``, ``30m``, ``1h``, ``1h30m``, ``7d``, ``2w``: a window ending now."""
    compact = text.strip().lower()
    parts = _DURATION.findall(compact)
    units = [_UNITS[u] for _, u in parts]
    in_order = all(a > b for a, b in itertools.pairwise(units))  # each unit once, largest first: 1h30m, not 1h1h
    if not parts or not in_order or "".join(f"{n}{u}" for n, u in parts) != compact:
        raise UsageError(f"invalid --since {text[:40]!r}: a duration such as 90s, 30m, 1h, 1h30m, 7d or 2w")
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not 1 <= seconds <= MAX_SINCE.total_seconds():
        raise UsageError(f"invalid --since {text[:40]!r}: between 1s and {MAX_SINCE.days}d")
    return dt.timedelta(seconds=seconds)


@dataclass
class ServerHistory:
    tenant: str
    info: ServerInfo
    hint: str | None
    now: dt.datetime
    window: history.Window
    since: str
    latest: dict[str, Any] | None
    summary: dict[str, Any]
    points: list[history.Point]
    top_waits: list[dict[str, Any]]
    waits_sampled: dict[str, Any]  # exact, or read from an even sample of the window's snapshots
    events: list[dict[str, Any]]
    event_count: int
    wait_series: dict[str, list[float | None]] | None = None  # for the PNG: ms of wait per second, per bucket

    @property
    def latest_age_s(self) -> float | None:
        if self.latest is None:
            return None
        return max(0.0, (self.now - self.latest["collected_at"]).total_seconds())


def load(
    ctx: CliContext, tenant_slug: str, name: str, since: str, buckets: int, *, with_wait_series: bool = False
) -> ServerHistory:
    delta = parse_since(since)
    tenant = ctx.tenant(tenant_slug)
    engine = ctx.tenant_engine(tenant)
    try:
        info = get_server(engine, name, include_removed=True)
        now = utcnow()
        window = history.Window(now - delta, now, buckets)
        with engine.connect() as conn:
            events, event_count = history.status_events(conn, info.id, window)
            points, summary = history.series(conn, info.id, window)
            chosen = history_waits.sample(conn, info.id, window, summary["snapshots"])
            top_waits = history_waits.top_waits(conn, info.id, window, chosen)
            waits = None
            if with_wait_series:
                types = [w["wait_type"] for w in top_waits]
                waits = history_waits.wait_series(conn, info.id, window, types, chosen, points)
            return ServerHistory(
                tenant=tenant.slug,
                info=info,
                hint=hint_for(info, ctx.settings.encrypt),
                now=now,
                window=window,
                since=since,
                latest=history.latest(conn, info.id),
                summary=summary,
                points=points,
                top_waits=top_waits,
                waits_sampled=chosen.as_json(),
                events=events,
                event_count=event_count,
                wait_series=waits,
            )
    finally:
        engine.dispose()


def show(args: argparse.Namespace, ctx: CliContext) -> int:
    parse_since(args.since)  # a bad window is a usage error before anything is read
    renderer = None
    if args.png:
        from supervisor.cli import show_png

        renderer = show_png.renderer()  # a clear error now if matplotlib is missing
    data = load(ctx, args.tenant, args.name, args.since, JSON_POINTS if args.json else TEXT_COLUMNS)
    written = None
    if renderer is not None:
        png_data = load(ctx, args.tenant, args.name, args.since, PNG_POINTS, with_wait_series=True)
        written = renderer(png_data, args.png)
    if args.json:
        print_json(as_json(data))
    else:
        from supervisor.cli.show_text import render

        print(render(data))
        if written is not None:
            print(f"\ncharts written to {written}")
    return 0


def as_json(data: ServerHistory) -> dict[str, Any]:
    window = data.window
    latest = None
    if data.latest is not None:
        latest = {**data.latest, "age_s": round(data.latest_age_s or 0.0, 1)}
    return {
        "tenant": data.tenant,
        "server": {**data.info.as_json(), "hint": data.hint},
        "window": {
            "since": window.start,
            "until": window.end,
            "seconds": window.seconds,
            "bucket_seconds": window.bucket_seconds,
            "snapshots": data.summary["snapshots"],
        },
        "latest": latest,
        "summary": data.summary["metrics"],
        "series": [{"at": p.at, "samples": p.samples, **_rounded(p.values)} for p in data.points],
        "top_waits": data.top_waits,
        "top_waits_from": data.waits_sampled,
        "status_events": data.events,
        "status_events_in_window": data.event_count,
    }


def _rounded(values: dict[str, float | None]) -> dict[str, float | None]:
    return {key: None if value is None else round(value, 3) for key, value in values.items()}
