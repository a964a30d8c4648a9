"""Waiting for something a real process does, with a deadline that is a safety net, not a timing assertion."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal, TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T | Literal[False] | None],
    timeout: float,
    what: str | Callable[[], str] | None = None,
    interval: float = 0.1,
) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns a truthy value, and return that value.

    If it is still falsy after ``timeout`` seconds, fail with an ``AssertionError`` naming ``what`` (a callable
    is called then, so the message can show the state at the time of failure, e.g. a log tail; without it,
    the predicate's name).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = what() if callable(what) else what or getattr(predicate, "__qualname__", repr(predicate))
            raise AssertionError(f"timed out after {timeout:g}s waiting for {detail}")
        time.sleep(interval)
