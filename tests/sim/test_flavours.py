"""The simulator plays each SQL Server flavour (``sqlserver_sim/flavours.py``): the shipped collection runs on
every one and gives what that flavour has; a collection written for another flavour fails as SQL Server fails
it (208 for a view it lacks, when the statement runs; 207 for a column a view lacks, before anything runs;
300/262 and 297 without the permission); logins go to the database they ask for. Real drivers, a real process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyodbc
import pytest

from supervisor.procedures import tsql
from supervisor.procedures.catalog import AZURE_SQL_DATABASE, BOXED, MANAGED_INSTANCE
from supervisor.procedures.resultsets import ADHOC_BATCH_MARKER, PROCEDURE_QUALIFIED_NAME, RESULT_SETS
from tests.helpers.drivers import driver_setting
from tests.helpers.simulator import SIM_PASSWORD, SIM_USER, Simulator

AZURE = {"engine_edition": 5, "edition": "SQL Azure", "version": "12.0.2000.8", "databases": ["master", "sales"]}
MI = {"engine_edition": 8, "edition": "SQL Azure", "version": "16.0.5100.0"}
SERVERS: list[dict[str, Any]] = [
    {"name": "box2016", "version": "13.0.7000.253"},
    {"name": "box2016-deploy", "version": "13.0.7000.253"},
    {"name": "box2019-linux", "version": "15.0.4385.2", "host_platform": "Linux"},
    {"name": "box2022", "version": "16.0.4135.4"},
    {"name": "mi", **MI},
    {"name": "azure", **AZURE},
    {"name": "azure-pool", **AZURE, "elastic_pool": True},
    {"name": "box2019-nogrant", "version": "15.0.4385.2", "grants": []},
    {"name": "box2019-granular-only", "version": "15.0.4385.2", "grants": ["VIEW SERVER PERFORMANCE STATE"]},
    {"name": "box2022-granular", "version": "16.0.4135.4", "grants": ["VIEW SERVER PERFORMANCE STATE"]},
    {"name": "box2022-nogrant", "version": "16.0.4135.4", "grants": []},
    {"name": "azure-nogrant", **AZURE, "grants": []},
]
FLAVOUR_OF = {"box2016": BOXED, "box2019-linux": BOXED, "box2022": BOXED, "mi": MANAGED_INSTANCE,
              "azure": AZURE_SQL_DATABASE}  # fmt: skip


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    simulator = Simulator(Path(tmp_path_factory.mktemp("flavours")), [dict(s) for s in SERVERS])
    simulator.start()
    yield simulator
    assert simulator.stop() == 0


def connect(sim: Simulator, driver: str, name: str, database: str = "master") -> pyodbc.Connection:
    port = sim.ports[name]
    password = SIM_PASSWORD
    if driver == "msodbc18":
        text = (f"DRIVER={{{driver_setting(driver)}}};SERVER=127.0.0.1,{port};UID={SIM_USER};"
                f"PWD={{{password.replace('}', '}}')}}};Encrypt=no;DATABASE={{{database}}};")
    else:
        text = (f"DRIVER={{FreeTDS}};SERVER=127.0.0.1;PORT={port};UID={SIM_USER};PWD={{{password}}};"
                f"TDS_Version=7.4;DATABASE={{{database}}};")
    return pyodbc.connect(text, timeout=5, autocommit=True)


def collect(conn: pyodbc.Connection, text: str) -> dict[str, list[dict[str, Any]]]:
    cursor = conn.cursor()
    cursor.execute(text)
    sets = []
    while True:
        if cursor.description is not None:
            sets.append([dict(zip([c[0] for c in cursor.description], row, strict=True)) for row in cursor.fetchall()])
        if not cursor.nextset():
            break
    assert len(sets) == len(RESULT_SETS)
    return {result_set.name: rows for result_set, rows in zip(RESULT_SETS, sets, strict=True)}


def failure(conn: pyodbc.Connection, text: str) -> str:
    with pytest.raises(pyodbc.Error) as caught:
        collect(conn, text)
    return str(caught.value)


@pytest.mark.parametrize("name", list(FLAVOUR_OF))
def test_shipped_collection_gives_what_each_flavour_has(sim: Simulator, driver: str, name: str) -> None:
    database = "sales" if name == "azure" else "master"
    with connect(sim, driver, name, database) as conn:
        data = collect(conn, tsql.snapshot_batch())
        assert collect(conn, f"EXEC {PROCEDURE_QUALIFIED_NAME}").keys() == data.keys()
        assert collect(conn, tsql.flavour_batch(FLAVOUR_OF[name]))["instance"][0]["server_name"] == name
    instance, (cpu,), (counters,) = data["instance"][0], data["cpu"], data["counters"]
    assert instance["database_name"] == database
    assert instance["engine_edition"] == {"azure": 5, "mi": 8}.get(name, 3)
    assert {w["wait_type"] for w in data["waits"]} >= {"WRITELOG", "PAGEIOLATCH_SH"}
    assert counters["batch_requests_total"] > 0 and counters["total_server_memory_kb"] > 0
    flavour = FLAVOUR_OF[name]
    if flavour == AZURE_SQL_DATABASE:  # no host view: percentages of the service tier, this database's sessions
        assert counters["total_physical_memory_kb"] is None and counters["available_physical_memory_kb"] is None
        assert 0 <= counters["memory_used_percent"] <= 100 and counters["user_connections"] >= 1
        assert cpu["record_id"] is None and cpu["system_idle_percent"] is None
        assert 0 <= cpu["sql_cpu_percent"] <= cpu["host_cpu_percent"] <= 100
    elif flavour == MANAGED_INSTANCE:  # sys.server_resource_stats: no record id, no host figure
        assert cpu["record_id"] is None and cpu["system_idle_percent"] is None and cpu["host_cpu_percent"] is None
        assert counters["total_physical_memory_kb"] > 0 and counters["memory_used_percent"] is None
    else:  # the ring buffer
        assert cpu["record_id"] >= 1 and cpu["host_cpu_percent"] is None
        assert counters["total_physical_memory_kb"] > 0 and counters["memory_used_percent"] is None
        assert (cpu["system_idle_percent"] == 0) == (name == "box2019-linux")


@pytest.mark.parametrize(
    ("name", "written_for", "refused"),
    [
        ("box2022", AZURE_SQL_DATABASE, "sys.dm_db_resource_stats"),
        ("box2016", MANAGED_INSTANCE, "sys.server_resource_stats"),
        ("mi", AZURE_SQL_DATABASE, "sys.dm_db_resource_stats"),
        ("azure", BOXED, "sys.dm_os_sys_memory"),
        ("azure", MANAGED_INSTANCE, "sys.server_resource_stats"),
    ],
)
def test_a_wrong_flavour_s_collection_fails_like_sql_server(
    sim: Simulator, driver: str, name: str, written_for: str, refused: str
) -> None:
    with connect(sim, driver, name, "sales" if name == "azure" else "master") as conn:
        text = failure(conn, tsql.flavour_batch(written_for))
        assert f"Invalid object name '{refused}'. (208)" in text
        assert collect(conn, tsql.snapshot_batch())["instance"][0]["server_name"] == name  # the session is fine


def test_deferred_name_resolution_and_compile_errors(sim: Simulator, driver: str) -> None:
    with connect(sim, driver, "box2016-deploy") as conn:
        # A view only 2017+ has, in a branch that does not run: nothing fails.
        guarded = tsql.snapshot_batch().replace(
            "IF @engine_edition = 5\n", "IF @engine_edition = 99\nBEGIN\n    SELECT hi.host_platform AS p "
            "FROM sys.dm_os_host_info AS hi;\nEND\nELSE IF @engine_edition = 5\n", 1)
        assert collect(conn, guarded)["instance"][0]["server_name"] == "box2016-deploy"
        # A column a view lacks, even in a branch that does not run (the first branch is Azure SQL Database's),
        # fails the whole batch before any result set; of a view this server lacks, SQL Server cannot tell.
        typo = tsql.snapshot_batch().replace("pc.cntr_value", "pc.counter_value", 1)
        assert typo.index("pc.counter_value") < typo.index("ELSE IF @engine_edition = 8")
        assert "Invalid column name 'counter_value'. (207)" in failure(conn, typo)
        unseen = tsql.snapshot_batch().replace("srs.avg_cpu_percent", "srs.avg_cpu", 1)
        assert collect(conn, unseen)["instance"][0]["server_name"] == "box2016-deploy"
        # Deployed: the Azure-only procedure is created (deferred resolution) and fails when it runs.
        azure_only = tsql.flavour_batch(AZURE_SQL_DATABASE).replace(ADHOC_BATCH_MARKER, "")
        cursor = conn.cursor()
        cursor.execute(f"CREATE OR ALTER PROCEDURE {PROCEDURE_QUALIFIED_NAME}\nAS\nBEGIN\n{azure_only}\nEND;\n")
        refused = failure(conn, f"EXEC {PROCEDURE_QUALIFIED_NAME}")
        assert "Invalid object name 'sys.dm_db_resource_stats'. (208)" in refused
        with pytest.raises(pyodbc.Error, match=r"Invalid column name 'counter_value'"):
            cursor.execute(f"CREATE OR ALTER PROCEDURE {PROCEDURE_QUALIFIED_NAME}\nAS\n{typo}")
        cursor.execute(tsql.install_batches()[-1])  # the shipped one again
        assert collect(conn, f"EXEC {PROCEDURE_QUALIFIED_NAME}")["cpu"][0]["record_id"] >= 1


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("box2019-nogrant", "VIEW SERVER STATE permission was denied on object 'server', database 'master'. (300)"),
        ("box2019-granular-only", "VIEW SERVER STATE permission was denied on object 'server'"),
        ("box2022-nogrant", "VIEW SERVER PERFORMANCE STATE permission was denied on object 'server'"),
        ("azure-nogrant", "VIEW DATABASE STATE permission denied in database 'sales'. (262)"),
    ],
)
def test_permissions_per_flavour_and_version(sim: Simulator, driver: str, name: str, expected: str) -> None:
    with connect(sim, driver, name, "sales" if name.startswith("azure") else "master") as conn:
        text = failure(conn, tsql.snapshot_batch())
    if driver == "msodbc18":  # Driver 18 reports the first of the two errors, FreeTDS the last
        assert expected in text
    else:
        assert "The user does not have permission to perform this action. (297)" in text


@pytest.mark.parametrize("name", ["box2022-granular", "azure-pool"])
def test_the_least_permission_suffices(sim: Simulator, driver: str, name: str) -> None:
    """SQL Server 2022: VIEW SERVER PERFORMANCE STATE alone; an elastic pool: VIEW DATABASE STATE for the views
    the collection reads (none of them is a server-level one there)."""
    with connect(sim, driver, name, "sales" if name.startswith("azure") else "master") as conn:
        assert collect(conn, tsql.snapshot_batch())["instance"][0]["server_name"] == name


def test_an_elastic_pool_refuses_server_level_views(sim: Simulator, driver: str) -> None:
    waits = "SELECT ws.wait_type AS w FROM sys.dm_os_wait_stats AS ws;"
    with connect(sim, driver, "azure-pool", "sales") as conn:
        cursor = conn.cursor()
        with pytest.raises(pyodbc.Error, match=r"VIEW SERVER PERFORMANCE STATE permission was denied|\(297\)"):
            cursor.execute(f"{ADHOC_BATCH_MARKER}\n{waits}")
    with connect(sim, driver, "azure", "sales") as conn:  # a single database: VIEW DATABASE STATE suffices
        conn.cursor().execute(f"{ADHOC_BATCH_MARKER}\n{tsql.flavour_batch(AZURE_SQL_DATABASE)}")


def test_login_goes_to_the_database(sim: Simulator, driver: str) -> None:
    with connect(sim, driver, "azure", "sales") as conn:
        assert conn.cursor().execute("SELECT DB_NAME()").fetchone()[0] == "sales"
    with pytest.raises(pyodbc.Error) as caught:
        connect(sim, driver, "azure", "hr")
    assert "18456" in str(caught.value) or "4060" in str(caught.value)
