"""The simulator driven by real clients: pyodbc with Microsoft ODBC Driver 18 and with FreeTDS."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyodbc
import pytest

from supervisor.procedures.resultsets import ADHOC_BATCH_MARKER, PROCEDURE_QUALIFIED_NAME, RESULT_SETS
from tests.helpers.simulator import Simulator, StartSimulator
from tests.sim.odbc import connection_string, result_sets

RATE = 1234.0
SERVERS: list[dict[str, Any]] = [
    {"name": "plain", "profile": {"batch_requests_per_sec": RATE, "cpu_percent": [20, 30]}},
    {"name": "linux", "host_platform": "Linux"},
    {"name": "fresh", "profile": {"uptime_seconds": 0, "cpu_record_on_start": False}},
    {"name": "no-proc", "procedure_installed": False},
    {"name": "denied", "faults": {"permission_denied": True}},
    {"name": "slow", "faults": {"slow_query_ms": 4000}},
    {"name": "refusing", "faults": {"login_failed": True}},
    {"name": "blackhole", "faults": {"blackhole": True}},
    {"name": "cut", "faults": {"disconnect_mid_result": True}},
    {"name": "slow-login", "faults": {"slow_login_ms": 5000}},
]
PROCEDURE_CALL = f"{{CALL {PROCEDURE_QUALIFIED_NAME}}}"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    simulator = Simulator(Path(tmp_path_factory.mktemp("fleet")), [dict(s) for s in SERVERS])
    simulator.start()
    yield simulator
    assert simulator.stop() == 0


def connect(sim: Simulator, driver: str, name: str, **kwargs: object) -> pyodbc.Connection:
    return pyodbc.connect(connection_string(driver, sim.ports[name], **kwargs), timeout=5)  # type: ignore[arg-type]


def check_snapshot(sets: list[tuple[list[str], list[tuple[object, ...]]]]) -> dict[str, list[dict[str, object]]]:
    """The four contract result sets, each row checked against the documented column types."""
    assert [names for names, _rows in sets] == [list(rs.column_names) for rs in RESULT_SETS]
    parsed: dict[str, list[dict[str, object]]] = {}
    for result_set, (_names, rows) in zip(RESULT_SETS, sets, strict=True):
        parsed[result_set.name] = []
        for row in rows:
            for column, value in zip(result_set.columns, row, strict=True):
                if value is None:
                    assert column.nullable, column.name
                else:
                    assert type(value) is column.python_type, (column.name, value)
            parsed[result_set.name].append(dict(zip(result_set.column_names, row, strict=True)))
    assert len(parsed["instance"]) == 1 and len(parsed["counters"]) == 1
    return parsed


def snapshot(cursor: pyodbc.Cursor, how: str = "rpc") -> dict[str, list[dict[str, object]]]:
    if how == "rpc":
        cursor.execute(PROCEDURE_CALL)
    elif how == "exec":
        cursor.execute(f"EXEC {PROCEDURE_QUALIFIED_NAME}")
    else:
        cursor.execute(f"{ADHOC_BATCH_MARKER}\nSET NOCOUNT ON;\nSELECT 1 -- body elided")
    return check_snapshot(result_sets(cursor))


@pytest.mark.parametrize("how", ["rpc", "exec", "adhoc"])
def test_collection_returns_contract_sets(sim: Simulator, driver: str, how: str) -> None:
    with connect(sim, driver, "plain") as conn:
        data = snapshot(conn.cursor(), how)
    instance = data["instance"][0]
    assert instance["server_name"] == "plain"
    assert instance["host_platform"] == "Windows"
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    assert abs((instance["sample_time_utc"] - now).total_seconds()) < 5  # type: ignore[operator]
    (cpu,) = data["cpu"]
    assert 20 <= cpu["sql_cpu_percent"] <= 30  # type: ignore[operator]
    assert 0 < cpu["sql_cpu_percent"] + cpu["system_idle_percent"] <= 100  # type: ignore[operator]
    counters = data["counters"][0]
    assert counters["batch_requests_total"] > RATE * 3600  # type: ignore[operator]  # default uptime: a day
    assert 0 < counters["available_physical_memory_kb"] < counters["total_physical_memory_kb"]  # type: ignore[operator]
    wait_types = {row["wait_type"] for row in data["waits"]}
    assert {"PAGEIOLATCH_SH", "WRITELOG", "SOS_SCHEDULER_YIELD"} <= wait_types
    assert {"SLEEP_TASK", "LAZYWRITER_SLEEP"} <= wait_types  # benign ones, for the collector's filter


def test_batch_request_rate_matches_profile(sim: Simulator, driver: str) -> None:
    with connect(sim, driver, "plain") as conn:
        cursor = conn.cursor()
        first = snapshot(cursor)
        time.sleep(2)
        second = snapshot(cursor)
    seconds = (second["instance"][0]["sample_time_utc"] - first["instance"][0]["sample_time_utc"]).total_seconds()  # type: ignore[operator]
    delta = second["counters"][0]["batch_requests_total"] - first["counters"][0]["batch_requests_total"]  # type: ignore[operator]
    assert seconds > 1.5
    assert delta / seconds == pytest.approx(RATE, rel=0.10)
    waits_before = {w["wait_type"]: w["waiting_tasks_count"] for w in first["waits"]}
    for wait in second["waits"]:
        assert wait["waiting_tasks_count"] >= waits_before[wait["wait_type"]]  # type: ignore[operator]


def test_linux_host_has_no_idle_figure(sim: Simulator, driver: str) -> None:
    with connect(sim, driver, "linux") as conn:
        data = snapshot(conn.cursor())
    assert data["instance"][0]["host_platform"] == "Linux"
    assert data["cpu"][0]["system_idle_percent"] == 0


def test_no_cpu_record_in_first_minute_when_configured(sim: Simulator, driver: str) -> None:
    with connect(sim, driver, "fresh") as conn:
        data = snapshot(conn.cursor())
    assert data["cpu"] == []
    assert data["counters"][0]["batch_requests_total"] < 500 * 120  # type: ignore[operator]


def test_wrong_password_is_refused(sim: Simulator, driver: str) -> None:
    with pytest.raises(pyodbc.Error) as caught:
        connect(sim, driver, "plain", password="wrong")
    expected_state = "28000" if driver == "msodbc18" else "42000"
    assert caught.value.args[0] == expected_state
    assert "18456" in caught.value.args[1] and "Login failed for user 'collector'" in caught.value.args[1]


def test_login_failed_fault_refuses_correct_password(sim: Simulator, driver: str) -> None:
    with pytest.raises(pyodbc.Error, match="18456"):
        connect(sim, driver, "refusing")


def test_unknown_object_gives_208(sim: Simulator, driver: str) -> None:
    with connect(sim, driver, "plain") as conn, pytest.raises(pyodbc.Error) as caught:
        conn.cursor().execute("SELECT * FROM dbo.no_such_table")
    assert caught.value.args[0] == "42S02"
    assert "Invalid object name 'dbo.no_such_table'. (208)" in caught.value.args[1]


@pytest.mark.parametrize("how", ["rpc", "exec"])
def test_missing_procedure_gives_2812_but_adhoc_batch_works(sim: Simulator, driver: str, how: str) -> None:
    with connect(sim, driver, "no-proc") as conn:
        cursor = conn.cursor()
        with pytest.raises(pyodbc.Error, match=r"Could not find stored procedure 'collector.usp_collect_snapshot'"
                           r"\. \(2812\)"):
            snapshot(cursor, how)
        assert snapshot(cursor, "adhoc")["instance"][0]["server_name"] == "no-proc"


def test_permission_denied_gives_300_and_297(sim: Simulator, driver: str) -> None:
    with connect(sim, driver, "denied") as conn:
        cursor = conn.cursor()
        for how in ("rpc", "adhoc"):
            with pytest.raises(pyodbc.Error) as caught:
                snapshot(cursor, how)
            text = str(caught.value)
            if driver == "freetds":  # FreeTDS reports the last of the two errors
                assert "The user does not have permission to perform this action. (297)" in text
            else:
                # SQL Server 2022 (the default version) names the granular permission
                assert ("VIEW SERVER PERFORMANCE STATE permission was denied on object 'server', database 'master'."
                        " (300)" in text)
        cursor.execute("SELECT 1")
        assert cursor.fetchone()[0] == 1


def test_query_timeout_on_slow_query_then_connection_still_works(sim: Simulator, driver: str) -> None:
    with connect(sim, driver, "slow") as conn:
        conn.timeout = 1
        cursor = conn.cursor()
        started = time.monotonic()
        with pytest.raises(pyodbc.Error) as caught:
            cursor.execute(PROCEDURE_CALL)
        assert caught.value.args[0] == "HYT00"
        assert time.monotonic() - started < 3.5
        cursor.execute("SELECT 42")
        assert cursor.fetchone()[0] == 42


def test_blackhole_gives_login_timeout(sim: Simulator, driver: str) -> None:
    started = time.monotonic()
    with pytest.raises(pyodbc.Error):
        pyodbc.connect(connection_string(driver, sim.ports["blackhole"]), timeout=2)
    assert time.monotonic() - started >= 1.5


def test_disconnect_mid_result_is_a_clean_error(sim: Simulator, driver: str) -> None:
    conn = connect(sim, driver, "cut")
    conn.autocommit = True
    cursor = conn.cursor()
    cursor.execute("SELECT 1")
    started = time.monotonic()
    with pytest.raises(pyodbc.Error) as caught:
        result_sets(cursor.execute(PROCEDURE_CALL))
    assert time.monotonic() - started < 3
    assert caught.value.args[0] in ("08S01", "HY000", "08S02")
    conn.close()


def test_probe_statements(sim: Simulator, driver: str) -> None:
    with connect(sim, driver, "plain") as conn:
        cursor = conn.cursor()
        assert "Microsoft SQL Server 2022" in cursor.execute("SELECT @@VERSION").fetchone()[0]
        row = cursor.execute("SELECT SERVERPROPERTY('ProductVersion'), SERVERPROPERTY('EngineEdition') AS ee, "
                             "schema_name()").fetchone()
        assert tuple(row) == ("16.0.4135.4", 3, "dbo")
        cursor.execute("SET NOCOUNT ON; SET ARITHABORT ON")
        level = cursor.execute("SELECT CASE transaction_isolation_level WHEN 2 THEN 'READ COMMITTED' END "
                               "AS TRANSACTION_ISOLATION_LEVEL FROM sys.dm_exec_sessions "
                               "where session_id = @@SPID").fetchone()[0]
        assert level == "READ COMMITTED"
        assert tuple(cursor.execute("SELECT ? AS a, ? AS b", 7, "x").fetchone()) == (7, "x")
        conn.commit()
        conn.rollback()
        with pytest.raises(pyodbc.Error, match=r"Could not find stored procedure 'dbo.nothing'"):
            cursor.execute("EXEC dbo.nothing")


def test_deploy_script_installs_the_procedure(simulator: StartSimulator, driver: str) -> None:
    sim = simulator([{"name": "bare", "procedure_installed": False}])
    with connect(sim, driver, "bare") as conn:
        cursor = conn.cursor()
        with pytest.raises(pyodbc.Error, match="2812"):
            snapshot(cursor)
        cursor.execute("IF SCHEMA_ID(N'collector') IS NULL EXEC(N'CREATE SCHEMA collector');\n"
                       "EXEC(N'CREATE OR ALTER PROCEDURE collector.usp_collect_snapshot AS SELECT 1')")
        cursor.execute("CREATE OR ALTER PROCEDURE [collector].[usp_collect_snapshot]\nAS\nBEGIN\nSELECT 1;\nEND")
        assert snapshot(cursor)["instance"][0]["server_name"] == "bare"


def test_slow_login_gives_login_timeout(sim: Simulator, driver: str) -> None:
    started = time.monotonic()
    with pytest.raises(pyodbc.OperationalError) as raised:
        pyodbc.connect(connection_string(driver, sim.ports["slow-login"]), timeout=1)
    elapsed = time.monotonic() - started
    sqlstate, message = raised.value.args[:2]
    assert sqlstate == "HYT00" and "timeout expired" in message.lower(), message
    assert 1.0 <= elapsed < 5.0, elapsed  # the driver's 1 s login timeout, not the server's answer at 5 s


def test_attention_on_idle_connection_is_acknowledged(sim: Simulator, driver: str) -> None:
    with connect(sim, driver, "plain") as conn:
        cursor = conn.cursor()
        cursor.execute("SELECT 1").fetchall()
        cursor.cancel()
        assert cursor.execute("SELECT 2").fetchone()[0] == 2


def test_unparseable_request_keeps_the_session(sim: Simulator, driver: str) -> None:
    with connect(sim, driver, "plain") as conn:
        cursor = conn.cursor()
        with pytest.raises(pyodbc.Error, match="102"):
            cursor.execute("MERGE nonsense")
        assert cursor.execute("SELECT 3").fetchone()[0] == 3
