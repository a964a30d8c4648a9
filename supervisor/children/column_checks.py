"""What each value of the collection's result sets may be: one ``ColumnCheck`` per contract column, made once
from the result-set definitions (``supervisor.procedures.resultsets``).

int/bigint take an ``int`` (never a ``bool``; an integral float or Decimal is converted), float a finite
number, nvarchar text up to the column's length, datetime2 a ``datetime``. Where a value is stored or is
cumulative, its range is tighter (``_RANGES``: what the tenant DB's columns hold, see
``supervisor.storage.tenant_schema``). A value that fails is the server's fault: a PROTOCOL failure naming
``set.column`` and the value.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from supervisor.children.errors import CollectionFailure
from supervisor.errors import PROTOCOL
from supervisor.procedures.resultsets import RESULT_SETS, Column, ResultSet, SqlType
from supervisor.rules import shown

_KB_PER_MB = 1024
INT32_MAX = 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_SQL_RANGES = {SqlType.INT: (-(2**31), INT32_MAX), SqlType.BIGINT: (INT64_MIN, INT64_MAX)}
#: The tenant DB keeps MB in INTEGER columns (sql_memory_mb, sql_target_memory_mb).
MAX_MEMORY_KB = (INT32_MAX + 1) * _KB_PER_MB - 1
#: Ranges tighter than the SQL type: what the tenant DB stores must fit its column (connection_count is an
#: INTEGER), and cumulative counters are never negative. Negative memory figures stay allowed: they mean
#: "unknown" (no MB, no percentage).
_RANGES: dict[tuple[str, str], tuple[int, int]] = {
    ("counters", "user_connections"): (0, INT32_MAX),
    ("counters", "batch_requests_total"): (0, INT64_MAX),
    ("counters", "total_server_memory_kb"): (INT64_MIN, MAX_MEMORY_KB),
    ("counters", "target_server_memory_kb"): (INT64_MIN, MAX_MEMORY_KB),
    ("waits", "waiting_tasks_count"): (0, INT64_MAX),
    ("waits", "wait_time_ms"): (0, INT64_MAX),
    ("waits", "signal_wait_time_ms"): (0, INT64_MAX),
}
#: Text stored as it comes: no control characters (PostgreSQL refuses NUL in text, too).
_PRINTABLE = frozenset({("waits", "wait_type")})
#: Checked where they are read (``_required_time``), not by a ColumnCheck.
_REQUIRED_TIMES = frozenset({("instance", "sqlserver_start_time"), ("instance", "sample_time_utc")})
_NONE = type(None)


class ColumnCheck:
    """The check of one contract column. ``column(values)`` checks all of a set's values of it at once: None
    when each passes as it is (the common case, decided with C-level built-ins, no Python loop per value),
    else the values as to be used (an integral float made an int); raises CollectionFailure at the first
    value that fails."""

    def __init__(self, spec: ResultSet, column: Column) -> None:
        key = (spec.name, column.name)
        self.where = f"{spec.name}.{column.name}"
        self.sql_type = column.sql_type
        self.expected = f"nvarchar({column.length})" if column.sql_type is SqlType.NVARCHAR else column.sql_type.value
        self.low, self.high = _RANGES.get(key, _SQL_RANGES.get(column.sql_type, (0, 0)))
        self.length = column.length
        self.printable = key in _PRINTABLE
        self.skip = key in _REQUIRED_TIMES
        self._fast_type: type = {SqlType.FLOAT: float, SqlType.NVARCHAR: str, SqlType.DATETIME2: dt.datetime}.get(
            column.sql_type, int
        )

    def one(self, value: Any) -> Any:
        """A single value as to be used (the sets of one row), or CollectionFailure."""
        if value is None or self.skip:
            return value
        kind = type(value)
        if kind is self._fast_type:
            if kind is int:
                if self.low <= value <= self.high:
                    return value
            elif kind is str:
                if len(value) <= self.length and (not self.printable or value.isprintable()):
                    return value
            elif kind is float:
                if math.isfinite(value):
                    return value
            else:
                return value
        return self.value(value)

    def column(self, values: Sequence[Any]) -> list[Any] | None:
        if self.skip:
            return None
        kinds = set(map(type, values))
        nulls = _NONE in kinds
        kinds.discard(_NONE)
        if not kinds or (len(kinds) == 1 and self._fast_type in kinds):
            present = [value for value in values if value is not None] if nulls else values
            if self._all_pass(present):
                return None
        return [self.value(value) for value in values]

    def _all_pass(self, present: Sequence[Any]) -> bool:
        if not present:
            return True
        sql_type = self.sql_type
        if sql_type is SqlType.NVARCHAR:
            return max(map(len, present)) <= self.length and (not self.printable or all(map(str.isprintable, present)))
        if sql_type is SqlType.FLOAT:
            return all(map(math.isfinite, present))
        if sql_type is SqlType.DATETIME2:
            return True
        return self.low <= min(present) and max(present) <= self.high

    def value(self, value: Any) -> Any:
        """One value as to be used, or CollectionFailure."""
        if value is None:
            return None
        sql_type = self.sql_type
        if sql_type is SqlType.NVARCHAR:
            return self._text(value)
        if sql_type is SqlType.DATETIME2:
            if not isinstance(value, dt.datetime):
                raise self._refused(value)
            return value
        if sql_type is SqlType.FLOAT:
            number = _as_float(value)
            if number is None:
                raise self._refused(value, "a finite float")
            return number
        whole = _as_int(value)
        if whole is None:
            raise self._refused(value)
        if not self.low <= whole <= self.high:
            raise CollectionFailure(PROTOCOL, f"{self.where} is {shown(value)}, expected {self.expected} {self._range}")
        return whole

    @property
    def _range(self) -> str:
        sql_low, sql_high = _SQL_RANGES[self.sql_type]
        if self.low > sql_low and self.high == sql_high:
            return f"of {self.low} or more"
        if self.low == sql_low and self.high < sql_high:
            return f"of at most {self.high}"
        return f"from {self.low} to {self.high}"

    def _text(self, value: Any) -> str:
        if not isinstance(value, str):
            raise self._refused(value)
        if len(value) > self.length:
            raise CollectionFailure(
                PROTOCOL, f"{self.where} has {len(value):,} characters, expected {self.expected}: {shown(value)}"
            )
        if self.printable and not value.isprintable():
            raise CollectionFailure(PROTOCOL, f"{self.where} is {shown(value)}, expected printable text")
        return value

    def _refused(self, value: Any, expected: str | None = None) -> CollectionFailure:
        return CollectionFailure(
            PROTOCOL, f"{self.where} is {shown(value)} ({type(value).__name__}), expected {expected or self.expected}"
        )


def _as_int(value: Any) -> int | None:
    """An int as it is (a bool is not one), an integral finite float or Decimal as an int, else None."""
    if type(value) is int:
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return int(value)
    return None


def _as_float(value: Any) -> float | None:
    if type(value) is int or isinstance(value, float | Decimal):
        try:
            number = float(value)
        except OverflowError:
            return None
        return number if math.isfinite(number) else None
    return None


#: Per result set, its columns' names and checks, in contract order.
COLUMN_CHECKS: dict[str, tuple[tuple[str, ColumnCheck], ...]] = {
    spec.name: tuple((column.name, ColumnCheck(spec, column)) for column in spec.columns) for spec in RESULT_SETS
}
