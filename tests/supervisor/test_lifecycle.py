"""Reconciling tenants with children, restarts with backoff, the watchdog, graceful and forced stops."""

from __future__ import annotations

import datetime as dt
import os
import signal
import time

import psutil
from sqlalchemy import create_engine, select

from supervisor.clock import utcnow
from supervisor.ipc import CHILD_EXIT_CONFIG
from supervisor.storage.system_schema import tenant_children, tenant_leases, tenants
from tests.helpers.deployment import Deployment, pids_gone
from tests.helpers.waiting import wait_until

#: How late the loop may act after a deadline it sleeps until (a wake-up, a log line), on a loaded machine.
WAKE_SLACK_S = 0.5
#: A restart after its backoff delay: the wake-up, the fork and the "child.started" line.
START_SLACK_S = 0.5


def _at(record: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))


def test_children_follow_the_active_tenants(deployment: Deployment) -> None:
    for slug in ("alpha", "beta", "gamma"):
        deployment.add_tenant(slug)
    supervisor = deployment.start()
    supervisor.wait_event("child.started", count=3)
    first = supervisor.running_children()
    assert sorted(first) == ["alpha", "beta", "gamma"]
    assert set(first.values()) <= supervisor.child_pids()

    deployment.add_tenant("delta")
    supervisor.wait_event("child.started", tenant="delta", timeout=0.5 + 2 + 1)

    deployment.cli("tenant", "suspend", "beta")
    [exited] = supervisor.wait_event("child.exited", tenant="beta")
    assert exited["exit_code"] == 0
    assert exited["child_pid"] == first["beta"]
    now = supervisor.running_children()
    assert {slug: now[slug] for slug in ("alpha", "gamma")} == {"alpha": first["alpha"], "gamma": first["gamma"]}
    assert "beta" not in now
    assert len(supervisor.events("child.started")) == 4

    deployment.cli("tenant", "activate", "beta")
    supervisor.wait_event("child.started", tenant="beta", count=2)

    pids = supervisor.child_pids()
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait_exit(timeout=5 + 10) == 0
    assert pids_gone(pids)
    events = [r["event"] for r in supervisor.lines()]  # every line parses as JSON
    assert events[0] == "supervisor.started"
    assert events[-1] == "supervisor.stopped"
    assert "supervisor.stopping" in events
    assert len(supervisor.events("child.exited", exit_code=0)) == 5

    engine = create_engine(deployment.system_db.replace("///", f"///{deployment.root}/"))
    with engine.connect() as conn:
        rows = conn.execute(
            select(tenants.c.slug, tenant_children.c.state, tenant_children.c.last_exit_code).join(
                tenant_children, tenant_children.c.tenant_id == tenants.c.id
            )
        ).all()
    assert sorted(rows) == [(s, "STOPPED", 0) for s in ("alpha", "beta", "delta", "gamma")]


def test_killed_child_is_restarted_and_a_crash_loop_backs_off(deployment: Deployment) -> None:
    deployment.add_tenant("steady")
    deployment.add_tenant("victim")
    deployment.add_tenant("crash-loop")
    deployment.add_tenant("config-bad")
    supervisor = deployment.start()
    supervisor.wait_event("fake.started", tenant="victim")
    steady_pid = supervisor.running_children()["steady"]
    victim_pid = supervisor.running_children()["victim"]

    os.kill(victim_pid, signal.SIGKILL)
    [exited] = supervisor.wait_event("child.exited", tenant="victim")
    assert exited["exit_code"] == -signal.SIGKILL
    supervisor.wait_event("child.restarting", tenant="victim")
    supervisor.wait_event("child.started", tenant="victim", count=2)

    restarts = supervisor.wait_event("child.restarting", tenant="crash-loop", count=4, timeout=1 + 2 + 4 + 8 + 15)
    delays = [r["delay_s"] for r in restarts[:4]]
    for n, delay in enumerate(delays):  # equal jitter: delay n in [2**n / 2, 2**n] (logged rounded to 0.01 s)
        assert 2**n / 2 - 0.005 <= delay <= 2**n + 0.005, (n, delays)
    assert [r["restarts"] for r in restarts[:4]] == [1, 2, 3, 4]
    # The logged delay is the one applied: the next start comes that long after the restart line, no sooner.
    starts = [_at(r) for r in supervisor.wait_event("child.started", tenant="crash-loop", count=5, timeout=8 + 10)]
    for n, restart in enumerate(restarts[:4]):
        next_start = min(at for at in starts if at >= _at(restart))
        waited = (next_start - _at(restart)).total_seconds()
        assert delays[n] - 0.01 <= waited <= delays[n] + START_SLACK_S, (n, delays[n], waited)
    crash_lines = supervisor.events("child.crashed", tenant="crash-loop")
    assert crash_lines and "simulated crash" in crash_lines[0]["exc_info"]
    assert "Traceback" not in crash_lines[0]["message"]

    [config_exit] = supervisor.events("child.exited", tenant="config-bad")
    assert config_exit["exit_code"] == CHILD_EXIT_CONFIG
    [config_retry] = supervisor.events("child.restarting", tenant="config-bad")
    assert config_retry["delay_s"] >= 30  # a human has to fix it: retried slowly

    assert supervisor.running_children()["steady"] == steady_pid
    assert not supervisor.events("child.exited", tenant="steady")
    supervisor.signal(signal.SIGINT)
    assert supervisor.wait_exit() == 0


def test_watchdog_restarts_a_silent_child_and_recycles_a_fat_one(deployment: Deployment) -> None:
    deployment.write_config(heartbeat_timeout=2, collection_timeout=1, max_child_rss_mb=64)
    deployment.add_tenant("hang-silent")
    deployment.add_tenant("fat-hog")
    deployment.add_tenant("fine")
    supervisor = deployment.start()
    watchdog = supervisor.wait_event("child.watchdog", tenant="hang-silent")[0]
    assert "no heartbeat" in watchdog["message"]
    supervisor.wait_event("child.started", tenant="hang-silent", count=2)
    recycle = supervisor.wait_event("child.watchdog", tenant="fat-hog")[0]
    assert "max_child_rss_mb" in recycle["message"]
    restart = supervisor.wait_event("child.restarting", tenant="fat-hog")[0]
    assert 0.5 <= restart["delay_s"] <= 1.0  # too big soon after its start: the crash backoff, not at once
    supervisor.wait_event("child.started", tenant="fat-hog", count=2)
    assert len(supervisor.events("child.started", tenant="fine")) == 1
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait_exit() == 0


def test_stop_kills_stragglers_and_a_second_signal_kills_at_once(deployment: Deployment) -> None:
    deployment.write_config(shutdown_timeout=2)
    deployment.add_tenant("stubborn-one")
    deployment.add_tenant("polite")
    supervisor = deployment.start()
    supervisor.wait_event("fake.started", count=2)
    pids = supervisor.child_pids()
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait_exit(timeout=2 + 10) == 0
    [killed] = supervisor.events("child.killed")
    assert killed["tenant"] == "stubborn-one" and killed["reason"] == "did not stop within 2s"
    assert pids_gone(pids)
    # The TERM went out right after the stopping line; the KILL is due shutdown_timeout later, not sooner, and
    # the loop wakes at that deadline (it never sleeps past a child's kill_at).
    [stopping] = supervisor.events("supervisor.stopping")
    grace = (_at(killed) - _at(stopping)).total_seconds()
    assert 2 - 0.01 <= grace <= 2 + WAKE_SLACK_S, grace
    [polite] = supervisor.events("child.exited", tenant="polite")
    assert polite["exit_code"] == 0 and _at(polite) < _at(killed)
    [stubborn] = supervisor.events("child.exited", tenant="stubborn-one")
    assert stubborn["exit_code"] == -signal.SIGKILL
    assert (_at(stubborn) - _at(killed)).total_seconds() <= WAKE_SLACK_S  # reaped as soon as it died

    deployment.write_config(shutdown_timeout=600)
    second = deployment.start("second")
    second.wait_event("fake.started", count=2)
    second.signal(signal.SIGTERM)
    second.wait_event("supervisor.stopping")
    second.wait_event("child.exited", tenant="polite")
    second.signal(signal.SIGINT)
    assert second.wait_exit(timeout=30) == 0  # far below the 600 s shutdown_timeout
    assert second.events("child.killed", tenant="stubborn-one", reason="second stop signal")


def test_children_die_with_a_killed_parent(deployment: Deployment) -> None:
    for slug in ("one", "two", "three"):
        deployment.add_tenant(slug)
    supervisor = deployment.start()
    supervisor.wait_event("fake.started", count=3)
    pids = supervisor.child_pids()
    assert len(pids) == 3
    supervisor.signal(signal.SIGKILL)
    supervisor.wait_exit()
    wait_until(lambda: pids_gone(pids), 5, "the children to exit after their parent was killed")


def test_log_lines_of_a_stopping_child_are_all_written_whole(deployment: Deployment) -> None:
    deployment.add_tenant("chatty-a")
    deployment.add_tenant("chatty-b")
    supervisor = deployment.start()
    supervisor.wait_event("fake.started", count=2)
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait_exit() == 0
    lines = supervisor.lines()
    for slug in ("chatty-a", "chatty-b"):
        chatty = [r for r in lines if r.get("event") == "fake.chatty" and r["tenant"] == slug]
        assert [r["message"] for r in chatty] == [f"chatty line {n}" for n in range(300)]
        assert all(("exc_info" in r) == (n % 50 == 0) for n, r in enumerate(chatty))
        assert len({r["pid"] for r in chatty}) == 1 and chatty[0]["pid"] != supervisor.pid
    assert lines[-1]["event"] == "supervisor.stopped"
    assert all(set(r) >= {"timestamp", "level", "logger", "message", "event", "pid"} for r in lines)


def _lease_left_s(deployment: Deployment) -> float:
    engine = create_engine(deployment.system_db.replace("///", f"///{deployment.root}/"))
    try:
        with engine.connect() as conn:
            [expires_at] = conn.execute(select(tenant_leases.c.expires_at).where(tenant_leases.c.owner.is_not(None)))
    finally:
        engine.dispose()
    return (expires_at[0] - utcnow()).total_seconds()


def test_sighup_reload_is_applied_to_the_loop_the_leases_and_new_children(deployment: Deployment) -> None:
    """Not just the log line: each setting a reload changes takes effect where it is used."""
    deployment.write_config(lease_duration=10, shutdown_timeout=5)
    deployment.add_tenant("stubborn-early")
    supervisor = deployment.start()
    [early] = supervisor.wait_event("fake.started", tenant="stubborn-early")
    assert early["collection_interval"] == 30  # the default: not in the file yet
    assert _lease_left_s(deployment) <= 10
    deployment.write_config(lease_duration=40, shutdown_timeout=1, collection_interval=7)
    supervisor.signal(signal.SIGHUP)
    supervisor.wait_event("config.reloaded")
    # The system DB side: the next poll comes at once and renews the lease for the new duration.
    left = wait_until(lambda: (left := _lease_left_s(deployment)) > 10 and left, 10, "a lease renewed for 40 s")
    assert 40 - 0.5 - 1 <= left <= 40, left  # renewed within the last poll interval (0.5 s), read just after
    # New children get the new settings; the running child is not restarted for it.
    deployment.add_tenant("stubborn-late")
    [late] = supervisor.wait_event("fake.started", tenant="stubborn-late")
    assert late["collection_interval"] == 7
    assert len(supervisor.events("child.started", tenant="stubborn-early")) == 1
    # The loop itself: the stop waits the new shutdown_timeout (1 s, not 5 s) before killing the stragglers.
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait_exit(timeout=5 + 10) == 0
    killed = supervisor.events("child.killed")
    assert sorted(k["tenant"] for k in killed) == ["stubborn-early", "stubborn-late"]
    assert {k["reason"] for k in killed} == {"did not stop within 1s"}
    [stopping] = supervisor.events("supervisor.stopping")
    assert all(1 - 0.01 <= (_at(k) - _at(stopping)).total_seconds() <= 1 + WAKE_SLACK_S for k in killed), killed


def test_sighup_reloads_and_survives_an_invalid_file(deployment: Deployment) -> None:
    deployment.add_tenant("keep")
    supervisor = deployment.start()
    supervisor.wait_event("fake.started")
    deployment.write_config(poll_interval=1)
    supervisor.signal(signal.SIGHUP)
    supervisor.wait_event("config.reloaded")
    deployment.config.write_text(deployment.config.read_text() + "bogus_key = 1\n")
    supervisor.signal(signal.SIGHUP)
    [failed] = supervisor.wait_event("config.reload_failed")
    assert failed["level"] == "ERROR" and "bogus_key" in failed["message"]
    assert psutil.Process(supervisor.pid).status() != psutil.STATUS_ZOMBIE
    assert len(supervisor.events("child.started")) == 1
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait_exit() == 0


def test_sighup_refuses_a_new_system_db_or_tenant_db_template(deployment: Deployment) -> None:
    """A typo in system_db (``systen.db``) and a SIGHUP: before, an empty system DB was created and used at once,
    every child stopped as "no longer active here", and the real system DB kept them RUNNING with exited pids."""
    deployment.add_tenant("keep")
    supervisor = deployment.start()
    supervisor.wait_event("fake.started")
    good_system_db = deployment.system_db
    deployment.system_db = good_system_db.replace("system.db", "systen.db")
    deployment.write_config()
    supervisor.signal(signal.SIGHUP)
    [failed] = supervisor.wait_event("config.reload_failed")
    assert "collector.system_db changed to" in failed["message"] and "restart it" in failed["message"], failed
    deployment.system_db = good_system_db
    deployment.write_config(tenant_db_url="sqlite:///elsewhere/{slug}.db")
    supervisor.signal(signal.SIGHUP)
    failed = supervisor.wait_event("config.reload_failed", count=2)[-1]
    assert "collector.tenant_db_url changed to" in failed["message"], failed
    assert not list(deployment.root.rglob("systen.db"))
    time.sleep(2)  # a few polls: the child goes on, under the same system DB
    assert len(supervisor.events("child.started")) == 1 and not supervisor.events("child.stopping")
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait_exit() == 0


def test_sighup_with_a_log_file_that_cannot_be_opened_keeps_the_old_one(deployment: Deployment) -> None:
    """The new log was opened after the reload's checks: its ConfigError left the loop instead of being
    ``config.reload_failed``."""
    deployment.add_tenant("keep")
    supervisor = deployment.start()
    supervisor.wait_event("fake.started")
    blocker = deployment.root / "not-a-folder"
    blocker.write_text("")
    deployment.logging["file"] = str(blocker / "collector.log")
    deployment.write_config()
    supervisor.signal(signal.SIGHUP)
    [failed] = supervisor.wait_event("config.reload_failed")
    assert "logging.file" in failed["message"], failed
    assert psutil.Process(supervisor.pid).status() != psutil.STATUS_ZOMBIE
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait_exit() == 0
