"""Text charts from Unicode block characters: a one-line sparkline and a multi-row area chart.

Both are scaled to the data they show (the lowest value sits on the bottom, the highest reaches the top), so a
series moving between 41 and 44 is as readable as one moving between 0 and 100; the caller labels the range.
A missing value (None: no snapshot in that bucket) is a blank column, never a low bar.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

BLOCKS = " ▁▂▃▄▅▆▇█"  # eighths of a cell, 0 .. 8
LEVELS = len(BLOCKS) - 1


def value_range(values: Sequence[float | None]) -> tuple[float, float] | None:
    present = [v for v in values if v is not None and math.isfinite(v)]
    return (min(present), max(present)) if present else None


def _height(value: float, low: float, high: float, steps: int) -> int:
    """1 .. steps: the lowest value still shows (as the smallest bar), a flat series sits at half height."""
    if high <= low:
        return max(1, steps // 2)
    return 1 + round((value - low) / (high - low) * (steps - 1))


def sparkline(values: Sequence[float | None], min_span: float = 0.02) -> str:
    """One character per value, scaled to the values' own range, but never to less than ``min_span`` of their
    magnitude: 149.8 and 150.2 make a flat line, not the bottom and the top (a sparkline has no labels)."""
    span = value_range(values)
    if span is None:
        return " " * len(values)
    low, high = span
    floor = min_span * max(abs(low), abs(high))
    if 0 < high - low < floor:
        middle = (low + high) / 2
        low, high = middle - floor / 2, middle + floor / 2
    return "".join(" " if v is None or not math.isfinite(v) else BLOCKS[_height(v, low, high, LEVELS)] for v in values)


def area_chart(values: Sequence[float | None], rows: int) -> list[str]:
    """``rows`` lines (top first), one column per value, each column filled up to its value."""
    span = value_range(values)
    lines = [[" "] * len(values) for _ in range(rows)]
    if span is None:
        return ["".join(line) for line in lines]
    steps = rows * LEVELS
    for column, value in enumerate(values):
        if value is None or not math.isfinite(value):
            continue
        height = _height(value, *span, steps)
        for row in range(rows):  # row 0 is the bottom
            fill = min(LEVELS, max(0, height - row * LEVELS))
            lines[rows - 1 - row][column] = BLOCKS[fill]
    return ["".join(line) for line in lines]


def number(value: float | None) -> str:
    """A short label: 0.42, 7.5, 43, 1,234, 12.3k, 4.5M."""
    if value is None or not math.isfinite(value):
        return "-"
    size = abs(value)
    if size >= 1e6:
        return f"{value / 1e6:.1f}M"
    if size >= 1e4:
        return f"{value / 1e3:.1f}k"
    if size >= 100 or value == int(value):
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:.1f}".rstrip("0").rstrip(".")
    return f"{value:.2f}".rstrip("0").rstrip(".")
