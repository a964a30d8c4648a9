"""Printing for the CLI: aligned tables for people, JSON for scripts."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from supervisor.errors import CollectorError
from supervisor.rules import printable


class OutputRefused(CollectorError):
    """Standard output does not take what a command prints (``status > /dev/full``, a full disk, an I/O error)."""


class _RefusalNamingStdout:
    """Standard output whose write errors say that they are (a closed pipe stays ``BrokenPipeError``)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise _refusal(exc) from exc

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise _refusal(exc) from exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _refusal(exc: OSError) -> OutputRefused:
    return OutputRefused(f"cannot write the output: {exc.strerror or exc}")


@contextlib.contextmanager
def refused_output_reported() -> Iterator[None]:
    stream = sys.stdout
    if stream is None:
        yield
        return
    sys.stdout = _RefusalNamingStdout(stream)
    try:
        yield
    finally:
        sys.stdout = stream


def drop_unwritten_output() -> None:
    """Standard output to /dev/null, so that the interpreter's flush at exit does not fail on what is left."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


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
