"""Stored history is input too: the product's web app (or a person with ``sqlite3``) writes ``metric_snapshots``,
``counter_baselines``, ``server_status_events`` and ``wait_stats``, and SQLite stores any value in any column.
A value the collector would not have written costs at most that value: storing goes on for every server, a
child keeps running, ``server show`` and ``collect-once`` answer.

Real processes against the simulator: a tenant child (``python -m supervisor.children``) and the CLI. Mostly
on SQLite, where text lands in a time column; PostgreSQL refuses such text at the INSERT, but its float
columns take NaN and Infinity, which ``server show`` must not turn into invalid JSON.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from supervisor.children.records import SnapshotRow, WriteItem
from supervisor.children.spool import Spool
from supervisor.children.status import StatusUpdate
from supervisor.clock import stored_utc
from tests.helpers.cli import run_cli
from tests.helpers.deployment import TENANT, TenantDeployment
from tests.helpers.waiting import wait_until

#: Columns of a snapshot the tests plant next to the collector's own.
_SNAPSHOT = "INSERT INTO metric_snapshots(server_id, collected_at, cpu_percent) VALUES (:sid, :at, :cpu)"


def deployment_with(tmp_path: Path, simulator: Any, names: tuple[str, ...], url: str | None = None) -> TenantDeployment:
    sim = simulator([{"name": name} for name in names])
    deployment = TenantDeployment(
        tmp_path, "freetds", url or f"sqlite:///{tmp_path}/tenant.db", collection_interval=1, server_refresh_interval=1
    )
    for name in names:
        deployment.add(name, sim.ports[name])
    return deployment


def execute(deployment: TenantDeployment, sql: str, **params: Any) -> None:
    with deployment.engine.begin() as conn:
        conn.execute(text(sql), params)


def stored_snapshots(deployment: TenantDeployment) -> Counter[int]:
    """Per server, the snapshots whose time is a time (the planted ones left out)."""
    with deployment.engine.connect() as conn:
        rows = conn.execute(text("SELECT server_id, collected_at FROM metric_snapshots")).all()
    return Counter(server_id for server_id, at in rows if stored_utc(at) is not None)


def statuses(deployment: TenantDeployment) -> dict[int, str]:
    with deployment.engine.connect() as conn:
        return dict(conn.execute(text("SELECT id, status FROM servers")).all())


def loud_lines(deployment: TenantDeployment) -> list[dict[str, Any]]:
    return [e for e in deployment.log_events() if e.get("level") in ("WARNING", "ERROR", "CRITICAL")]


def test_a_snapshot_time_that_is_no_time_holds_back_no_write(tmp_path: Path, simulator, child_processes) -> None:
    """Issue B4: one ``collected_at = 'bogus'`` row of s1 stopped every write of the tenant. A spool left by an
    earlier run is replayed past it, and a spooled result that cannot be stored is dropped with one line (no
    traceback) instead of holding back the others."""
    deployment = deployment_with(tmp_path, simulator, ("s1", "s2"))
    ids = deployment.server_ids()
    s1, s2 = ids["s1"], ids["s2"]
    execute(deployment, _SNAPSHOT, sid=s1, at="bogus", cpu=5)
    execute(deployment, _SNAPSHOT, sid=s1, at=f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M}:xx", cpu=5)  # in range
    spooled_at = spool_earlier_results(deployment, s1, s2)

    child = child_processes(deployment)
    wait_until(lambda: min(stored_snapshots(deployment)[sid] for sid in (s1, s2)) >= 4, 30,
               lambda: loud_lines(deployment)[-5:])  # fmt: skip
    wait_until(lambda: not Spool(str(tmp_path / "spool"), TENANT).files(), 15, "the spool replayed")
    assert statuses(deployment) == {s1: "online", s2: "online"}
    with deployment.engine.connect() as conn:
        times = {stored_utc(at) for (at,) in conn.execute(text("SELECT collected_at FROM metric_snapshots"))}
    assert spooled_at <= times

    loud = loud_lines(deployment)
    assert [e["event"] for e in loud] == ["writer.rejected"], loud
    assert "exc_info" not in loud[0] and loud[0]["tenant"] == TENANT
    assert child.process.poll() is None
    assert child.terminate()[0] == 0
    assert not Spool(str(tmp_path / "spool"), TENANT).files()


def spool_earlier_results(deployment: TenantDeployment, *server_ids: int) -> set[dt.datetime]:
    """A spool file as a stopped child leaves it: one result per server, an hour old, and a line whose
    ``collected_at`` is a number (valid JSON, so it is read; it cannot be stored). Returns the good times."""
    spool = Spool(deployment.settings.spool_dir, TENANT)
    base = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(hours=1)
    items = [spooled_item(sid, base + dt.timedelta(seconds=n)) for n, sid in enumerate(server_ids)]
    path = spool.write(items)
    assert path is not None
    bad = items[0].to_json()
    bad["snapshot"]["collected_at"] = 5
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(bad) + "\n")
    return {item.snapshot.collected_at for item in items if item.snapshot is not None}


def spooled_item(server_id: int, at: dt.datetime) -> WriteItem:
    status = StatusUpdate(server_id, checked_at=at, status="online", status_changed=False, success=True,
                          consecutive_failures=0, error=None, error_class=None)  # fmt: skip
    snapshot = SnapshotRow(server_id, collected_at=at, cpu_percent=10, system_cpu_percent=None, memory_percent=50.0,
                           sql_memory_mb=1024, sql_target_memory_mb=2048, connection_count=7,
                           batch_requests_per_sec=None, interval_seconds=None, duration_ms=5)  # fmt: skip
    return WriteItem(server_id, status, snapshot)


def test_a_baseline_that_is_no_baseline_is_dropped_with_one_warning(
    tmp_path: Path, simulator, child_processes
) -> None:
    """Issue B5: a ``counter_baselines`` row with ``'bogus'`` times crashed the child at start, in a restart loop.
    Now that server starts with a first sample (one WARNING naming tenant, server and column), its rates follow,
    and its row is replaced; ``collect-once`` says the same on stderr and collects."""
    deployment = deployment_with(tmp_path, simulator, ("s1", "s2", "s3"))
    ids = deployment.server_ids()
    plant = ("INSERT INTO counter_baselines(server_id, sqlserver_start_time, sample_time, batch_requests_total, "
             "waits_json) VALUES (:sid, :start, :sample, :total, :waits)")
    good_time = "2026-01-01 00:00:00.000000"
    execute(deployment, plant, sid=ids["s1"], start="bogus", sample="bogus", total=5, waits="{}")
    execute(deployment, plant, sid=ids["s2"], start=good_time, sample=good_time, total="many", waits="{}")
    execute(deployment, plant, sid=ids["s3"], start=good_time, sample="9999-12-31 23:59:59", total=5, waits="[1]")

    once = run_cli("-c", str(deployment.config), "collect-once", TENANT, "s1", "--json", cwd=tmp_path)
    assert once.returncode == 0, once.stderr
    assert "counter_baselines.sqlserver_start_time = 'bogus' is not a time" in once.stderr
    assert json.loads(once.stdout)["batch_requests_per_sec"] is None
    execute(deployment, "UPDATE counter_baselines SET sample_time = 'bogus' WHERE server_id = :sid", sid=ids["s1"])

    child = child_processes(deployment)
    wait_until(lambda: min(rates(deployment).values(), default=0) >= 2 and len(rates(deployment)) == 3, 30,
               lambda: loud_lines(deployment)[-5:])  # fmt: skip
    dropped = [e for e in deployment.log_events() if e.get("event") == "collection.baseline_dropped"]
    assert sorted((e["server"], e["level"], e["tenant"]) for e in dropped) == [
        ("s1", "WARNING", TENANT), ("s2", "WARNING", TENANT), ("s3", "WARNING", TENANT)
    ]  # fmt: skip
    columns = {e["server"]: e["error"] for e in dropped}
    assert columns["s1"].startswith("counter_baselines.sample_time = 'bogus'")
    assert columns["s2"].startswith("counter_baselines.batch_requests_total = 'many'")
    assert columns["s3"].startswith("counter_baselines.waits_json = '[1]'")
    assert [e["event"] for e in loud_lines(deployment)] == ["collection.baseline_dropped"] * 3
    assert child.process.poll() is None
    assert child.terminate()[0] == 0
    with deployment.engine.connect() as conn:
        rows = conn.execute(text("SELECT sample_time, batch_requests_total FROM counter_baselines")).all()
    assert len(rows) == 3 and all(stored_utc(at) is not None and isinstance(total, int) for at, total in rows), rows
    assert all(stored_utc(at) < dt.datetime(9999, 1, 1) for at, _ in rows)  # type: ignore[operator]


def rates(deployment: TenantDeployment) -> dict[int, int]:
    """Per server, the snapshots with a rate (each server's first sample has none)."""
    with deployment.engine.connect() as conn:
        query = "SELECT server_id, count(*) FROM metric_snapshots WHERE batch_requests_per_sec IS NOT NULL GROUP BY 1"
        return dict(conn.execute(text(query)).all())


#: (SQL, parameters) planted into a history that has real snapshots: each one crashed ``server show`` or
#: ``collect-once`` (an internal error, exit 1) or made its JSON invalid.
def sqlite_plants(sid: int, now: dt.datetime) -> list[tuple[str, dict[str, Any]]]:
    recent = f"{now:%Y-%m-%d %H:%M:%S.%f}"  # after the collected snapshots
    garbled = f"{now - dt.timedelta(minutes=10):%Y-%m-%d %H:%M}:xx"  # in the window's range of text: no time
    return [
        (_SNAPSHOT, {"sid": sid, "at": "bogus", "cpu": 1}),  # newest by text order: was "latest"
        (_SNAPSHOT, {"sid": sid, "at": garbled, "cpu": 1}),  # julianday() NULL: no bucket
        (_SNAPSHOT, {"sid": sid, "at": recent, "cpu": 2**63 - 1}),  # SQLite's integer SUM would overflow
        ("UPDATE metric_snapshots SET cpu_percent = 'high' WHERE id = 1", {}),
        ("UPDATE metric_snapshots SET connection_count = x'00', memory_percent = 1e999 WHERE id = 2", {}),
        ("UPDATE metric_snapshots SET interval_seconds = 'x' WHERE id = 2", {}),
        ("INSERT INTO server_status_events(server_id, at, status, error) VALUES (:sid, :at, 'online', NULL)",
         {"sid": sid, "at": garbled}),
        ("INSERT INTO server_status_events(server_id, at, status, error) VALUES (:sid, :at, x'00', 123)",
         {"sid": sid, "at": recent}),
        ("UPDATE wait_stats SET wait_type = x'00ff' WHERE wait_type = "
         "(SELECT wait_type FROM wait_stats ORDER BY wait_time_ms DESC LIMIT 1)", {}),
        ("UPDATE wait_stats SET wait_time_ms = 'a' WHERE wait_type = (SELECT min(wait_type) FROM wait_stats)", {}),
    ]  # fmt: skip


def strict_json(document: str) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(document, parse_constant=refuse)


def show(deployment: TenantDeployment, tmp_path: Path, *extra: str) -> str:
    result = run_cli("-c", str(deployment.config), "server", "show", TENANT, "s1", "--since", "1h", *extra,
                     cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0 and not result.stderr, (extra, result.stderr)
    return result.stdout


def collect_twice(deployment: TenantDeployment, tmp_path: Path) -> None:
    """Two real snapshots (the second with wait rows: increments need a baseline)."""
    for _ in range(2):
        result = run_cli("-c", str(deployment.config), "collect-once", TENANT, "s1", cwd=tmp_path)
        assert result.returncode == 0, result.stderr


def test_server_show_and_collect_once_read_hostile_history(tmp_path: Path, simulator) -> None:
    deployment = deployment_with(tmp_path, simulator, ("s1",))
    collect_twice(deployment, tmp_path)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    for sql, params in sqlite_plants(deployment.server_ids()["s1"], now):
        execute(deployment, sql, **params)

    data = strict_json(show(deployment, tmp_path, "--json"))
    latest = data["latest"]
    assert latest["collected_at"] == f"{now.isoformat()}Z"
    assert latest["cpu_percent"] is None  # 2**63 - 1 is no CPU %
    assert data["window"]["snapshots"] == 3  # the two collected and the planted recent one
    assert data["summary"]["cpu_percent"]["max"] <= 100
    assert data["summary"]["connection_count"]["min"] == data["summary"]["connection_count"]["max"]
    assert {event["status"] for event in data["status_events"]} == {"online", "b'\\x00'"}
    assert data["status_events_in_window"] == len(data["status_events"])
    assert "b'\\x00\\xff'" in [wait["wait_type"] for wait in data["top_waits"]]

    page = show(deployment, tmp_path)
    assert "b'\\x00'" in page and "CPU %" in page
    pytest.importorskip("matplotlib")
    show(deployment, tmp_path, "--png", str(tmp_path / "history.png"))
    assert (tmp_path / "history.png").stat().st_size > 0

    again = run_cli("-c", str(deployment.config), "collect-once", TENANT, "s1", "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert stored_snapshots(deployment)[deployment.server_ids()["s1"]] == 4


def test_server_show_on_postgresql_skips_nan_and_infinity(tmp_path: Path, simulator, pg_database) -> None:
    """PostgreSQL refuses text in these columns, but a float column holds NaN and ±Infinity."""
    deployment = deployment_with(tmp_path, simulator, ("s1",), url=pg_database())
    collect_twice(deployment, tmp_path)
    execute(deployment, "UPDATE metric_snapshots SET memory_percent = 'NaN', batch_requests_per_sec = 'Infinity'")
    data = strict_json(show(deployment, tmp_path, "--json"))
    assert data["summary"]["memory_percent"] is None and data["summary"]["batch_requests_per_sec"] is None
    assert data["latest"]["memory_percent"] is None and data["summary"]["cpu_percent"] is not None


def test_invalid_utf8_in_a_server_row_costs_that_server_only(tmp_path: Path, simulator, child_processes) -> None:
    """SQLite stores any bytes as TEXT: a server's ``name`` (and another's ``host``) in invalid UTF-8, as a program
    that is not Python may write them. Each is its server's config error; the others are collected (the whole
    server list used to fail to decode, and the tenant collected nothing)."""
    deployment = deployment_with(tmp_path, simulator, ("good", "bad-name", "bad-host"))
    ids = deployment.server_ids()
    execute(deployment, "UPDATE servers SET name = CAST(X'626164FF' AS TEXT) WHERE id = :id", id=ids["bad-name"])
    execute(deployment, "UPDATE servers SET host = CAST(X'6C6F63616CFE' AS TEXT) WHERE id = :id", id=ids["bad-host"])
    child = child_processes(deployment)
    wait_until(lambda: stored_snapshots(deployment)[ids["good"]] >= 2, 30, lambda: loud_lines(deployment)[-5:])
    bad = (ids["bad-name"], ids["bad-host"])
    wait_until(lambda: all(statuses(deployment)[sid] == "offline" for sid in bad), 15, "the bad rows' config errors")
    with deployment.engine.connect() as conn:
        errors = dict(conn.execute(text("SELECT id, last_error FROM servers WHERE id IN (:a, :b)"),
                                   {"a": bad[0], "b": bad[1]}).all())  # fmt: skip
    assert "name" in errors[bad[0]] and "not valid UTF-8" in errors[bad[0]], errors
    assert "host" in errors[bad[1]] and "not valid UTF-8" in errors[bad[1]], errors
    assert stored_snapshots(deployment)[bad[0]] == stored_snapshots(deployment)[bad[1]] == 0
    listed = run_cli("-c", str(deployment.config), "server", "list", TENANT, "--json", cwd=tmp_path)
    assert listed.returncode == 0 and "bad\ufffd" in {s["name"] for s in json.loads(listed.stdout)}, listed
    assert child.terminate()[0] == 0
