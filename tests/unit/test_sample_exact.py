"""``parse_sample`` field by field and refusal by refusal, with result sets built from the contract's own column
list (so a column added to the contract needs no change here); scripts/mutation.sh runs these."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest

from supervisor.children.errors import CollectionFailure
from supervisor.children.sample import WaitCounts, clamp_percent, parse_sample
from supervisor.errors import PROTOCOL
from supervisor.procedures.resultsets import CONTRACT_VERSION, RESULT_SETS

T0 = dt.datetime(2026, 4, 1, 10, 0, 0)
STARTED = dt.datetime(2026, 3, 30, 6, 0, 0)


def raw(instance: dict[str, Any] | None = None, cpu: list[dict[str, Any]] | None = None,
        counters: dict[str, Any] | None = None, waits: list[dict[str, Any]] | None = None,
        ) -> list[tuple[list[str], list[list[Any]]]]:  # fmt: skip
    """The four result sets in contract order; a column not given is NULL."""
    given = {
        "instance": [{"contract_version": CONTRACT_VERSION, "server_name": "SQL01", "product_version": "16.0.4135.4",
                      "host_platform": "Windows", "sqlserver_start_time": STARTED, "sample_time_utc": T0,
                      "engine_edition": 3, **(instance or {})}],
        "cpu": cpu if cpu is not None else [{"record_id": 7, "sql_cpu_percent": 30, "system_idle_percent": 50}],
        "counters": [{"total_physical_memory_kb": 8000, "available_physical_memory_kb": 2000,
                      "total_server_memory_kb": 3072, "target_server_memory_kb": 4096, "user_connections": 12,
                      "batch_requests_total": 123456, **(counters or {})}],
        "waits": waits or [],
    }  # fmt: skip
    return [(list(spec.column_names), [[row.get(name) for name in spec.column_names] for row in given[spec.name]])
            for spec in RESULT_SETS]  # fmt: skip


def refused(sets: list[tuple[list[str], list[list[Any]]]], message: str) -> None:
    with pytest.raises(CollectionFailure) as raised:
        parse_sample(sets)
    assert raised.value.error_class == PROTOCOL and raised.value.message == message


def test_every_field_of_a_plain_sample() -> None:
    sample = parse_sample(raw())
    assert (sample.server_name, sample.product_version, sample.host_platform) == ("SQL01", "16.0.4135.4", "Windows")
    assert (sample.sqlserver_start_time, sample.sample_time) == (STARTED, T0)
    assert (sample.cpu_percent, sample.system_cpu_percent, sample.memory_percent) == (30, 50, 75.0)
    assert (sample.sql_memory_mb, sample.sql_target_memory_mb) == (3, 4)
    assert (sample.connection_count, sample.batch_requests_total, sample.waits) == (12, 123456, {})


def test_column_names_are_matched_without_case() -> None:
    sets = raw()
    upper = [([name.upper() for name in names], rows) for names, rows in sets]
    assert parse_sample(upper) == parse_sample(sets)


def test_a_missing_platform_is_windows() -> None:
    assert parse_sample(raw({"host_platform": None})).host_platform == "Windows"
    assert parse_sample(raw({"host_platform": ""})).host_platform == "Windows"


def test_times_are_naive_utc() -> None:
    plus2 = dt.timezone(dt.timedelta(hours=2))
    sample = parse_sample(raw({"sample_time_utc": T0.replace(tzinfo=plus2), "sqlserver_start_time": STARTED}))
    assert sample.sample_time == T0 - dt.timedelta(hours=2) and sample.sample_time.tzinfo is None
    assert parse_sample(raw({"sample_time_utc": T0.replace(tzinfo=dt.UTC)})).sample_time == T0
    refused(raw({"sample_time_utc": "2026-04-01"}), "sample_time_utc is '2026-04-01', expected a datetime")
    refused(raw({"sqlserver_start_time": None}), "sqlserver_start_time is None, expected a datetime")


def test_cpu_from_the_newest_record() -> None:
    records = [{"record_id": 9, "sql_cpu_percent": 40, "system_idle_percent": 10},
               {"record_id": 3, "sql_cpu_percent": 90, "system_idle_percent": 0},
               {"record_id": None, "sql_cpu_percent": 99, "system_idle_percent": 0}]  # fmt: skip
    sample = parse_sample(raw(cpu=records))
    assert (sample.cpu_percent, sample.system_cpu_percent) == (40, 90)
    # SQL Server busier than the host's idle figure says: the host is at least as busy as SQL Server.
    busy = parse_sample(raw(cpu=[{"record_id": 1, "sql_cpu_percent": 70, "system_idle_percent": 60}]))
    assert (busy.cpu_percent, busy.system_cpu_percent) == (70, 70)
    clamped = parse_sample(raw(cpu=[{"record_id": 1, "sql_cpu_percent": 130, "system_idle_percent": -20}]))
    assert (clamped.cpu_percent, clamped.system_cpu_percent) == (100, 100)
    no_sql = parse_sample(raw(cpu=[{"record_id": 1, "sql_cpu_percent": None, "system_idle_percent": 25}]))
    assert (no_sql.cpu_percent, no_sql.system_cpu_percent) == (None, 75)
    no_idle = parse_sample(raw(cpu=[{"record_id": 1, "sql_cpu_percent": 5, "system_idle_percent": None}]))
    assert (no_idle.cpu_percent, no_idle.system_cpu_percent) == (5, None)
    linux = parse_sample(raw({"host_platform": "Linux"}, cpu=[{"record_id": 1, "sql_cpu_percent": 5,
                                                               "system_idle_percent": 0}]))  # fmt: skip
    assert (linux.host_platform, linux.cpu_percent, linux.system_cpu_percent) == ("Linux", 5, None)
    none = parse_sample(raw(cpu=[]))
    assert (none.cpu_percent, none.system_cpu_percent) == (None, None)


def test_clamp_percent() -> None:
    assert [clamp_percent(v) for v in (None, -0.1, 0, 49.5, 50.5, 99.6, 100, 250.0)] == [None, 0, 0, 50, 50, 100,
                                                                                          100, 100]  # fmt: skip
    assert type(clamp_percent(12.4)) is int


def test_memory_percent_and_megabytes() -> None:
    assert parse_sample(raw(counters={"available_physical_memory_kb": 2667})).memory_percent == 66.66
    assert parse_sample(raw(counters={"available_physical_memory_kb": 0})).memory_percent == 100.0
    assert parse_sample(raw(counters={"available_physical_memory_kb": 9000})).memory_percent is None  # > total
    assert parse_sample(raw(counters={"available_physical_memory_kb": 8000})).memory_percent == 0.0
    for total in (0, -5, None):
        assert parse_sample(raw(counters={"total_physical_memory_kb": total})).memory_percent is None, total
    assert parse_sample(raw(counters={"available_physical_memory_kb": None})).memory_percent is None
    mb = parse_sample(raw(counters={"total_server_memory_kb": 2047, "target_server_memory_kb": 1024}))
    assert (mb.sql_memory_mb, mb.sql_target_memory_mb) == (1, 1)
    odd = parse_sample(raw(counters={"total_server_memory_kb": -1, "target_server_memory_kb": 0}))
    assert (odd.sql_memory_mb, odd.sql_target_memory_mb) == (None, 0)
    assert parse_sample(raw(counters={"total_server_memory_kb": None})).sql_memory_mb is None
    assert parse_sample(raw(counters={"total_server_memory_kb": 4096.0})).sql_memory_mb == 4


def test_waits_are_filtered_and_normalised() -> None:
    waits = [
        {"wait_type": " writelog ", "waiting_tasks_count": 5, "wait_time_ms": 9, "signal_wait_time_ms": 1},
        {"wait_type": "LCK_M_X", "waiting_tasks_count": 2, "wait_time_ms": None, "signal_wait_time_ms": None},
        {"wait_type": "SLEEP_TASK", "waiting_tasks_count": 9, "wait_time_ms": 9, "signal_wait_time_ms": 9},
        {"wait_type": "PAGEIOLATCH_SH", "waiting_tasks_count": 0, "wait_time_ms": 5, "signal_wait_time_ms": 0},
        {"wait_type": "CXPACKET", "waiting_tasks_count": None, "wait_time_ms": 5, "signal_wait_time_ms": 0},
        {"wait_type": None, "waiting_tasks_count": 3, "wait_time_ms": 3, "signal_wait_time_ms": 3},
        {"wait_type": "  ", "waiting_tasks_count": 3, "wait_time_ms": 3, "signal_wait_time_ms": 3},
    ]
    parsed = parse_sample(raw(waits=waits))
    assert parsed.waits == {"WRITELOG": WaitCounts(5, 9, 1)}  # LCK_M_X's NULL times are unknown, not 0
    assert "LCK_M_X" in parsed.unknown_waits


def test_malformed_result_sets_are_protocol_errors_saying_what() -> None:
    count = len(RESULT_SETS)
    refused(raw()[:3], f"expected {count} result sets, got 3")
    refused([*raw(), raw()[3]], f"expected {count} result sets, got {count + 1}")
    names, rows = raw()[0]
    sets = raw()
    sets[0] = ([n for n in names if n not in ("server_name", "sample_time_utc")],
               [[v for n, v in zip(names, rows[0], strict=True) if n not in ("server_name", "sample_time_utc")]])
    refused(sets, "result set 'instance' lacks columns server_name, sample_time_utc")
    sets = raw()
    sets[2] = (sets[2][0], [])
    refused(sets, "result set 'counters' has 0 rows, expected 1")
    sets = raw()
    sets[0] = (sets[0][0], sets[0][1] * 2)
    refused(sets, "result set 'instance' has 2 rows, expected 1")
    sets = raw()
    sets[3] = (sets[3][0], [["X", 1, 2]])  # a row shorter than its columns
    with pytest.raises(ValueError):
        parse_sample(sets)


def test_another_contract_version_asks_for_a_redeploy() -> None:
    message = (f"server returns contract version {CONTRACT_VERSION + 1}, expected {CONTRACT_VERSION}: redeploy with "
               "'collector-supervisor procedures deploy'")  # fmt: skip
    with pytest.raises(CollectionFailure, match=f"^{re.escape(message)}$") as raised:
        parse_sample(raw({"contract_version": CONTRACT_VERSION + 1}))
    assert raised.value.error_class == PROTOCOL


@pytest.fixture
def not_utc(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A machine whose local time is not UTC: naive server times must not be shifted by it."""
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_naive_times_stay_as_they_are_whatever_the_local_zone(not_utc: None) -> None:
    sample = parse_sample(raw())
    assert (sample.sample_time, sample.sqlserver_start_time) == (T0, STARTED)
    aware = parse_sample(raw({"sample_time_utc": T0.replace(tzinfo=dt.timezone(dt.timedelta(hours=1)))}))
    assert aware.sample_time == T0 - dt.timedelta(hours=1)  # to UTC, not to local time


def test_records_without_ids_are_ordered_by_time() -> None:
    earlier = T0 - dt.timedelta(seconds=15)
    rows = [{"record_id": 0, "record_time_utc": T0, "sql_cpu_percent": 10, "system_idle_percent": 50},
            {"record_id": None, "record_time_utc": earlier, "sql_cpu_percent": 90, "system_idle_percent": 5}]
    assert parse_sample(raw(cpu=rows)).cpu_percent == 10  # a missing id counts as 0: the later one wins
    untimed = [{"record_id": None, "record_time_utc": None, "sql_cpu_percent": 20, "system_idle_percent": 50},
               {"record_id": None, "record_time_utc": T0, "sql_cpu_percent": 30, "system_idle_percent": 50}]
    assert parse_sample(raw(cpu=untimed)).cpu_percent == 30  # a missing time is the oldest


def test_memory_edges() -> None:
    tiny = parse_sample(raw(counters={"total_physical_memory_kb": 1, "available_physical_memory_kb": 0}))
    assert tiny.memory_percent == 100.0
    odd = parse_sample(raw(counters={"available_physical_memory_kb": -8000}))
    assert odd.memory_percent is None  # less than nothing available: a bogus figure, unknown


def test_a_skipped_wait_row_does_not_end_the_list() -> None:
    waits = [{"wait_type": "SLEEP_TASK", "waiting_tasks_count": 9, "wait_time_ms": 9, "signal_wait_time_ms": 9},
             {"wait_type": "WRITELOG", "waiting_tasks_count": 1, "wait_time_ms": 2, "signal_wait_time_ms": 0}]
    assert parse_sample(raw(waits=waits)).waits == {"WRITELOG": WaitCounts(1, 2, 0)}
