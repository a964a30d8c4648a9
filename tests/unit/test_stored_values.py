"""Reading back what another program may have stored (SQLite keeps any value in any column): baselines that
are dropped with the column and value named, and metric values the history reads as missing. A real SQLite
file each time, written with SQL as the web app would."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text

from supervisor.children.deltas import Baseline
from supervisor.children.persist import write_items
from supervisor.children.records import WriteItem
from supervisor.children.sample import WaitCounts
from supervisor.children.status import StatusUpdate
from supervisor.children.stored_state import load_baselines
from supervisor.history import finite, numeric
from supervisor.storage.engine import make_engine
from supervisor.storage.migrations import upgrade_tenant
from supervisor.storage.tenant_schema import metric_snapshots, servers

NOW = dt.datetime(2026, 11, 28, 12, 0, 0)
GOOD = "2026-11-28 11:00:00.000000"


@pytest.fixture
def tenant(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path}/tenant.db", pooled=False)
    upgrade_tenant(engine)
    with engine.begin() as conn:
        rows = [{"id": sid, "name": f"s{sid}", "host": "h", "port": 1433, "status": "online",
                 "consecutive_failures": 0, "created_at": NOW} for sid in range(1, 10)]  # fmt: skip
        conn.execute(servers.insert(), rows)
    yield engine
    engine.dispose()


BAD_BASELINES = {
    2: ("sqlserver_start_time", "'bogus'", "counter_baselines.sqlserver_start_time = 'bogus' is not a time"),
    3: ("sample_time", "12345", "counter_baselines.sample_time = 12345 is not a time"),
    4: ("batch_requests_total", "'many'", "counter_baselines.batch_requests_total = 'many' is not a counter value"),
    5: ("batch_requests_total", "-1", "counter_baselines.batch_requests_total = -1 is not a counter value"),
    6: ("waits_json", "'[1, 2]'", "counter_baselines.waits_json = '[1, 2]' is not the collector's wait counters"),
    7: ("waits_json", "'{\"X\": [1]}'", "counter_baselines.waits_json = '{\"X\": [1]}' is not the collector's"),
    8: ("waits_json", "x'00'", "counter_baselines.waits_json = b'\\x00' is not the collector's wait counters"),
}


#: A row as an earlier version (or the web app) writes it, without ``checked_at``.
_PLANT = ("INSERT INTO counter_baselines(server_id, sqlserver_start_time, sample_time, batch_requests_total, "
          "waits_json) VALUES ")  # fmt: skip


def test_a_baseline_with_a_value_the_collector_would_not_write_is_dropped_naming_it(tenant: Engine) -> None:
    with tenant.begin() as conn:
        for sid in range(1, 10):
            conn.execute(text(_PLANT + "(:sid, :t, :t, 7, :w)"),
                         {"sid": sid, "t": GOOD, "w": '{"WRITELOG":[1,2,3]}'})  # fmt: skip
        for sid, (column, value, _) in BAD_BASELINES.items():
            conn.execute(text(f"UPDATE counter_baselines SET {column} = {value} WHERE server_id = :sid"), {"sid": sid})
        conn.execute(text("UPDATE counter_baselines SET batch_requests_total = NULL, waits_json = '{}' "
                          "WHERE server_id = 9"))  # fmt: skip
        baselines = load_baselines(conn)
    at = dt.datetime(2026, 11, 28, 11, 0, 0)
    assert baselines == {
        1: Baseline(at, at, 7, {"WRITELOG": WaitCounts(1, 2, 3)}),
        9: Baseline(at, at, None, {}),  # no counter and no waits yet: usable
    }
    assert set(baselines.unusable) == set(BAD_BASELINES)
    for sid, (_, _, reason) in BAD_BASELINES.items():
        assert baselines.unusable[sid].startswith(reason), baselines.unusable[sid]


def test_a_dropped_baseline_row_is_replaced_by_the_next_sample(tenant: Engine) -> None:
    """A stored ``sample_time`` that is text (greater than any time in SQLite) or far ahead does not keep the
    "only forward" upsert from replacing the row."""
    with tenant.begin() as conn:
        conn.execute(text(_PLANT + "(1, 'bogus', 'bogus', 5, '{}')"))
        conn.execute(text(_PLANT + "(2, :t, '9999-01-01 00:00:00', 5, '{}')"), {"t": GOOD})
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        items = [baseline_item(sid, now) for sid in (1, 2)]
        write_items(conn, items)
        baselines = load_baselines(conn)
    assert not baselines.unusable
    assert {sid: b.sample_time for sid, b in baselines.items()} == {1: now, 2: now}


def baseline_item(server_id: int, at: dt.datetime) -> WriteItem:
    status = StatusUpdate(server_id, checked_at=at, status="online", status_changed=False, success=True,
                          consecutive_failures=0, error=None, error_class=None)  # fmt: skip
    return WriteItem(server_id, status, baseline=Baseline(at - dt.timedelta(days=1), at, 100, {}))


@pytest.mark.parametrize(
    ("stored", "expected"),
    [(42, 42.0), (42.5, 42.5), (Decimal("7"), 7.0), (-3, -3.0), (None, None), ("high", None), (b"\x00", None),
     (True, None), (float("nan"), None), (float("inf"), None), (2**63 - 1, None)],
)  # fmt: skip
def test_finite_reads_a_number_and_nothing_else(stored: object, expected: float | None) -> None:
    assert finite(stored) == expected


def test_numeric_lets_the_database_aggregate_only_plausible_numbers(tenant: Engine) -> None:
    values = ["5", "15.5", "'high'", "x'00'", "1e999", "-1e999", "9223372036854775807", "9223372036854775807", "NULL"]
    with tenant.begin() as conn:
        for n, value in enumerate(values):
            conn.execute(text(f"INSERT INTO metric_snapshots(server_id, collected_at, cpu_percent) "
                              f"VALUES (1, :at, {value})"), {"at": f"2026-11-28 11:00:{n:02d}"})  # fmt: skip
        column = numeric(metric_snapshots.c.cpu_percent)
        row = conn.execute(select(func.count(column), func.sum(column), func.min(column), func.max(column))).one()
    assert tuple(row) == (2, 20.5, 5, 15.5)
