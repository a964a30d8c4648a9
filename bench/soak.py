"""Fault soak: the real supervisor against a fleet with a fault mix, then an audit. Exit 1 when it fails.

    python -m bench.soak [--servers 60] [--tenants 4] [--interval 5] [--minutes 5] [--quick]
                         [--driver msodbc18|freetds]

Faults (README "The SQL Server simulator") on dedicated servers, the rest healthy: down, blackhole, slow query (beyond
``collection_timeout``), login failed, permission denied, disconnect mid-result (all from the
start); a server that restarts every ``restart_every`` seconds; a server that is down for a while in
the middle (flap); a server with a slow login that still fits the deadline. During the run one
tenant's SQLite DB is locked exclusively (unavailable to the writer) for ``--db-outage`` seconds, and
one other tenant's child is killed with SIGKILL.

The audit (see ``audit()``), for every server:
- healthy: no grid slot missed between its first and last snapshot, first snapshot within
  ``interval + 12 s`` of the child's start, last within ``interval + timeout + 3 s`` of the stop.
  Tolerance: servers of the killed child may miss the slots of its restart as bounded by the behaviour
  (``restart_bound_s``: the first backoff delay + the child's start-up; ``ceil(bound / interval) + 2``), and
  a restart slower than that bound, or none, fails the audit; the restarting server
  may miss 1 slot per restart (its connection is dropped by the restart); the flapping server may
  miss the slots of its down window + 2.
- no duplicates (two snapshots less than half an interval apart: a restarted child keeps each server's
  slots, so a restart brings none), no negative or absurd rates (Batch Requests/sec
  above 10x the simulated rate, CPU or memory outside 0-100, interval_seconds <= 0, negative waits);
  at most one rate-less sample per server per restart (first sample, instance restart).
- fault servers: no snapshots, the expected status and error class.
- RSS and fds of the process tree flat: the mean of the last third of samples within 15 % (+8 MiB /
  +16 fds) of the mean of the first third.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import math
import os
import signal
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.analysis import TenantData, load_tenant
from bench.common import (
    MIB,
    Deployment,
    SimFleet,
    SimServer,
    TreeSampler,
    make_servers,
    raise_fd_limit,
    run_in_folder,
    run_octet,
    split_tenants,
    tear_down,
)
from supervisor.backoff import crash_backoff

SIM_BATCH_RATE = 500.0  # sqlserver_sim's default profile (fleet-file servers)


@dataclass(frozen=True)
class Expect:
    status: str
    error_classes: tuple[str, ...]


#: Fault servers, their fault settings and what the collector must show for them.
FAULTS: dict[str, tuple[dict[str, Any], Expect]] = {
    "down": ({"down": True}, Expect("offline", ("connect",))),
    "blackhole": ({"blackhole": True}, Expect("offline", ("connect",))),
    "slowquery": ({"slow_query_ms": 60_000}, Expect("online", ("timeout",))),
    "loginfail": ({"login_failed": True}, Expect("offline", ("login",))),
    "noperm": ({"permission_denied": True}, Expect("online", ("permission",))),
    "cutoff": ({"disconnect_mid_result": True}, Expect("*", ("connect", "protocol"))),
}
RESTARTING = "restarting"
FLAPPING = "flapping"
SLOWLOGIN = "slowlogin"


@dataclass
class Timeline:
    start_wall: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC).replace(tzinfo=None))
    start_mono: float = field(default_factory=time.monotonic)
    events: list[tuple[float, str]] = field(default_factory=list)
    restarts: int = 0
    flap_down: tuple[float, float] | None = None
    outage: tuple[float, float] | None = None
    kill: tuple[float, str, int] | None = None
    stop_at: float | None = None

    def note(self, what: str) -> None:
        self.events.append((time.monotonic(), what))
        print(f"  [{time.strftime('%H:%M:%S')}] {what}", flush=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=60, help="healthy servers (fault servers come on top)")
    parser.add_argument("--tenants", type=int, default=4)
    parser.add_argument("--interval", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--collection-timeout", type=float, default=3.0)
    parser.add_argument("--db-outage", type=float, default=40.0, help="seconds one tenant DB is locked")
    parser.add_argument("--restart-every", type=float, default=30.0)
    parser.add_argument("--driver", choices=("msodbc18", "freetds"), default="freetds")
    parser.add_argument("--quick", action="store_true", help="20 healthy servers, 3 tenants, 1.5 minutes")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it")
    args = parser.parse_args(argv)
    if args.quick:
        args.servers, args.tenants, args.minutes, args.db_outage, args.restart_every = 20, 3, 1.5, 20.0, 25.0
    if args.tenants < 3:
        parser.error("--tenants must be at least 3 (one DB outage, one killed child, one untouched)")
    return args


def build_fleet(args: argparse.Namespace) -> tuple[list[SimServer], dict[str, list[SimServer]], dict[str, str]]:
    """Servers, their tenants, and the role of each special server (name -> role)."""
    octet = run_octet()
    healthy = make_servers(args.servers, octet, prefix="ok")
    special_names = [*FAULTS, RESTARTING, FLAPPING, SLOWLOGIN]
    specials = make_servers(args.servers + len(special_names), octet, prefix="x")[args.servers:]
    roles: dict[str, str] = {}
    for server, role in zip(specials, special_names, strict=True):
        server.name = f"{role}-{server.name}"
        roles[server.name] = role
        if role in FAULTS:
            server.faults = dict(FAULTS[role][0])
        elif role == SLOWLOGIN:
            server.faults = {"slow_login_ms": int(args.collection_timeout * 1000 / 3)}
    groups = split_tenants(healthy, args.tenants)
    slugs = list(groups)
    for index, server in enumerate(specials):
        groups[slugs[index % len(slugs)]].append(server)
    return healthy + specials, groups, roles


def lock_db(path: Path, seconds: float, stop: threading.Event) -> None:
    """Hold an exclusive lock on a SQLite DB: the tenant's writer cannot commit meanwhile."""
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        db.execute("BEGIN EXCLUSIVE")
        stop.wait(seconds)
        db.execute("ROLLBACK")
    finally:
        db.close()


def child_pid_of(deployment: Deployment, slug: str) -> int | None:
    pid = None
    for event in deployment.log_events():
        if event.get("tenant") == slug and event.get("event") == "servers.refreshed":
            pid = int(event["pid"])
    return pid if pid and pid in deployment.children_pids() else None


def drive(args: argparse.Namespace, fleet: SimFleet, deployment: Deployment, groups: dict[str, list[SimServer]],
          roles: dict[str, str], timeline: Timeline, sampler: TreeSampler) -> None:
    """The scripted fault schedule, for ``args.minutes``."""
    slugs = list(groups)
    outage_slug, kill_slug = slugs[0], slugs[1]
    duration = args.minutes * 60
    begin = time.monotonic()
    flapper = next(name for name, role in roles.items() if role == FLAPPING)
    restarter = next(name for name, role in roles.items() if role == RESTARTING)
    plan = [
        (0.25 * duration, "flap_down"),
        (0.25 * duration + 3 * args.interval + 5, "flap_up"),
        (0.35 * duration, "outage"),
        (0.55 * duration, "kill"),
    ]
    next_restart = begin + args.restart_every
    lock_stop = threading.Event()
    locker: threading.Thread | None = None
    try:
        while time.monotonic() - begin < duration:
            now = time.monotonic()
            if deployment.process is not None and deployment.process.poll() is not None:
                raise RuntimeError(f"the supervisor exited with {deployment.process.returncode}")
            if now >= next_restart:
                timeline.restarts += 1
                fleet.set_faults({restarter: {"restart": timeline.restarts}})
                timeline.note(f"restart #{timeline.restarts} of {restarter}")
                next_restart += args.restart_every
            while plan and now - begin >= plan[0][0]:
                _, action = plan.pop(0)
                if action == "flap_down":
                    fleet.set_faults({flapper: {"down": True}})
                    timeline.flap_down = (time.monotonic(), math.nan)
                    timeline.note(f"{flapper} down")
                elif action == "flap_up":
                    fleet.set_faults({flapper: {"down": None}})
                    assert timeline.flap_down is not None
                    timeline.flap_down = (timeline.flap_down[0], time.monotonic())
                    timeline.note(f"{flapper} up")
                elif action == "outage":
                    path = deployment.directory / "var" / "tenants" / f"{outage_slug}.db"
                    locker = threading.Thread(target=lock_db, args=(path, args.db_outage, lock_stop), daemon=True)
                    locker.start()
                    timeline.outage = (time.monotonic(), time.monotonic() + args.db_outage)
                    timeline.note(f"tenant DB of {outage_slug} locked for {args.db_outage:.0f} s")
                elif action == "kill":
                    pid = child_pid_of(deployment, kill_slug)
                    if pid is None:
                        raise RuntimeError(f"no child found for tenant {kill_slug}")
                    os.kill(pid, signal.SIGKILL)
                    timeline.kill = (time.monotonic(), kill_slug, pid)
                    timeline.note(f"child {pid} of tenant {kill_slug} killed (SIGKILL)")
            time.sleep(0.5)
    finally:
        lock_stop.set()
        if locker is not None:
            locker.join(10)


# --- the audit -----------------------------------------------------------------------------------------
@dataclass
class Audit:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def fail(self, text: str) -> None:
        self.problems.append(text)

    @property
    def passed(self) -> bool:
        return not self.problems


#: A killed child's new child reads its server list this soon after its fork (measured well under 2 s on a
#: loaded 2-core machine: imports are preloaded in the parent, the first load is a few small reads).
CHILD_START_BOUND_S = 5.0


def restart_bound_s() -> float:
    """Kill → the new child's server list, from the behaviour: the parent sees the exit at once (sentinel),
    waits the first crash backoff delay (delay 0 is at most base * 2**0, ``supervisor.backoff``), then forks
    a child that starts within ``CHILD_START_BOUND_S``."""
    backoff = crash_backoff()
    return min(backoff.cap, backoff.base * 2.0**0) + CHILD_START_BOUND_S


def audit(args: argparse.Namespace, tenants: dict[str, TenantData], roles: dict[str, str], timeline: Timeline,
          child_start: dict[str, dt.datetime], stop_wall: dt.datetime, samples: list[Any],
          restart_windows: dict[str, float | None]) -> Audit:
    result = Audit()
    interval = args.interval
    lost = duplicates = healthy_count = stored = 0
    killed_slug = timeline.kill[1] if timeline.kill is not None else None
    for slug, tenant in tenants.items():
        killed = slug == killed_slug
        if killed:
            restart = restart_windows.get(slug)
            if restart is None:
                result.fail(f"tenant {slug}: its killed child was not restarted (no new child read its servers)")
            elif restart > restart_bound_s():
                result.fail(f"tenant {slug}: the killed child's restart took {restart:.1f} s (bound "
                            f"{restart_bound_s():.1f} s: first backoff delay + child start-up)")
        for sid, server in tenant.servers.items():
            role = roles.get(server.name, "healthy")
            snaps = tenant.snapshots.get(sid, [])
            stored += len(snaps)
            if role in FAULTS:
                expect = FAULTS[role][1]
                if snaps:
                    result.fail(f"{server.name}: {len(snaps)} snapshots stored for a {role} server")
                if expect.status != "*" and server.status != expect.status:
                    result.fail(f"{server.name}: status {server.status}, expected {expect.status}")
                if server.last_error_class not in expect.error_classes:
                    result.fail(f"{server.name}: error class {server.last_error_class!r}, expected "
                                f"{'/'.join(expect.error_classes)} ({server.last_error})")
                continue
            healthy_count += 1
            if not snaps:
                result.fail(f"{server.name} ({role}): no snapshot at all")
                continue
            times = [s.collected_at for s in snaps]
            gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
            # Lost: every gap of n intervals hides n - 1 collections. Duplicates: two snapshots less than
            # half an interval apart (a restarted child keeps each server's slots).
            missing = sum(max(0, round(gap / interval) - 1) for gap in gaps)
            dup = sum(1 for gap in gaps if gap < interval / 2)
            duplicates += dup
            late_first = (times[0] - child_start[slug]).total_seconds() - (min(interval, 10) + interval + 2)
            if late_first > 0:
                missing += math.ceil(late_first / interval)
            tail = (stop_wall - times[-1]).total_seconds() - (interval + args.collection_timeout + 3)
            if tail > 0:
                missing += math.ceil(tail / interval)
            allowed = 0
            if killed:
                # The bound, not what this run measured: a slow or missing restart must fail, not widen it.
                allowed += math.ceil(restart_bound_s() / interval) + 2
            if role == RESTARTING:
                allowed += timeline.restarts
            if role == FLAPPING and timeline.flap_down:
                allowed += math.ceil((timeline.flap_down[1] - timeline.flap_down[0]) / interval) + 2
            if missing > allowed:
                lost += missing - allowed
                result.fail(f"{server.name} ({role}, tenant {slug}): {missing} slots without a snapshot "
                            f"(tolerance {allowed})")
            elif missing:
                result.notes.append(f"{server.name} ({role}, tenant {slug}): {missing} missing, "
                                    f"within tolerance {allowed}")
            if dup:
                result.fail(f"{server.name}: {dup} duplicate snapshots (less than half an interval apart)")
            check_values(result, server.name, role, snaps, timeline)
            if role in (RESTARTING, FLAPPING, SLOWLOGIN, "healthy") and server.status != "online":
                result.fail(f"{server.name} ({role}): status {server.status} at the end, expected online")
        if tenant.wait_negative:
            result.fail(f"tenant {slug}: {tenant.wait_negative} wait_stats rows with negative increments")
    check_flat(result, samples)
    result.figures.update({"healthy_servers": healthy_count, "snapshots_stored": stored,
                           "snapshots_lost_beyond_tolerance": lost, "duplicates": duplicates})
    return result


def check_values(result: Audit, name: str, role: str, snaps: list[Any], timeline: Timeline) -> None:
    rateless = 0
    for snap in snaps:
        rate = snap.batch_rate
        if rate is None:
            rateless += 1
        elif rate < 0 or rate > 10 * SIM_BATCH_RATE:
            result.fail(f"{name}: absurd Batch Requests/sec {rate} at {snap.collected_at}")
        if snap.interval_seconds is not None and snap.interval_seconds <= 0:
            result.fail(f"{name}: interval_seconds {snap.interval_seconds} at {snap.collected_at}")
        if snap.cpu_percent is not None and not 0 <= snap.cpu_percent <= 100:
            result.fail(f"{name}: cpu_percent {snap.cpu_percent}")
        if snap.memory_percent is not None and not 0 <= snap.memory_percent <= 100:
            result.fail(f"{name}: memory_percent {snap.memory_percent}")
    allowed = 1 + (timeline.restarts if role == RESTARTING else 0) + (1 if role == FLAPPING else 0)
    if rateless > allowed:
        result.fail(f"{name} ({role}): {rateless} samples without a rate (expected at most {allowed})")


def check_flat(result: Audit, samples: list[Any]) -> None:
    usable = [s for s in samples if s.root is not None]
    if len(usable) < 6:
        result.notes.append(f"too few resource samples ({len(usable)}) to judge RSS/fd flatness")
        return
    third = len(usable) // 3
    rss = [(s.root.rss + sum(c.rss for c in s.children)) / MIB for s in usable]
    fds = [float(s.fds) for s in usable]
    for label, series, slack in (("tree RSS MiB", rss, 8.0), ("open fds", fds, 16.0)):
        first = sum(series[:third]) / third
        last = sum(series[-third:]) / third
        result.figures[f"{label} first/last third"] = [round(first, 1), round(last, 1)]
        if last > first * 1.15 + slack:
            result.fail(f"{label} grew from {first:.1f} to {last:.1f} (first vs last third of the run)")


# --- main ----------------------------------------------------------------------------------------------
def run(args: argparse.Namespace, directory: Path) -> Audit:
    from bench.collection_cost import driver_name

    raise_fd_limit()
    servers, groups, roles = build_fleet(args)
    fleet = SimFleet(directory / "sim", servers)
    deployment = Deployment(
        directory / "collector", odbc_driver=driver_name(args.driver), concurrency=8,
        collection_interval=args.interval, collection_timeout=args.collection_timeout,
        login_timeout=min(2.0, args.collection_timeout), heartbeat_timeout=30, server_refresh_interval=5,
        log_level="INFO",
    )
    timeline = Timeline()
    sampler: TreeSampler | None = None
    try:
        fleet.start()
        deployment.register(groups, None, use_cli=len(servers) <= 40)
        print(f"soak: {len(servers)} servers ({len(servers) - len(roles)} healthy) in {len(groups)} tenants, "
              f"interval {args.interval} s, {args.minutes} min, driver {args.driver}", flush=True)
        process = deployment.start()
        if not deployment.wait_children(len(groups), 60):
            raise RuntimeError("children did not start")
        sampler = TreeSampler(process.pid, every=3.0).start()
        drive(args, fleet, deployment, groups, roles, timeline, sampler)
        stop_wall = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        sampler.stop()
        code, seconds = deployment.terminate(args.collection_timeout + 30)
        timeline.note(f"SIGTERM: stopped in {seconds:.1f} s, exit code {code}")
        tenants = {slug: load_tenant(slug, f"sqlite:///{deployment.directory}/var/tenants/{slug}.db")
                   for slug in groups}
        child_start, windows = child_times(deployment, timeline, args.interval)
        result = audit(args, tenants, roles, timeline, child_start, stop_wall, sampler.samples, windows)
        if code != 0:
            result.fail(f"supervisor exit code {code} after SIGTERM")
        result.figures["stop_seconds"] = round(seconds, 2)
        result.figures["restarts"] = timeline.restarts
        result.figures["restart_windows_s"] = windows
        check_logs(result, deployment, timeline)
        return result
    finally:
        tear_down(sampler, deployment, fleet)


def child_times(
    deployment: Deployment, timeline: Timeline, interval: float
) -> tuple[dict[str, dt.datetime], dict[str, float | None]]:
    """First start per tenant (from its first log line) and, for the killed tenant, its restart in seconds:
    kill → the new child's first server list (None: no new child)."""
    first: dict[str, dt.datetime] = {}
    starts: dict[str, list[tuple[dt.datetime, int]]] = {}
    for event in deployment.log_events():
        slug = event.get("tenant")
        if not slug or event.get("event") != "servers.refreshed":
            continue
        at = dt.datetime.fromisoformat(event["timestamp"].rstrip("Z"))
        first.setdefault(slug, at)
        pids = starts.setdefault(slug, [])
        if not pids or pids[-1][1] != event["pid"]:
            pids.append((at, event["pid"]))
    windows: dict[str, float | None] = {}
    if timeline.kill is not None:
        _, slug, pid = timeline.kill
        kill_wall = timeline.start_wall + dt.timedelta(seconds=timeline.kill[0] - timeline.start_mono)
        later = [at for at, p in starts.get(slug, []) if p != pid]
        windows[slug] = round(max(0.0, (later[0] - kill_wall).total_seconds()), 1) if later else None
    return first, windows


def check_logs(result: Audit, deployment: Deployment, timeline: Timeline) -> None:
    events = [e.get("event") for e in deployment.log_events()]
    for needed in ("child.exited", "child.restarting", "writer.db_unavailable", "writer.db_available"):
        if needed not in events:
            result.fail(f"log has no {needed} event")
    with contextlib.suppress(OSError):
        stderr = (deployment.directory / "stderr.txt").read_text(errors="replace")
        if "Traceback" in stderr:
            result.fail("the supervisor wrote a traceback to stderr")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    result = run_in_folder(args.keep, "bench-soak-", lambda folder: run(args, folder))
    for note in result.notes:
        print(f"  note: {note}")
    for key, value in result.figures.items():
        print(f"  {key}: {value}")
    for problem in result.problems:
        print(f"  FAIL: {problem}")
    print(f"audit {'PASSED' if result.passed else 'FAILED'}: "
          f"{result.figures.get('snapshots_lost_beyond_tolerance')} lost, {result.figures.get('duplicates')} "
          f"duplicates, {len(result.problems)} problems")
    if args.json:
        args.json.write_text(json.dumps({"passed": result.passed, "problems": result.problems,
                                         "figures": result.figures, "notes": result.notes}, indent=2, default=str))
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
