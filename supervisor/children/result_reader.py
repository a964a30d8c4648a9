"""Reading a collection's answer through pyodbc, bounded: at most ``MAX_RESULT_SETS`` result sets of at most
``max_rows`` rows each, ``FETCH_CHUNK`` rows at a time, stopping between chunks once the deadline passed. One
value or message stream without end is the memory guard's (``memory_guard``): no cap applies inside one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from supervisor.children.errors import CollectionFailure
from supervisor.children.sample import RawSets
from supervisor.errors import PROTOCOL, TIMEOUT
from supervisor.procedures.resultsets import RESULT_SETS, WAITS

#: Rows per fetch: between chunks the reading stops if the deadline passed.
FETCH_CHUNK = 500
#: The most rows a result set may have. sys.dm_os_wait_stats has about 1,000-1,500 rows (without the benign
#: ones fewer); the other sets have one row (a few at most). More is a broken or hostile server: refused
#: before its rows fill the child's memory.
MAX_ROWS = {WAITS.name: 10_000}
MAX_ROWS_SMALL = 100
#: The most result sets read (the contract has RESULT_SETS; more are refused by ``parse_sample``).
MAX_RESULT_SETS = 2 * len(RESULT_SETS)


def read_result_sets(cursor: Any, abandoned: Callable[[], bool] = lambda: False) -> RawSets:
    """Every result set with columns; sets without a description (the RETURNSTATUS tail) skipped. Bounded:
    at most ``MAX_RESULT_SETS`` sets of at most ``max_rows`` rows each, read ``FETCH_CHUNK`` rows at a time,
    and the reading stops between chunks once ``abandoned()`` (the deadline passed). CollectionFailure
    (PROTOCOL) for a server that sends more, or text that is not UTF-16."""
    sets: list[tuple[list[str], list[Any]]] = []
    while True:
        if cursor.description is not None:
            if len(sets) == MAX_RESULT_SETS:
                raise CollectionFailure(PROTOCOL, f"the server returns more than {MAX_RESULT_SETS} result sets")
            names = [column[0] for column in cursor.description]
            sets.append((names, _fetch_rows(cursor, len(sets), abandoned)))
        if abandoned():
            raise CollectionFailure(TIMEOUT, "collection abandoned at its deadline")
        try:
            more = cursor.nextset()
        except UnicodeDecodeError:  # in the next set's column names
            raise CollectionFailure(PROTOCOL, f"server sent invalid UTF-16 in result set {len(sets) + 1}") from None
        if not more:
            return sets


def max_rows(index: int) -> int:
    """The most rows result set ``index`` (0-based, contract order) may have."""
    return MAX_ROWS.get(RESULT_SETS[index].name, MAX_ROWS_SMALL) if index < len(RESULT_SETS) else MAX_ROWS_SMALL


def _fetch_rows(cursor: Any, index: int, abandoned: Callable[[], bool]) -> list[Any]:
    limit = max_rows(index)
    rows: list[Any] = []
    while True:
        try:
            chunk = cursor.fetchmany(FETCH_CHUNK)
        except UnicodeDecodeError:
            raise CollectionFailure(PROTOCOL, f"server sent invalid UTF-16 in result set {index + 1}") from None
        rows += chunk
        if len(rows) > limit:
            name = RESULT_SETS[index].name if index < len(RESULT_SETS) else str(index + 1)
            raise CollectionFailure(PROTOCOL, f"result set {name!r} has more than {limit} rows")
        if len(chunk) < FETCH_CHUNK:
            return rows
        if abandoned():
            raise CollectionFailure(TIMEOUT, "collection abandoned at its deadline")
