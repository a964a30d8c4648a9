"""Printing for the CLI: aligned tables for people, JSON for scripts."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Sequence
from typing import Any

from supervisor.rules import printable


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=_json_default)
    sys.stdout.write("\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat() + ("Z" if value.tzinfo is None else "")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    print("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


#: Longest cell: a value stored by another program may be megabytes long (every row is padded to it).
CELL_MAX = 1000


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return visible(str(value), CELL_MAX)


def visible(text: str, limit: int) -> str:
    """``text`` safe to print on a terminal: control characters (a newline, an escape sequence) shown
    escaped, cut to ``limit`` characters."""
    if len(text) > limit:
        text = text[:limit] + f"… ({len(text):,} characters)"
    return printable(text)


def age(moment: dt.datetime | None, now: dt.datetime) -> str:
    if moment is None:
        return "-"
    seconds = max(0, int((now - moment).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"
