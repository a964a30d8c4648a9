"""The per-column checks of ``parse_sample`` (types and ranges from the contract and the storage columns), the
sample-time plausibility check, duplicate wait types, and the error texts of bad server data."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from typing import Any

import pyodbc
import pytest

from supervisor.children.column_checks import MAX_MEMORY_KB
from supervisor.children.deltas import Baseline, compute
from supervisor.children.errors import NO_MESSAGE, CollectionFailure, classify
from supervisor.children.sample import WaitCounts, parse_sample
from supervisor.errors import PROTOCOL
from supervisor.procedures.resultsets import CONTRACT_VERSION, RESULT_SETS

NOW = dt.datetime(2026, 6, 1, 12, 0, 0)


def raw(instance: dict[str, Any] | None = None, counters: dict[str, Any] | None = None,
        waits: list[tuple[Any, ...]] | None = None, cpu: dict[str, Any] | None = None,
        ) -> list[tuple[list[str], list[list[Any]]]]:  # fmt: skip
    given = {
        "instance": [{"contract_version": CONTRACT_VERSION, "server_name": "SQL01", "host_platform": "Windows",
                      "engine_edition": 3, "sqlserver_start_time": NOW - dt.timedelta(days=3),
                      "sample_time_utc": NOW, **(instance or {})}],
        "cpu": [{"record_id": 7, "record_time_utc": NOW, "sql_cpu_percent": 30, "system_idle_percent": 50,
                 **(cpu or {})}],
        "counters": [{"total_physical_memory_kb": 8000, "available_physical_memory_kb": 2000,
                      "total_server_memory_kb": 3072, "target_server_memory_kb": 4096, "user_connections": 12,
                      "batch_requests_total": 123456, **(counters or {})}],
        "waits": [dict(zip(("wait_type", "waiting_tasks_count", "wait_time_ms", "signal_wait_time_ms"), row,
                           strict=True)) for row in (waits or [])],
    }  # fmt: skip
    return [(list(spec.column_names), [[row.get(name) for name in spec.column_names] for row in given[spec.name]])
            for spec in RESULT_SETS]  # fmt: skip


def refusal(sets: list[tuple[list[str], list[list[Any]]]], now: dt.datetime | None = NOW) -> str:
    with pytest.raises(CollectionFailure) as raised:
        parse_sample(sets, now=now)
    assert raised.value.error_class == PROTOCOL
    return raised.value.message


@pytest.mark.parametrize(("value", "message"), [
    ("1000", "counters.batch_requests_total is '1000' (str), expected bigint"),
    (True, "counters.batch_requests_total is True (bool), expected bigint"),
    (12.5, "counters.batch_requests_total is 12.5 (float), expected bigint"),
    (math.inf, "counters.batch_requests_total is inf (float), expected bigint"),
    (math.nan, "counters.batch_requests_total is nan (float), expected bigint"),
    (Decimal("1.5"), "counters.batch_requests_total is Decimal('1.5') (Decimal), expected bigint"),
    (b"\x01", "counters.batch_requests_total is b'\\x01' (bytes), expected bigint"),
    (-1, "counters.batch_requests_total is -1, expected bigint of 0 or more"),
    (1e30, "counters.batch_requests_total is 1e+30, expected bigint of 0 or more"),
])  # fmt: skip
def test_a_counter_of_another_type_or_out_of_range_is_refused_naming_it(value: object, message: str) -> None:
    assert refusal(raw(counters={"batch_requests_total": value})) == message


def test_integral_floats_and_decimals_become_ints() -> None:
    sample = parse_sample(raw(counters={"batch_requests_total": 7.0, "user_connections": Decimal("12")}), now=NOW)
    assert (sample.batch_requests_total, sample.connection_count) == (7, 12)
    assert type(sample.batch_requests_total) is int and type(sample.connection_count) is int


def test_nulls_pass_where_they_did() -> None:
    sample = parse_sample(raw(counters={"user_connections": None, "batch_requests_total": None}), now=NOW)
    assert (sample.connection_count, sample.batch_requests_total) == (None, None)


def test_stored_values_must_fit_their_columns() -> None:
    assert parse_sample(raw(counters={"user_connections": 2**31 - 1}), now=NOW).connection_count == 2**31 - 1
    assert refusal(raw(counters={"user_connections": 2**31})) == (
        "counters.user_connections is 2147483648, expected bigint from 0 to 2147483647")
    assert refusal(raw(counters={"user_connections": -5})) == (
        "counters.user_connections is -5, expected bigint from 0 to 2147483647")
    no_host_figure = {"total_server_memory_kb": MAX_MEMORY_KB, "total_physical_memory_kb": None}
    assert parse_sample(raw(counters=no_host_figure), now=NOW).sql_memory_mb == 2**31 - 1
    assert refusal(raw(counters={"target_server_memory_kb": MAX_MEMORY_KB + 1})) == (
        f"counters.target_server_memory_kb is {MAX_MEMORY_KB + 1}, expected bigint of at most {MAX_MEMORY_KB}")
    assert parse_sample(raw(counters={"total_server_memory_kb": -1}), now=NOW).sql_memory_mb is None  # unknown


def test_the_sql_types_own_range_for_converted_values() -> None:
    assert refusal(raw({"engine_edition": 2.0**31})) == (
        "instance.engine_edition is 2147483648.0, expected int from -2147483648 to 2147483647")


def test_floats_must_be_finite_numbers() -> None:
    assert parse_sample(raw(counters={"memory_used_percent": 61, "total_physical_memory_kb": None}),
                        now=NOW).memory_percent == 61.0  # fmt: skip
    for bad, shown in ((math.inf, "inf (float)"), (math.nan, "nan (float)"), ("61", "'61' (str)"),
                       (True, "True (bool)")):  # fmt: skip
        assert refusal(raw(counters={"memory_used_percent": bad})) == (
            f"counters.memory_used_percent is {shown}, expected a finite float")


def test_text_within_its_length_and_printable_where_stored() -> None:
    assert set(parse_sample(raw(waits=[("W" * 60, 1, 1, 0)]), now=NOW).waits) == {"W" * 60}
    assert refusal(raw(waits=[("W" * 61, 1, 1, 0)])) == (
        f"waits.wait_type has 61 characters, expected nvarchar(60): {'W' * 60!r}… (61 characters)")
    assert refusal(raw(waits=[("LCK\x00M", 1, 1, 0)])) == "waits.wait_type is 'LCK\\x00M', expected printable text"
    assert refusal(raw(waits=[(7, 1, 1, 0)])) == "waits.wait_type is 7 (int), expected nvarchar(60)"
    assert refusal(raw({"host_platform": "L" * 33})).startswith("instance.host_platform has 33 characters")


def test_other_times_must_be_datetimes() -> None:
    assert refusal(raw(cpu={"record_time_utc": "yesterday"})) == (
        "cpu.record_time_utc is 'yesterday' (str), expected datetime2")


def test_wait_counts_are_never_negative_and_a_type_counts_once() -> None:
    assert refusal(raw(waits=[("LCK_M_X", 5, -1, 0)])) == "waits.wait_time_ms is -1, expected bigint of 0 or more"
    assert refusal(raw(waits=[("LCK_M_X", 10, 100, 1), ("lck_m_x ", 1, 1, 1)])) == (
        "result set 'waits' has wait type 'LCK_M_X' more than once")
    # a repeated type without a count (or benign) adds nothing, so loses nothing
    waits = [("LCK_M_X", 10, 100, 1), ("lck_m_x", 0, 0, 0), ("SLEEP_TASK", 1, 1, 1), ("sleep_task", 2, 2, 2)]
    assert parse_sample(raw(waits=waits), now=NOW).waits == {"LCK_M_X": WaitCounts(10, 100, 1)}


def test_many_checked_wait_rows() -> None:
    waits = [(f"W{i:05d}", i + 1, 2 * i, i) for i in range(1500)]
    assert len(parse_sample(raw(waits=waits), now=NOW).waits) == 1500
    assert refusal(raw(waits=[*waits, ("X", "1", 1, 1)])) == "waits.waiting_tasks_count is '1' (str), expected bigint"


def test_a_sample_time_from_a_broken_clock_is_refused() -> None:
    day = dt.timedelta(days=1)
    for fine in (NOW - day, NOW + day):
        assert parse_sample(raw({"sample_time_utc": fine}), now=NOW).sample_time == fine
    second = dt.timedelta(seconds=1)
    assert refusal(raw({"sample_time_utc": NOW + day + second})) == (
        "sample_time_utc is 2026-06-02 12:00:01, more than a day from the collector's clock (2026-06-01 12:00:00 UTC):"
        " check the server's clock")
    assert "more than a day" in refusal(raw({"sample_time_utc": NOW - day - second}))
    assert refusal(raw({"sample_time_utc": dt.datetime(1999, 12, 31, 23, 59, 59)}), now=None) == (
        "sample_time_utc is 1999-12-31 23:59:59, before 2000: check the server's clock")


def test_a_text_contract_version_says_so() -> None:
    assert refusal(raw({"contract_version": str(CONTRACT_VERSION)})) == (
        f"instance.contract_version is '{CONTRACT_VERSION}' (str), expected int")


def test_a_rate_from_a_baseline_that_is_no_int_is_none_not_a_crash() -> None:
    sample = parse_sample(raw(), now=NOW)
    bogus = Baseline(sample.sqlserver_start_time, NOW - dt.timedelta(seconds=30), "1000")  # type: ignore[arg-type]
    deltas = compute(bogus, sample, 3600)
    assert deltas.batch_requests_per_sec is None and deltas.rebaselined == "counter reset"


def test_the_driver_without_a_diagnostic_and_invalid_utf16_are_protocol_errors() -> None:
    failure = classify(pyodbc.Error("HY000", "The driver did not supply an error!"), phase="query")
    assert (failure.error_class, failure.message) == (PROTOCOL, NO_MESSAGE)
    assert NO_MESSAGE == "the server reported an error without a message"
    undecodable = UnicodeDecodeError("utf-16-le", b"\x00\xd8", 0, 2, "illegal UTF-16 surrogate")
    assert classify(undecodable, phase="query").error_class == PROTOCOL
