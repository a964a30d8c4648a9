"""``server show --png FILE``: the four metric charts and a stacked chart of the top waits, with matplotlib.

matplotlib is the optional ``plot`` extra (``pip install 'collector-supervisor[plot]'``); without it ``--png``
fails at once with that advice, before anything is read. The Agg backend draws without a display.
"""

from __future__ import annotations

import datetime as dt
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from supervisor import history
from supervisor.errors import CollectorError

if TYPE_CHECKING:
    from supervisor.cli.show_cmd import ServerHistory

WIDTH_PX, HEIGHT_PX, DPI = 1200, 1500, 100
#: One colour per metric chart (the tests look for these pixels).
COLOURS = {
    "cpu_percent": "#1f77b4",
    "memory_percent": "#2ca02c",
    "connection_count": "#9467bd",
    "batch_requests_per_sec": "#ff7f0e",
}
MISSING = (
    "--png needs matplotlib, which is not installed: pip install 'collector-supervisor[plot]' "
    "(or pip install matplotlib)"
)


def renderer() -> Callable[[ServerHistory, str], str]:
    """The drawing function, or a CollectorError naming the extra to install."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        raise CollectorError(MISSING) from None
    matplotlib.use("Agg")
    pyplot = importlib.import_module("matplotlib.pyplot")
    return lambda data, path: _draw(pyplot, data, path)


def _draw(plt: Any, data: ServerHistory, path: str) -> str:
    window = data.window
    figure, axes = plt.subplots(5, 1, figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI, sharex=True)
    title = f"{data.tenant} / {data.info.name} ({data.info.host}:{data.info.port}) — last {data.since}, UTC"
    figure.suptitle(title, fontsize=13)
    for ax, (name, label) in zip(axes, history.METRICS.items(), strict=False):
        times, values = _series(data, name)
        ax.plot(times, values, color=COLOURS[name], linewidth=1.6)
        ax.fill_between(times, values, min((v for v in values if v == v), default=0), color=COLOURS[name], alpha=0.15)
        stats = data.summary["metrics"][name]
        extra = "" if stats is None else f"  (min {stats['min']:.4g} · avg {stats['avg']:.4g} · max {stats['max']:.4g})"
        ax.set_title(label + extra, loc="left", fontsize=10)
        ax.grid(True, alpha=0.3)
    _waits(axes[4], data)
    axes[4].set_xlim(window.start, window.end)
    fmt = "%H:%M:%S" if window.seconds <= 600 else "%H:%M" if window.seconds < 86400 else "%Y-%m-%d %H:%M"
    axes[4].xaxis.set_major_formatter(importlib.import_module("matplotlib.dates").DateFormatter(fmt))
    figure.autofmt_xdate()
    figure.tight_layout()
    target = Path(path)
    try:
        figure.savefig(target, format="png")
    except OSError as exc:
        raise CollectorError(f"--png {path}: cannot write: {exc.strerror or exc}") from None
    finally:
        plt.close(figure)
    return str(target)


def _series(data: ServerHistory, name: str) -> tuple[list[dt.datetime], list[float]]:
    """Bucket midpoints and values (short runs of empty buckets bridged, ``history.columns``); what stays empty
    is NaN, so the line has a gap there (an outage)."""
    half = dt.timedelta(seconds=data.window.bucket_seconds / 2)
    values = history.columns(data.points, name, data.window.buckets)
    times = [data.window.bucket_start(index) + half for index in range(data.window.buckets)]
    return times, [float("nan") if value is None else value for value in values]


def _waits(ax: Any, data: ServerHistory) -> None:
    series = data.wait_series or {}
    ax.set_title("top waits: wait time per second (ms/s), stacked", loc="left", fontsize=10)
    ax.grid(True, alpha=0.3)
    if not series:
        ax.text(0.5, 0.5, "no waits stored in this window", ha="center", va="center", transform=ax.transAxes)
        return
    half = dt.timedelta(seconds=data.window.bucket_seconds / 2)
    times = [data.window.bucket_start(i) + half for i in range(data.window.buckets)]
    stacks = [[float("nan") if v is None else v for v in values] for values in series.values()]
    ax.stackplot(times, *stacks, labels=list(series), alpha=0.85)
    ax.legend(loc="upper left", fontsize=8, ncol=min(3, len(series)))
