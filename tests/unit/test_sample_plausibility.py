"""Figures that pass their column's check but cannot be what they claim: ``parse_sample`` makes them unknown (None,
or a wait type left out) and keeps the rest of the sample. Wait names are normalised without growing, so a name
that fits the tenant DB's column still fits after upper-casing."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from supervisor.children.column_checks import MAX_MEMORY_KB
from supervisor.children.errors import CollectionFailure
from supervisor.children.sample import (
    MAX_CPU_RECORD_AGE,
    MAX_CPU_RECORD_LEAD,
    MAX_MANAGED_INSTANCE_CPU_RECORD_AGE,
    Sample,
    WaitCounts,
    parse_sample,
    stored_wait_type,
)
from tests.unit.test_sample_checks import NOW
from tests.unit.test_sample_checks import raw as answer

SECOND = dt.timedelta(seconds=1)
GB_KB = 1 << 20
MANAGED_INSTANCE, AZURE_SQL_DATABASE = 8, 5


#: A 16 GB host and a CPU record half a minute old: the figures these tests move one at a time.
_HOST = {"total_physical_memory_kb": 16 * GB_KB, "available_physical_memory_kb": 4 * GB_KB,
         "total_server_memory_kb": 8 * GB_KB, "target_server_memory_kb": 10 * GB_KB}  # fmt: skip


def raw(instance: dict[str, Any] | None = None, counters: dict[str, Any] | None = None,
        waits: list[tuple[Any, ...]] | None = None, cpu: dict[str, Any] | None = None,
        ) -> list[tuple[list[str], list[list[Any]]]]:  # fmt: skip
    return answer(instance, {**_HOST, **(counters or {})}, waits, {"record_time_utc": NOW - 30 * SECOND, **(cpu or {})})


def sample(**sets: Any) -> Sample:
    return parse_sample(raw(**sets), now=NOW)


# -- wait type names --------------------------------------------------------------------------------------------


def test_upper_casing_changes_ascii_letters_only_so_no_name_grows_past_its_column() -> None:
    names = ["ß" * 60, "ﬀ" * 40, "ЛОК_ОЖИДАНИЕ", "lck_m_x", "Straße", " writelog "]
    waits = sample(waits=[(name, i + 1, 100 * (i + 1), 0) for i, name in enumerate(names)]).waits
    assert waits == {
        "ß" * 60: WaitCounts(1, 100, 0),  # .upper() made it 'SS' * 60: 120 characters, past VARCHAR(60)
        "ﬀ" * 40: WaitCounts(2, 200, 0),
        "ЛОК_ОЖИДАНИЕ": WaitCounts(3, 300, 0),
        "LCK_M_X": WaitCounts(4, 400, 0),
        "STRAßE": WaitCounts(5, 500, 0),  # not 'STRASSE'
        "WRITELOG": WaitCounts(6, 600, 0),
    }
    assert max(map(len, waits)) == 60


def test_names_differing_in_ascii_case_are_one_type_others_stay_apart() -> None:
    with pytest.raises(CollectionFailure, match="has wait type 'LCK_M_X' more than once"):
        sample(waits=[("LCK_M_X", 1, 1, 0), ("lck_m_x", 1, 1, 0)])
    assert set(sample(waits=[("STRASSE", 1, 1, 0), ("straße", 1, 1, 0)]).waits) == {"STRASSE", "STRAßE"}


def test_a_name_unstorable_after_normalising_is_left_out_not_the_sample() -> None:
    assert stored_wait_type("ß" * 60) == "ß" * 60
    assert stored_wait_type(" lck_m_x\t") == "LCK_M_X"
    for unstorable in ("W" * 61, "LCK\x00M", "", "   ", None):
        assert stored_wait_type(unstorable) is None, unstorable


# -- NULL wait counters -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("row", [("LCK_M_X", None, 9000, 10), ("LCK_M_X", 100, None, 10), ("LCK_M_X", 100, 9000, None),
                                 ("LCK_M_X", 100, None, None)])  # fmt: skip
def test_a_wait_row_with_a_null_counter_is_unknown_not_zero(row: tuple[Any, ...]) -> None:
    parsed = sample(waits=[row, ("WRITELOG", 5, 50, 1)])
    assert parsed.waits == {"WRITELOG": WaitCounts(5, 50, 1)}
    assert parsed.unknown_waits == {"LCK_M_X"}


def test_a_zero_count_with_null_times_is_nothing_happened_and_a_null_row_still_counts_as_the_type() -> None:
    parsed = sample(waits=[("LCK_M_X", 0, None, None)])
    assert (parsed.waits, parsed.unknown_waits) == ({}, frozenset())
    with pytest.raises(CollectionFailure, match="more than once"):
        sample(waits=[("LCK_M_X", 5, None, 0), ("lck_m_x", 5, 1, 0)])


# -- CPU records that are not current ---------------------------------------------------------------------------


def cpu_at(record_time: dt.datetime | None, engine_edition: int = 3, sql: int = 97) -> tuple[int | None, int | None]:
    idle = None if engine_edition == MANAGED_INSTANCE else 1  # Managed Instance has no idle figure
    record = {"record_time_utc": record_time, "sql_cpu_percent": sql, "system_idle_percent": idle}
    parsed = sample(instance={"engine_edition": engine_edition}, cpu=record)
    return parsed.cpu_percent, parsed.system_cpu_percent


def test_a_stale_or_future_cpu_record_is_no_cpu_figure() -> None:
    assert cpu_at(NOW - dt.timedelta(hours=6)) == (None, None)
    assert cpu_at(NOW + dt.timedelta(hours=3), sql=88) == (None, None)
    assert cpu_at(NOW - MAX_CPU_RECORD_AGE) == (97, 99)
    assert cpu_at(NOW - MAX_CPU_RECORD_AGE - SECOND) == (None, None)
    assert cpu_at(NOW + MAX_CPU_RECORD_LEAD) == (97, 99)
    assert cpu_at(NOW + MAX_CPU_RECORD_LEAD + SECOND) == (None, None)
    assert cpu_at(NOW - 6 * dt.timedelta(minutes=1), AZURE_SQL_DATABASE) == (None, None)


def test_a_managed_instance_record_published_minutes_late_is_current() -> None:
    assert cpu_at(NOW - dt.timedelta(minutes=12), MANAGED_INSTANCE) == (97, None)
    assert cpu_at(NOW - MAX_MANAGED_INSTANCE_CPU_RECORD_AGE, MANAGED_INSTANCE) == (97, None)
    assert cpu_at(NOW - MAX_MANAGED_INSTANCE_CPU_RECORD_AGE - SECOND, MANAGED_INSTANCE) == (None, None)


def test_record_age_is_judged_in_utc_and_a_record_without_a_time_is_taken() -> None:
    plus2 = dt.timezone(dt.timedelta(hours=2))
    assert cpu_at((NOW + dt.timedelta(hours=2)).replace(tzinfo=plus2)) == (97, 99)  # NOW in UTC
    assert cpu_at(NOW.replace(tzinfo=plus2)) == (None, None)  # 2 h before NOW
    assert cpu_at(None) == (97, 99)


def test_cpu_out_of_range_is_clamped_as_metrics_md_says() -> None:
    busy = sample(cpu={"sql_cpu_percent": 250, "system_idle_percent": -40})
    assert (busy.cpu_percent, busy.system_cpu_percent) == (100, 100)
    idle = sample(cpu={"sql_cpu_percent": -30, "system_idle_percent": 180})
    assert (idle.cpu_percent, idle.system_cpu_percent) == (0, 0)


def test_a_stale_record_leaves_the_rest_of_the_sample() -> None:
    parsed = sample(cpu={"record_time_utc": NOW - dt.timedelta(hours=6)}, waits=[("WRITELOG", 5, 50, 1)])
    assert (parsed.memory_percent, parsed.connection_count, set(parsed.waits)) == (75.0, 12, {"WRITELOG"})


# -- memory figures ---------------------------------------------------------------------------------------------


def test_available_memory_above_the_total_or_negative_is_unknown() -> None:
    assert sample(counters={"available_physical_memory_kb": 32 * GB_KB}).memory_percent is None  # was 0.0
    assert sample(counters={"available_physical_memory_kb": 16 * GB_KB + 1}).memory_percent is None
    assert sample(counters={"available_physical_memory_kb": -5}).memory_percent is None  # was 100.0
    assert sample(counters={"available_physical_memory_kb": 16 * GB_KB}).memory_percent == 0.0
    assert sample(counters={"available_physical_memory_kb": 0}).memory_percent == 100.0


def test_sql_server_memory_above_the_hosts_physical_memory_is_unknown() -> None:
    huge = sample(counters={"total_server_memory_kb": 64 << 30, "target_server_memory_kb": 16 * GB_KB + 1})
    assert (huge.sql_memory_mb, huge.sql_target_memory_mb) == (None, None)  # was 67,108,864 MB on a 16 GB host
    all_of_it = sample(counters={"total_server_memory_kb": 16 * GB_KB, "target_server_memory_kb": 16 * GB_KB})
    assert (all_of_it.sql_memory_mb, all_of_it.sql_target_memory_mb) == (16384, 16384)
    assert huge.memory_percent == 75.0 and huge.connection_count == 12


@pytest.mark.parametrize("physical", [None, 0, -1])
def test_without_a_host_figure_sql_server_memory_is_judged_by_its_column_alone(physical: int | None) -> None:
    parsed = sample(counters={"total_physical_memory_kb": physical, "available_physical_memory_kb": None,
                              "total_server_memory_kb": MAX_MEMORY_KB})  # fmt: skip
    assert parsed.sql_memory_mb == 2**31 - 1
