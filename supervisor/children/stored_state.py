"""What a child reads back of its own earlier results: each server's status and failure count, the age of
its last check, and the previous raw sample (the baseline of rates and wait increments).

These columns are the collector's output, but the rows are input all the same: another program may have
written them, and SQLite stores any value in any column. A value the collector would not have written is read
as unknown, left out, or (a baseline) dropped, never raised: one bad row must not stop a tenant.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Collection
from typing import Any

from sqlalchemy import Connection, select

from supervisor import rules
from supervisor.children.deltas import Baseline
from supervisor.children.sample import WaitCounts
from supervisor.children.status import OFFLINE, ONLINE, UNKNOWN, ServerState
from supervisor.children.targets import InvalidRow
from supervisor.clock import stored_utc
from supervisor.storage.raw import raw
from supervisor.storage.tenant_schema import counter_baselines, servers

_STATUSES = frozenset({UNKNOWN, ONLINE, OFFLINE})


def load_states(conn: Connection) -> dict[int, ServerState]:
    """Status and failure count per server. These columns are the collector's output: a value it would not
    have written (another program's) is read as ``unknown`` / 0 and overwritten by the next result."""
    rows = conn.execute(select(raw(servers.c.id), raw(servers.c.status), raw(servers.c.consecutive_failures)))
    states = {}
    for server_id, status, failures in rows:
        if status not in _STATUSES:
            status = UNKNOWN
        if isinstance(failures, bool) or not isinstance(failures, int) or not 0 <= failures < rules.INT32_MAX:
            failures = 0
        states[server_id] = ServerState(status, failures)
    return states


def check_ages(conn: Connection, server_ids: Collection[int], now: dt.datetime) -> dict[int, float]:
    """Seconds since each of these servers' last stored check (``last_checked_at``, UTC), for those with one that
    is a time; a catch-up decides on it (children.scheduler), so a value another program wrote is left out."""
    wanted = set(server_ids)
    ages = {}
    for server_id, checked in conn.execute(select(raw(servers.c.id), raw(servers.c.last_checked_at))):
        if server_id in wanted and (checked_at := stored_utc(checked)) is not None:
            ages[server_id] = (now - checked_at).total_seconds()
    return ages


class StoredBaselines(dict[int, Baseline]):
    """The usable stored baselines by server id. ``unusable``: the servers whose row was dropped, each with the
    column and value at fault, for the one warning the recorder logs when that server is next collected."""

    def __init__(self) -> None:
        super().__init__()
        self.unusable: dict[int, str] = {}


_BASELINE_QUERY = select(*(raw(column) for column in counter_baselines.c))
#: A BIGINT counter's largest value.
_COUNTER_MAX = 2**63 - 1


def load_baselines(conn: Connection) -> StoredBaselines:
    """Each server's previous raw sample. A row with a value the collector would not have written (another
    program's: text in a time column, a counter that is not a whole number, waits that are not the collector's
    JSON) is dropped: that server starts with a first sample (no rate), whose baseline then replaces the row."""
    baselines = StoredBaselines()
    for row in conn.execute(_BASELINE_QUERY).mappings():
        try:
            baselines[row["server_id"]] = _baseline(row)
        except InvalidRow as exc:
            baselines.unusable[row["server_id"]] = str(exc)
    return baselines


def _baseline(row: Any) -> Baseline:
    return Baseline(
        sqlserver_start_time=_baseline_value(row, "sqlserver_start_time", _stored_time),
        sample_time=_baseline_value(row, "sample_time", _stored_time),
        batch_requests_total=_baseline_value(row, "batch_requests_total", _counter),
        waits=_baseline_value(row, "waits_json", _stored_waits),
        checked_at=stored_utc(row.get("checked_at")),  # a time that is no time: none known (no clock check)
    )


def _baseline_value(row: Any, column: str, parse: Any) -> Any:
    value = row[column]
    try:
        return parse(value)
    except ValueError as exc:
        raise InvalidRow(f"counter_baselines.{column} = {rules.shown(value)} {exc}") from None


def _stored_time(value: object) -> dt.datetime:
    moment = stored_utc(value)
    if moment is None:
        raise ValueError("is not a time")
    return moment


def _counter(value: object) -> int | None:
    if value is None:
        return None
    try:
        return rules.whole_number(value, 0, _COUNTER_MAX)
    except ValueError:
        raise ValueError("is not a counter value (a whole number, 0 or more)") from None


def _stored_waits(value: object) -> dict[str, WaitCounts]:
    """The JSON ``Baseline.waits_json`` writes. ``parse_waits`` gives {} for what it cannot read, which must not
    pass for "no waits": the next sample's increments would then be its whole counters."""
    if isinstance(value, str):
        waits = Baseline.parse_waits(value)
        if waits or _is_empty_object(value):
            return waits
    raise ValueError("is not the collector's wait counters (JSON)")


def _is_empty_object(text: str) -> bool:
    try:
        return json.loads(text) == {}
    except ValueError:
        return False
