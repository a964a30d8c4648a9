"""``server show`` on stored history written straight into the tenant DB, on SQLite and PostgreSQL: the
database's buckets hold exactly the snapshots of their time range, the summary is over the raw snapshots, top
waits and status events come from the window only, and a removed server's history can still be shown."""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import create_engine, insert, select
from sqlalchemy.pool import NullPool

from supervisor.clock import utcnow
from supervisor.storage.tenant_schema import metric_snapshots, server_status_events, servers, wait_stats
from tests.cli.conftest import Workspace


def _store_history(workspace: Workspace) -> dt.datetime:
    """Two hours of snapshots every 30 s ending now: CPU = minute of the hour, connections = 7, a batch rate on
    all but the first; two waits each; an outage event 90 minutes ago (outside a 1 h window) and one 10 minutes
    ago (inside)."""
    engine = create_engine(workspace.tenant_url("acme"), poolclass=NullPool)
    now = utcnow().replace(microsecond=0)
    with engine.begin() as conn:
        server_id = conn.execute(select(servers.c.id).where(servers.c.name == "sql01")).scalar_one()
        rows = []
        for i in range(240):
            at = now - dt.timedelta(seconds=30 * (239 - i))
            rows.append(dict(
                server_id=server_id, collected_at=at, cpu_percent=at.minute, memory_percent=50.0 + (i % 2),
                connection_count=7, batch_requests_per_sec=None if i == 0 else 100.0 + i, interval_seconds=30.0,
                duration_ms=5, sql_memory_mb=1, sql_target_memory_mb=1,
            ))  # fmt: skip
        conn.execute(insert(metric_snapshots), rows)
        ids = conn.execute(select(metric_snapshots.c.id, metric_snapshots.c.collected_at)).all()
        waits = []
        for snapshot_id, _at in ids:
            waits.append(dict(snapshot_id=snapshot_id, wait_type="WRITELOG", waiting_tasks_count=2,
                              wait_time_ms=30, signal_wait_time_ms=3))  # fmt: skip
            waits.append(dict(snapshot_id=snapshot_id, wait_type="LCK_M_X", waiting_tasks_count=1,
                              wait_time_ms=10, signal_wait_time_ms=0))  # fmt: skip
        conn.execute(insert(wait_stats), waits)
        events = [
            (now - dt.timedelta(minutes=90), "offline", "[08001] Unable to connect to data source"),
            (now - dt.timedelta(minutes=89), "online", None),
            (now - dt.timedelta(minutes=10), "offline", "a long error " * 20),
            (now - dt.timedelta(minutes=9), "online", None),
        ]
        conn.execute(
            insert(server_status_events),
            [dict(server_id=server_id, at=at, status=status, error=error) for at, status, error in events],
        )
    engine.dispose()
    return now


def test_server_show_buckets_and_summary(workspace: Workspace) -> None:
    workspace.setup("tenant", "add", "acme")
    workspace.setup("server", "add", "acme", "sql01", "--host", "db1.example", "--interval", "30")
    stored_until = _store_history(workspace)

    data = json.loads(workspace.ok("server", "show", "acme", "sql01", "--since", "1h", "--json"))
    window = data["window"]
    start = dt.datetime.fromisoformat(window["since"].rstrip("Z"))
    end = dt.datetime.fromisoformat(window["until"].rstrip("Z"))
    assert window["seconds"] == 3600 and window["snapshots"] in (119, 120, 121)
    # Rebuild the buckets from the known snapshots: the database's grouping must match.
    size = window["bucket_seconds"]
    expected: dict[int, list[dt.datetime]] = {}
    for k in range(240):
        at = stored_until - dt.timedelta(seconds=30 * k)
        if start <= at <= end:
            expected.setdefault(min(359, int((at - start).total_seconds() // size)), []).append(at)
    assert sum(len(m) for m in expected.values()) == window["snapshots"]
    got = {round((dt.datetime.fromisoformat(p["at"].rstrip("Z")) - start).total_seconds() / size): p
           for p in data["series"]}  # fmt: skip
    assert set(got) == set(expected)
    for index, moments in expected.items():
        point = got[index]
        assert point["samples"] == len(moments)
        assert point["cpu_percent"] == round(sum(m.minute for m in moments) / len(moments), 3)
        assert point["connection_count"] == 7
    assert data["summary"]["connection_count"] == {"min": 7.0, "avg": 7.0, "max": 7.0}
    assert data["summary"]["memory_percent"]["min"] == 50.0 and data["summary"]["memory_percent"]["max"] == 51.0
    assert [(w["wait_type"], w["wait_time_ms"]) for w in data["top_waits"]] == [
        ("WRITELOG", 30 * window["snapshots"]), ("LCK_M_X", 10 * window["snapshots"]),
    ]  # fmt: skip
    assert data["top_waits"][0]["share"] == 0.75
    assert [e["status"] for e in data["status_events"]] == ["offline", "online"]  # the 90-minute-old ones: out
    assert data["latest"]["age_s"] < 60 and data["latest"]["connection_count"] == 7

    text = workspace.ok("server", "show", "acme", "sql01", "--since", "2h")
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    assert "240 snapshots" in text and "status events (last 2h): 4" in text
    assert "WRITELOG" in text and "75%" in text
    cpu_top = next(i for i, line in enumerate(lines) if line.startswith("CPU %"))
    top, bottom = lines[cpu_top + 1], lines[cpu_top + 4]  # four rows, labelled with the plotted range
    assert float(top.split("┤")[0]) > float(bottom.split("┤")[0]) and "└" in lines[cpu_top + 5]
    assert "offline" in text and "a long error a long error" in text and text.count("a long error") < 20

    workspace.setup("server", "remove", "acme", "sql01")
    removed = workspace.ok("server", "show", "acme", "sql01", "--since", "1h")
    assert "removed" in removed and "history is kept" in removed and "top waits" in removed


def test_top_waits_of_a_long_window_from_an_even_sample(workspace: Workspace) -> None:
    """Two servers whose snapshots take turns (ids alternate): the sample of one server's snapshots is spread
    over the whole window, and the scaled totals come close to the exact ones, with the same ranking."""
    from sqlalchemy import true

    from supervisor import history, history_waits

    workspace.setup("tenant", "add", "acme")
    for name in ("sql01", "sql02"):
        workspace.setup("server", "add", "acme", name, "--host", "db1.example")
    engine = create_engine(workspace.tenant_url("acme"), poolclass=NullPool)
    now = utcnow().replace(microsecond=0)
    with engine.begin() as conn:
        ids = dict(conn.execute(select(servers.c.name, servers.c.id)).all())
        rows = [
            dict(server_id=ids[name], collected_at=now - dt.timedelta(seconds=30 * k), cpu_percent=10,
                 interval_seconds=30.0)
            for k in range(3000) for name in ("sql01", "sql02")
        ]  # fmt: skip
        conn.execute(insert(metric_snapshots), rows)
        snapshots = conn.execute(select(metric_snapshots.c.id, metric_snapshots.c.collected_at)).all()
        waits = []
        for snapshot_id, at in snapshots:  # WRITELOG grows through the day, LCK_M_X is steady and smaller
            waits.append(dict(snapshot_id=snapshot_id, wait_type="WRITELOG", waiting_tasks_count=1,
                              wait_time_ms=20 + at.hour, signal_wait_time_ms=0))  # fmt: skip
            waits.append(dict(snapshot_id=snapshot_id, wait_type="LCK_M_X", waiting_tasks_count=1,
                              wait_time_ms=15, signal_wait_time_ms=0))  # fmt: skip
        conn.execute(insert(wait_stats), waits)
        window = history.Window(now - dt.timedelta(seconds=30 * 3000), now, 64)
        _points, summary = history.series(conn, ids["sql01"], window)
        assert summary["snapshots"] == 3000
        every = history_waits.WaitSample(3000, 3000, true())
        exact = history_waits.top_waits(conn, ids["sql01"], window, every)
        chosen = history_waits.sample(conn, ids["sql01"], window, 3000, max_exact=400)
        assert not chosen.exact and 300 <= chosen.sampled <= 500
        estimated = history_waits.top_waits(conn, ids["sql01"], window, chosen)
    engine.dispose()
    assert [w["wait_type"] for w in estimated] == [w["wait_type"] for w in exact] == ["WRITELOG", "LCK_M_X"]
    for got, want in zip(estimated, exact, strict=True):
        assert abs(got["wait_time_ms"] - want["wait_time_ms"]) <= 0.05 * want["wait_time_ms"], (got, want)
        assert abs(got["share"] - want["share"]) < 0.02
