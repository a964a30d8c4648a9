"""Checks of fleet-file values: each failure is a FleetError whose message names the field."""

from __future__ import annotations

from typing import Any


class FleetError(ValueError):
    """An invalid fleet file; the message names the field."""


def reject_unknown(value: dict[str, Any], known: set[str], where: str) -> None:
    for key in value:
        if key not in known:
            raise FleetError(f"{where}.{key}: unknown field")


def as_bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise FleetError(f"{path}: expected true or false")
    return value


def as_int(value: Any, path: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise FleetError(f"{path}: expected an integer >= {minimum}")
    return value


def as_number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise FleetError(f"{path}: expected a number >= 0")
    return float(value)


def as_range(value: Any, path: str, *, percent: bool) -> tuple[float, float]:
    if (not isinstance(value, list) or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, int | float) for v in value)
            or not 0 <= value[0] <= value[1] or (percent and value[1] > 100)):
        limit = " <= 100" if percent else ""
        raise FleetError(f"{path}: expected [lo, hi] with 0 <= lo <= hi{limit}")
    return float(value[0]), float(value[1])


def as_strings(value: Any, path: str) -> tuple[str, ...]:
    if not isinstance(value, list) or any(not isinstance(item, str) or not item for item in value):
        raise FleetError(f"{path}: expected a list of non-empty strings")
    return tuple(value)
