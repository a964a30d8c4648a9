"""System DB outages (SQLite file gone, PostgreSQL refusing connections) and leases between supervisors."""

from __future__ import annotations

import datetime as dt
import signal
import sqlite3
import time
from pathlib import Path

import psutil
from sqlalchemy import text

from tests.helpers.deployment import Deployment, SupervisorProcess, pids_gone
from tests.helpers.postgres import admin_engine, database_name
from tests.helpers.waiting import wait_until


def _assert_outage_rode_out(supervisor: SupervisorProcess, before: dict[str, int]) -> None:
    assert len(supervisor.events("system_db.unavailable")) == 1
    assert supervisor.running_children() == before
    assert not supervisor.events("child.exited")
    heartbeats_flow = supervisor.events("fake.started")  # the children were never restarted
    assert len(heartbeats_flow) == len(before)


def test_sqlite_system_db_disappearing_for_a_while(deployment: Deployment) -> None:
    deployment.write_config(lease_duration=60)
    for slug in ("one", "two"):
        deployment.add_tenant(slug)
    supervisor = deployment.start()
    supervisor.wait_event("fake.started", count=2)
    before = supervisor.running_children()
    db = deployment.root / "var" / "system.db"
    aside = db.with_suffix(".away")
    db.rename(aside)
    [error] = supervisor.wait_event("system_db.unavailable")
    assert error["level"] == "ERROR"
    time.sleep(8)  # many polls fail meanwhile; none may log again
    _assert_outage_rode_out(supervisor, before)
    aside.rename(db)
    supervisor.wait_event("system_db.recovered")
    _assert_outage_rode_out(supervisor, before)
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait_exit() == 0


def _set_connections_allowed(database_url: str, allowed: bool) -> None:
    name = database_name(database_url)
    admin = admin_engine()
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"true" if allowed else "false"}'))
        if not allowed:
            conn.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
    admin.dispose()


def test_postgresql_system_db_refusing_connections(pg_deployment: Deployment) -> None:
    pg_deployment.write_config(lease_duration=60)
    for slug in ("one", "two"):
        pg_deployment.add_tenant(slug)
    supervisor = pg_deployment.start()
    supervisor.wait_event("fake.started", count=2)
    before = supervisor.running_children()
    _set_connections_allowed(pg_deployment.system_db, False)
    try:
        supervisor.wait_event("system_db.unavailable")
        time.sleep(30)  # the 30 s outage
        _assert_outage_rode_out(supervisor, before)
    finally:
        _set_connections_allowed(pg_deployment.system_db, True)
    supervisor.wait_event("system_db.recovered")
    _assert_outage_rode_out(supervisor, before)
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait_exit() == 0


def _intervals(
    supervisor: SupervisorProcess, died_at: dt.datetime | None = None
) -> dict[str, list[tuple[dt.datetime, dt.datetime]]]:
    """tenant → [(child started, child exited)] from one supervisor's log; still open: ``died_at`` or never."""
    far = died_at or dt.datetime.max.replace(tzinfo=dt.UTC)
    open_: dict[str, dt.datetime] = {}
    spans: dict[str, list[tuple[dt.datetime, dt.datetime]]] = {}
    for record in supervisor.lines():
        at = dt.datetime.fromisoformat(record["timestamp"])
        if record["event"] == "child.started":
            open_[record["tenant"]] = at
        elif record["event"] == "child.exited":
            spans.setdefault(record["tenant"], []).append((open_.pop(record["tenant"]), at))
    for tenant, start in open_.items():
        spans.setdefault(tenant, []).append((start, far))
    return spans


def _assert_never_both(a: SupervisorProcess, b: SupervisorProcess, a_died_at: dt.datetime | None = None) -> None:
    spans_a, spans_b = _intervals(a, a_died_at), _intervals(b)
    for tenant in set(spans_a) & set(spans_b):
        for start_a, end_a in spans_a[tenant]:
            for start_b, end_b in spans_b[tenant]:
                assert end_a <= start_b or end_b <= start_a, f"{tenant} ran under both supervisors"


def test_two_supervisors_share_the_tenants_and_take_over(pg_deployment: Deployment) -> None:
    lease = 4
    pg_deployment.write_config(lease_duration=lease)
    slugs = [f"t{n}" for n in range(6)]
    for slug in slugs:
        pg_deployment.add_tenant(slug)
    first = pg_deployment.start("first")
    second = pg_deployment.start("second")

    def split() -> bool:
        a, b = first.running_children(), second.running_children()
        return len(a) + len(b) == 6 and set(a).isdisjoint(b) and abs(len(a) - len(b)) <= 2

    wait_until(split, 30, "the two supervisors to split the six tenants")
    time.sleep(2)  # a few more polls: the split must hold still
    assert split()
    _assert_never_both(first, second)

    orphans = first.child_pids()
    first.signal(signal.SIGKILL)
    first.wait_exit()
    wait_until(lambda: pids_gone(orphans), 5, "the children of the killed supervisor to exit", interval=0.02)
    orphans_gone_at = dt.datetime.now(dt.UTC)
    wait_until(lambda: sorted(second.running_children()) == slugs, lease + 0.5 + 6, "the survivor to run all six")
    _assert_never_both(first, second, orphans_gone_at)
    second.signal(signal.SIGTERM)
    assert second.wait_exit() == 0


def test_status_json_after_stop_records_the_instance(deployment: Deployment) -> None:
    import json

    deployment.add_tenant("solo")
    supervisor = deployment.start()
    supervisor.wait_event("fake.started")
    running = json.loads(deployment.cli("status", "--json").stdout)
    [instance] = running["instances"]
    assert instance["pid"] == supervisor.pid and instance["alive"]
    [tenant] = running["tenants"]
    assert tenant["slug"] == "solo" and tenant["state"] in ("STARTING", "RUNNING")
    assert tenant["owner"] == instance["id"] and tenant["pid"] in supervisor.child_pids()
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait_exit() == 0
    stopped = json.loads(deployment.cli("status", "--json").stdout)
    assert stopped["instances"][0]["status"] == "stopped" and not stopped["instances"][0]["alive"]
    assert stopped["tenants"][0]["state"] == "STOPPED" and stopped["tenants"][0]["owner"] is None
    assert Path(deployment.config).exists()


def _moment(record: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(record["timestamp"].removesuffix("Z"))


def test_children_stop_before_an_unrenewable_lease_expires_and_come_back(deployment: Deployment) -> None:
    """Another supervisor may take a tenant once our lease expires: stop its child before that moment."""
    deployment.write_config(lease_duration=6, shutdown_timeout=2)
    deployment.add_tenant("one")
    supervisor = deployment.start()
    supervisor.wait_event("fake.started")
    pids = supervisor.child_pids()
    db = deployment.root / "var" / "system.db"
    aside = db.with_suffix(".away")
    db.rename(aside)
    [outage] = supervisor.wait_event("system_db.unavailable")
    supervisor.wait_event("lease.expiring", timeout=15)
    [exited] = supervisor.wait_event("child.exited", timeout=10)
    assert exited["exit_code"] == 0
    assert pids_gone(pids)
    # The last renewal came at most one poll (0.5 s) before the first failed poll; the lease ran 6 s from it.
    expiry_at_the_earliest = _moment(outage) + dt.timedelta(seconds=6 - 0.5)
    assert _moment(exited) < expiry_at_the_earliest
    aside.rename(db)
    supervisor.wait_event("system_db.recovered")
    supervisor.wait_event("fake.started", count=2, timeout=20)  # the tenant runs again once the lease is ours
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait_exit() == 0


def test_a_supervisor_joining_later_gets_its_fair_share(deployment: Deployment) -> None:
    """The first supervisor runs all six tenants; a second one starts later: the first gives back the excess
    over ⌈6 / 2⌉ once those children have exited, the second claims them, and no tenant ever runs on both. The
    last tenant's child ignores its TERM (killed after shutdown_timeout): its lease must wait for that."""
    deployment.write_config(lease_duration=10, shutdown_timeout=2)
    slugs = [f"t{n}" for n in range(5)] + ["stubborn-t5"]
    for slug in slugs:
        deployment.add_tenant(slug)
    first = deployment.start("first")
    wait_until(lambda: sorted(first.running_children()) == sorted(slugs), 30, "the first supervisor to run all six")
    before = first.running_children()
    second = deployment.start("second")

    def halves() -> bool:
        a, b = first.running_children(), second.running_children()
        return len(a) == len(b) == 3 and set(a).isdisjoint(b)

    wait_until(halves, 30 + 2, lambda: f"a 3/3 split: {first.running_children()} / {second.running_children()}")
    time.sleep(4 * 0.5)  # four more polls of each: the split holds still
    assert halves()
    kept = first.running_children()
    assert all(before[slug] == pid for slug, pid in kept.items())  # the first keeps its children running
    given_back = set(slugs) - set(kept)
    stopped = first.events("child.exited")
    assert sorted(e["tenant"] for e in stopped) == sorted(given_back)
    assert all(e["reason"] == "tenant no longer active here" for e in stopped)
    assert {e["tenant"]: e["exit_code"] for e in stopped if e["exit_code"] != 0} == {"stubborn-t5": -signal.SIGKILL}
    assert not second.events("child.exited")
    _assert_never_both(first, second)
    for supervisor in (first, second):
        supervisor.signal(signal.SIGTERM)
        assert supervisor.wait_exit() == 0


def test_a_parent_stopped_inside_a_poll_renews_before_it_fences(deployment: Deployment) -> None:
    """Stopped (SIGSTOP) inside a poll's transaction past the fence time, the parent resumes to a renewal dated
    before the stop: that is no outage, so it renews again at once instead of stopping its children."""
    # The parent fences 32 s after a renewal (40 - 8); its children, whose parent does not run, would stop
    # themselves 34.5 s after it stopped ((40 - 3) - 0.5 - 2: children.parent_watch): the stop lies between.
    deployment.write_config(lease_duration=40, shutdown_timeout=8)
    deployment.add_tenant("one")
    supervisor = deployment.start(module="tests.supervisor.stalling_parent")
    supervisor.wait_event("fake.started")
    pids = supervisor.child_pids()
    (deployment.root / "stall-now").touch()
    parent = psutil.Process(supervisor.pid)
    wait_until(lambda: parent.status() == psutil.STATUS_STOPPED, 10, "the parent to stop itself inside a poll")
    time.sleep(33)  # past the fence time of the renewal this poll will record
    supervisor.signal(signal.SIGCONT)
    wait_until(lambda: parent.status() != psutil.STATUS_STOPPED, 10, "the parent to resume")
    time.sleep(2)  # four polls more
    assert supervisor.events("lease.expiring") == [] and supervisor.events("child.exited") == []
    assert supervisor.child_pids() == pids
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait_exit() == 0


def test_run_against_a_newer_system_schema_stops_with_exit_1(deployment: Deployment) -> None:
    """A newer collector upgraded the system DB under a running supervisor (or before it started): ``run`` says so
    once and exits 1 (it used to go on, or idle for ever, RUNNING under supervisord with nothing collected); its
    children stop gracefully first."""
    deployment.add_tenant("one")
    supervisor = deployment.start()
    supervisor.wait_event("fake.started")
    db = sqlite3.connect(deployment.root / "var" / "system.db")
    db.execute("UPDATE schema_info SET version = 99 WHERE name = 'system'")
    db.commit()
    db.close()
    assert supervisor.wait_exit() == 1
    [line] = supervisor.events("system_db.newer_schema")
    assert "schema version 99, newer than this collector's" in line["message"]
    assert [e["exit_code"] for e in supervisor.events("child.exited")] == [0]
    assert "Traceback" not in supervisor.log_path.read_text()
    restarted = deployment.start("restarted")
    assert restarted.wait_exit() == 1
    assert len(restarted.events("system_db.newer_schema")) == 1 and restarted.events("child.started") == []
