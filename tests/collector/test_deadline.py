"""The collection deadline is the collector's: servers that stop answering in any phase (and never
acknowledge the ATTENTION) cost at most ``collection_timeout``, with both drivers, in ``collect-once``,
in a running child and at SIGTERM; and they never starve the pool of the healthy servers."""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from supervisor.storage.tenant_schema import metric_snapshots, servers
from tests.helpers.cli import run_cli
from tests.helpers.deployment import TenantDeployment
from tests.helpers.waiting import wait_until

CONNECT_PHASES = {"connect": "TCP connect", "prelogin": "login", "tls": "TLS handshake", "login": "login"}
QUERY_PHASES = {"query": "before the first result set", "mid_result": "fetch", "before_done": "fetch"}
#: Scheduling slack on top of the deadline (the issue's bound).
SLACK_MS = 300


def _stalled(name: str, phase: str) -> dict:
    entry: dict = {"name": name, "faults": {"stall": phase}}
    if phase == "tls":
        entry["tls"] = True
    return entry


def _failed_after_ms(stderr: str) -> int:
    match = re.search(r"failed after (\d+) ms", stderr)
    assert match, stderr
    return int(match.group(1))


@pytest.mark.parametrize("phase", [*CONNECT_PHASES, *QUERY_PHASES])
def test_collect_once_ends_at_the_deadline_in_every_stall_phase(
    tmp_path: Path, driver: str, sqlite_url: str, simulator, phase: str
) -> None:
    sim = simulator([_stalled("stalled", phase)])
    # login_timeout above the deadline: the collector's deadline, not the driver's login timeout, ends it.
    deployment = TenantDeployment(tmp_path, driver, sqlite_url, collection_timeout=2, login_timeout=10)
    deployment.add("stalled", sim.ports["stalled"], encrypt="optional" if phase == "tls" else "no",
                   trust_server_certificate=True)  # fmt: skip
    result = run_cli("-c", str(deployment.config), "collect-once", "acme", "stalled", cwd=tmp_path, timeout=60)
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and "[timeout]" in result.stderr, result.stderr
    assert (CONNECT_PHASES | QUERY_PHASES)[phase] in result.stderr
    assert 2000 <= _failed_after_ms(result.stderr) <= 2000 + SLACK_MS
    with deployment.engine.connect() as conn:
        row = conn.execute(select(servers).where(servers.c.name == "stalled")).one()
    assert row.last_error_class == "timeout"
    assert row.status == ("offline" if phase in CONNECT_PHASES else "online")  # reachable: online with the error


def test_the_query_gets_all_the_time_left(tmp_path: Path, driver: str, sqlite_url: str, simulator) -> None:
    """pyodbc's timeout is whole seconds: rounded down, a 1.5 s answer with a 2 s timeout failed at 1 s."""
    sim = simulator([
        {"name": "in-time", "faults": {"slow_query_ms": 1500, "ignore_attention": True}},  # 0.5 s for the login
        {"name": "too-late", "faults": {"slow_query_ms": 2200, "ignore_attention": True}},
    ])  # fmt: skip
    deployment = TenantDeployment(tmp_path, driver, sqlite_url, collection_timeout=2, login_timeout=1)
    for name in ("in-time", "too-late"):
        deployment.add(name, sim.ports[name])
    config = str(deployment.config)
    in_time = run_cli("-c", config, "collect-once", "acme", "in-time", "--json", cwd=tmp_path, timeout=60)
    assert in_time.returncode == 0, in_time.stderr
    too_late = run_cli("-c", config, "collect-once", "acme", "too-late", cwd=tmp_path, timeout=60)
    assert too_late.returncode == 1 and "[timeout]" in too_late.stderr, too_late.stderr
    assert 2000 <= _failed_after_ms(too_late.stderr) <= 2000 + SLACK_MS


def _threads_and_fds(pid: int) -> tuple[int, int]:
    return len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd"))


def test_stalled_servers_never_starve_the_pool(
    tmp_path: Path, driver: str, sqlite_url: str, simulator, child_processes
) -> None:
    """As many stalled servers as pool slots: before, their calls held every thread for 8-20 s."""
    healthy = ["ok-1", "ok-2", "ok-3"]
    stalled = {"st-query": "query", "st-mid": "mid_result", "st-login": "login"}
    sim = simulator([*({"name": n} for n in healthy), *(_stalled(n, p) for n, p in stalled.items())])
    deployment = TenantDeployment(tmp_path, driver, sqlite_url, concurrency=3, collection_interval=2,
                                  collection_timeout=1, login_timeout=5)  # fmt: skip
    for name in [*healthy, *stalled]:
        deployment.add(name, sim.ports[name])
    ids = deployment.server_ids()
    child = child_processes(deployment)
    pid = child.process.pid

    def timeouts() -> list[dict]:
        return [e for e in deployment.log_events() if e.get("event") == "collection.failed"]

    wait_until(lambda: {e["server"] for e in timeouts()} >= set(stalled), timeout=30, what="stalled servers' timeouts")
    window_start = time.monotonic()
    with deployment.engine.connect() as conn:
        before = dict(conn.execute(select(metric_snapshots.c.server_id, func.count()).group_by("server_id")).all())
    samples: list[tuple[float, int, int]] = []
    while (elapsed := time.monotonic() - window_start) < 14:
        samples.append((elapsed, *_threads_and_fds(pid)))
        time.sleep(0.2)
    with deployment.engine.connect() as conn:
        after = dict(conn.execute(select(metric_snapshots.c.server_id, func.count()).group_by("server_id")).all())
    code, _seconds = child.terminate()
    assert code == 0
    slots = int(elapsed // 2)
    for name in healthy:  # on time: at most the slot at each edge of the window missed
        collected = after.get(ids[name], 0) - before.get(ids[name], 0)
        assert collected >= slots - 2, (name, collected, slots)
    failures = [e for e in timeouts() if e["server"] in stalled]
    assert failures and all(e["error_class"] == "timeout" for e in failures)
    assert max(e["duration_ms"] for e in failures) <= 1000 + SLACK_MS
    # Each count at rest (the least in a 3 s window: connections in flight and the SQLite journal come and go)
    # is the same at the end as at the start; a call left behind per stalled collection would add ~20.
    early = [(threads, fds) for at, threads, fds in samples if at < 3]
    late = [(threads, fds) for at, threads, fds in samples if at > elapsed - 3]
    assert min(t for t, _ in late) <= min(t for t, _ in early) + 1, samples
    assert min(f for _, f in late) <= min(f for _, f in early) + 2, samples


def test_sigterm_with_stalled_collections_in_flight(
    tmp_path: Path, driver: str, sqlite_url: str, simulator, child_processes
) -> None:
    sim = simulator([{"name": "ok"}, _stalled("st-query", "query"), _stalled("st-mid", "mid_result")])
    deployment = TenantDeployment(tmp_path, driver, sqlite_url, collection_interval=3, collection_timeout=2,
                                  login_timeout=5)  # fmt: skip
    for name in ("ok", "st-query", "st-mid"):
        deployment.add(name, sim.ports[name])
    child = child_processes(deployment)

    def first_timeout() -> list[dict]:
        failed = [e for e in deployment.log_events() if e.get("event") == "collection.failed"]
        return [e for e in failed if e["server"] == "st-query"]

    [failed] = wait_until(first_timeout, timeout=30, what="a first timeout of st-query")[:1]
    # It failed at its deadline (start + 2 s); its next collection runs from start + 3 s to start + 5 s, i.e.
    # from 1 s to 3 s after that log line: stop it in the middle of that window, whatever the log's delay.
    failed_at = dt.datetime.fromisoformat(failed["timestamp"].replace("Z", "+00:00")).timestamp()
    time.sleep(max(0.0, failed_at + 2.0 - time.time()))
    code, seconds = child.terminate()
    assert code == 0
    assert seconds <= 2 + 2.0  # collection_timeout + 2 s
    events = [e.get("event") for e in deployment.log_events()]
    stopping = events.index("tenant.stopping")
    after_stop = [e for e in deployment.log_events()[stopping:] if e.get("event") == "collection.failed"]
    assert "st-query" in {e["server"] for e in after_stop}  # in flight at SIGTERM, ended by its deadline
    assert all(e["error_class"] == "timeout" for e in after_stop)
    assert "tenant.stopped" in events[stopping:]
