"""Faults of the parent's own world: a locked system DB, stop signals in quick succession."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import time

from tests.helpers.deployment import Deployment


def test_a_locked_system_db_does_not_make_the_watchdog_kill_healthy_children(deployment: Deployment) -> None:
    """Before: every poll waited 10 s on the lock, and the watchdog then blamed the children for heartbeats
    the stalled loop had not read ("no heartbeat for 12s"), stopping every one of them."""
    deployment.write_config(heartbeat_timeout=6, lease_duration=90)
    for slug in ("one", "two"):
        deployment.add_tenant(slug)
    supervisor = deployment.start()
    supervisor.wait_event("fake.started", count=2)
    before = supervisor.running_children()
    locker = sqlite3.connect(deployment.root / "var" / "system.db", isolation_level=None, timeout=30)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        supervisor.wait_event("system_db.unavailable")
        time.sleep(15)  # 2.5 x heartbeat_timeout with the lock held
    finally:
        locker.execute("COMMIT")
        locker.close()
    supervisor.wait_event("system_db.recovered")
    assert not supervisor.events("child.watchdog") and not supervisor.events("child.exited")
    assert supervisor.running_children() == before
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait_exit() == 0


def test_a_stop_signal_right_after_the_stop_still_exits_0(deployment: Deployment) -> None:
    """Once in 12 runs a second TERM 0.1 s after the first landed after the handlers were gone (interpreter
    shutdown restores the defaults) and the stopped parent died with 143. Here the second TERM follows the
    ``supervisor.stopped`` line as closely as the log can be read."""
    deployment.add_tenant("one")
    codes = []
    for attempt in range(5):
        supervisor = deployment.start(f"supervisor-{attempt}")
        supervisor.wait_event("fake.started", count=1)
        supervisor.signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        while b'"supervisor.stopped"' not in supervisor.log_path.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.002)
        with contextlib.suppress(ProcessLookupError):
            supervisor.signal(signal.SIGTERM)
        codes.append(supervisor.wait_exit())
    assert codes == [0] * 5


def test_a_killed_parent_is_taken_over_at_once_on_the_same_host(deployment: Deployment) -> None:
    """Before: a respawned supervisor collected nothing until the dead one's leases expired (95-110 s), and
    ``status`` showed the dead instance alive with RUNNING children meanwhile."""
    deployment.write_config(lease_duration=90)
    for slug in ("one", "two"):
        deployment.add_tenant(slug)
    first = deployment.start("first")
    first.wait_event("fake.started", count=2)
    first.signal(signal.SIGKILL)
    first.wait_exit()
    status = json.loads(deployment.cli("status", "--json").stdout)
    [dead] = [i for i in status["instances"] if i["pid"] == first.pid]
    assert dead["alive"] is False  # its row still says running; its process says otherwise
    started = time.monotonic()
    second = deployment.start("second")
    [taken] = second.wait_event("instance.taken_over", timeout=20)
    second.wait_event("child.started", count=2, timeout=20)
    assert time.monotonic() - started < 90 / 2  # well before the leases would have expired
    assert taken["instance"] == dead["id"]
    second.wait_event("fake.started", count=2)
    status = json.loads(deployment.cli("status", "--json").stdout)
    [alive] = [i["id"] for i in status["instances"] if i["alive"]]
    assert [i["status"] for i in status["instances"] if i["id"] == dead["id"]] == ["gone"]
    assert {t["slug"]: t["owner"] for t in status["tenants"]} == {"one": alive, "two": alive}
    second.signal(signal.SIGTERM)
    assert second.wait_exit() == 0


def test_hostile_tenant_rows_cost_only_themselves(deployment: Deployment) -> None:
    """The web app writes ``tenants`` too: a slug that is a path (``{slug}`` names the tenant's DB file) or
    an unusable ``db_url`` is that tenant's config error, logged once, never a crash of the supervisor."""
    deployment.add_tenant("good")
    db = sqlite3.connect(deployment.root / "var" / "system.db")
    now = "2026-01-01 00:00:00"
    for slug, url in [("../../etc/evil", None), ("UPPER", None), ("fine-slug", "mysql://u:secret@h/db")]:
        db.execute(
            "INSERT INTO tenants (slug, name, status, db_url, created_at, updated_at) VALUES (?, ?, 'active', ?, ?, ?)",
            (slug, slug, url, now, now),
        )
    db.commit()
    db.close()
    supervisor = deployment.start()
    supervisor.wait_event("fake.started", count=1)
    time.sleep(2)  # several polls (poll_interval 0.5 s)
    invalid = supervisor.events("tenant.invalid")
    assert len(invalid) == 3 and all(e["error_class"] == "config" for e in invalid)  # once per row, not per poll
    assert "secret" not in json.dumps(invalid)
    assert set(supervisor.running_children()) == {"good"}
    assert not list(deployment.root.rglob("evil*"))
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait_exit() == 0
