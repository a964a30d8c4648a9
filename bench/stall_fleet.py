"""Stalled fleet: the real ``collector-supervisor run`` against a realistic fleet with stalled servers and
black holes, then where the pool's time goes and whether the healthy servers stay on time.

    python -m bench.stall_fleet [--servers 2000] [--tenants 10] [--interval 30] [--minutes 10]
                                [--stalled 0.05] [--blackholes 0.02] [--concurrency 10]
                                [--driver msodbc18|freetds] [--quick]

The fleet (seeded, ``--seed``):
- every server gets its own login latency and query time, each drawn from a lognormal (median 20 ms,
  sigma 0.9) clipped to 5-150 ms and set as the simulator's ``slow_login_ms`` / ``slow_query_ms``: it
  stands in for network latency plus the server's own query time, long-tailed across a real fleet;
- a share ``--stalled`` of the servers stalls for good in one phase of the connection (``stall``:
  mostly query, mid_result and login, also prelogin, before_done and tls), a share ``--blackholes``
  is a black hole (mostly ``stall: connect``, whose TCP connect never completes; a quarter
  ``blackhole``, which accepts and never answers). Both are spread evenly over the tenants.

Measured in the window after the warm-up (two intervals + 5 s), from the tenant DBs and the log (the
collector logs at DEBUG here so that every failed collection is a ``collection.failed`` line with its
``duration_ms``; at INFO the repeats are not logged):
- healthy servers' late-or-missed share: ``bench.analysis``'s punctuality (a collection more than 1 s
  behind the server's grid is late, a grid slot without a snapshot is missed, a server with fewer
  snapshots in the window than whole intervals in it misses the difference);
- where the pool's time goes: slot-seconds of healthy collections (``duration_ms`` of stored snapshots
  and of healthy servers' failures), of stalled and of black-hole collections (``duration_ms`` of their
  ``collection.failed`` lines: the time until the deadline or the driver's own login timeout), and idle,
  over concurrency x tenants x window; also the most slots a tenant's faulty servers held at once;
- p50/p95/max duration of the collections settled as ``timeout``, from their ``duration_ms`` and from
  when the log shows them over (``timeout_ends()``) [both <= collection_timeout + 0.3 s];
- each child's thread count (``/proc/<pid>/task``) and fd count (``/proc/<pid>/fd``), sampled every
  second: at the start and end of the window and their min/max; the CPU of the collector's tree and of
  the children's main threads (scheduling, deadlines, cutting sockets, recording outcomes, logging);
- the load average (``os.getloadavg``) at the start and end: the machine is shared;
- how far the wall clock moved against the monotonic clock in the window (``collected_at`` is wall
  clock, the scheduler's grid monotonic: a clock step or a pause of the machine makes every later
  collection look late), which must stay below 0.5 s for the run to count.

The last line is the verdict: healthy late-or-missed <= 1 %, every timeout <= collection_timeout + 0.3 s,
threads and fds flat (see ``threads_flat()``, ``fds_flat()``), and the clock steady. Exit 1 when one is not.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import random
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.analysis import Punctuality, TenantData, in_window, load_tenant, punctuality, utc_now_naive
from bench.common import (
    Deployment,
    SimFleet,
    SimServer,
    cpu_of,
    fmt,
    make_servers,
    percentile,
    raise_fd_limit,
    run_in_folder,
    run_octet,
    sample_tree,
    split_tenants,
    tear_down,
)
from sqlserver_sim.faults import QUERY_STALLS
from supervisor.children.scheduler import Scheduler

HEALTHY = "healthy"
STALLED = "stalled"
BLACKHOLE = "blackhole"
#: Stall phases in the order they are handed out (6 query, 5 mid_result, 4 login, 2 prelogin,
#: 2 before_done, 1 tls in every 20), so any count gets the mix's front first.
STALL_CYCLE = (
    "query", "mid_result", "login", "prelogin", "query", "mid_result", "login", "before_done", "query",
    "mid_result", "login", "tls", "query", "mid_result", "login", "prelogin", "query", "mid_result",
    "before_done", "query",
)  # fmt: skip
#: Black holes: three in four never complete the TCP connect, one in four accepts and never answers.
BLACKHOLE_CYCLE = ("connect", "blackhole", "connect", "connect")
LATENCY_MEDIAN_MS = 20.0
LATENCY_SIGMA = 0.9
LATENCY_CLIP_MS = (5, 150)
#: The timeout target: collection_timeout plus this.
TIMEOUT_SLACK_S = 0.3
HEALTHY_LATE_TARGET = 0.01
#: A child opens a second pooled SQLite connection (+2 or +3 fds) the first time its server-list
#: refresh overlaps the writer (README, Performance): the only fds a child may gain for good.
SQLITE_SECOND_CONNECTION_FDS = 3
SAMPLE_EVERY = 1.0
#: How far the wall clock may move against the monotonic clock in the window: half the 1 s lateness tolerance.
CLOCK_TOLERANCE_S = 0.5
#: A child's threads besides the pool's: main and writer (neither ODBC driver starts threads of its own:
#: a process that connects, queries and closes with either keeps its one thread).
CHILD_BASE_THREADS = 2


@dataclass(frozen=True)
class Kind:
    category: str  # HEALTHY, STALLED or BLACKHOLE
    fault: str  # "" for healthy, the stall phase, or "blackhole"

    @property
    def after_login(self) -> bool:
        """A stall of the collection itself: the server is online (login works); the others fail before
        the login finishes and make the server offline."""
        return self.category == HEALTHY or self.fault in QUERY_STALLS

    @property
    def label(self) -> str:
        if self.category == HEALTHY:
            return HEALTHY
        return "blackhole (accepts)" if self.fault == "blackhole" else f"stall {self.fault}"


@dataclass
class FleetPlan:
    servers: list[SimServer]
    groups: dict[str, list[SimServer]]
    kinds: dict[str, Kind]  # server name -> kind
    tenant_of: dict[str, str]  # server name -> tenant slug


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.stall_fleet", description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=2000)
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--interval", type=int, default=30)
    parser.add_argument("--minutes", type=float, default=10.0, help="the whole run, warm-up included")
    parser.add_argument("--stalled", type=float, default=0.05, help="share of servers that stall")
    parser.add_argument("--blackholes", type=float, default=0.02, help="share of servers that are black holes")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--collection-timeout", type=float, default=5.0)
    parser.add_argument("--login-timeout", type=float, help="default: min(3, collection timeout), as fleet_run")
    parser.add_argument("--driver", choices=("msodbc18", "freetds"), default="msodbc18")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true",
                        help="100 servers, 4 tenants, 5 s interval, 36 s, collection_timeout 2")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.quick:
        args.servers, args.tenants, args.interval, args.minutes, args.collection_timeout = 100, 4, 5, 0.6, 2.0
    if args.login_timeout is None:
        args.login_timeout = min(3.0, args.collection_timeout)
    if args.tenants < 1 or args.servers < args.tenants:
        parser.error("need 1 <= tenants <= servers")
    if min(args.stalled, args.blackholes) < 0 or args.stalled + args.blackholes >= 1:
        parser.error("--stalled and --blackholes: shares >= 0 that leave healthy servers")
    if args.interval <= args.collection_timeout:
        parser.error("--interval must exceed the collection timeout (a stalled server is collected every slot)")
    return args


# --- the fleet -----------------------------------------------------------------------------------------
def latency_ms(rng: random.Random) -> int:
    value = rng.lognormvariate(math.log(LATENCY_MEDIAN_MS), LATENCY_SIGMA)
    low, high = LATENCY_CLIP_MS
    return round(min(high, max(low, value)))


def spread(total: int, tenants: int) -> list[int]:
    """``total`` split over ``tenants`` as evenly as possible."""
    return [total // tenants + (1 if index < total % tenants else 0) for index in range(tenants)]


def plan_fleet(args: argparse.Namespace, octet: int) -> FleetPlan:
    rng = random.Random(args.seed)
    servers = make_servers(args.servers, octet, prefix="stall")
    for server in servers:
        server.faults = {"slow_login_ms": latency_ms(rng), "slow_query_ms": latency_ms(rng)}
    groups = split_tenants(servers, args.tenants)
    kinds = {server.name: Kind(HEALTHY, "") for server in servers}
    stalled_per_tenant = spread(round(args.servers * args.stalled), args.tenants)
    holes_per_tenant = spread(round(args.servers * args.blackholes), args.tenants)
    stalls = iter(STALL_CYCLE * (1 + sum(stalled_per_tenant) // len(STALL_CYCLE)))
    holes_cycle = iter(BLACKHOLE_CYCLE * (1 + sum(holes_per_tenant) // len(BLACKHOLE_CYCLE)))
    for members in groups.values():
        rng.shuffle(members)  # a seeded order per tenant: its first servers are the faulty ones
    # Round-robin over the tenants, so that each tenant gets the front of the mix in turn.
    for rank in range(max([*stalled_per_tenant, *holes_per_tenant, 0]) * 2):
        for tenant_index, members in enumerate(groups.values()):
            stalled, holes = stalled_per_tenant[tenant_index], holes_per_tenant[tenant_index]
            if rank >= stalled + holes:
                continue
            server = members[rank]
            if rank < stalled:
                phase = next(stalls)
                server.faults["stall"] = phase
                server.tls = phase == "tls"
                kinds[server.name] = Kind(STALLED, phase)
            else:
                hole = next(holes_cycle)
                server.faults.update({"stall": "connect"} if hole == "connect" else {"blackhole": True})
                kinds[server.name] = Kind(BLACKHOLE, hole)
    tenant_of = {server.name: slug for slug, members in groups.items() for server in members}
    return FleetPlan(servers, groups, kinds, tenant_of)


# --- per-child threads and fds -------------------------------------------------------------------------
def count_entries(path: str) -> int | None:
    try:
        return len(os.listdir(path))
    except OSError:
        return None


def cpu_ticks(path: str) -> int | None:
    """utime + stime (clock ticks) from a /proc stat file."""
    try:
        with open(path, encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[11]) + int(fields[12])


@dataclass
class ChildSeries:
    pid: int
    threads: list[int] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    #: CPU ticks of the whole child and of its main thread (tid = pid), at the first and last sample.
    cpu: list[tuple[int | None, int | None]] = field(default_factory=list)

    def cpu_seconds(self) -> tuple[float, float] | None:
        """(whole child, main thread) CPU seconds between the first and the last sample."""
        if len(self.cpu) < 2 or None in (*self.cpu[0], *self.cpu[-1]):
            return None
        tick = os.sysconf("SC_CLK_TCK")
        (child0, main0), (child1, main1) = self.cpu[0], self.cpu[-1]
        return (child1 - child0) / tick, (main1 - main0) / tick  # type: ignore[operator]


class ChildSampler:
    """Every ``every`` seconds, each child's entries in /proc/<pid>/task and /proc/<pid>/fd."""

    def __init__(self, pids: dict[str, int], every: float = SAMPLE_EVERY) -> None:
        self.series = {slug: ChildSeries(pid) for slug, pid in pids.items()}
        #: time.time() - time.monotonic() at each sample: constant unless the wall clock is stepped or
        #: slewed (collected_at, and so lateness, is wall clock; the scheduler's grid is monotonic).
        self.clock_offsets: list[float] = []
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        self.clock_offsets.append(time.time() - time.monotonic())
        for series in self.series.values():
            threads = count_entries(f"/proc/{series.pid}/task")
            fds = count_entries(f"/proc/{series.pid}/fd")
            if threads is not None and fds is not None:
                series.threads.append(threads)
                series.fds.append(fds)

    def sample_cpu(self) -> None:
        for series in self.series.values():
            series.cpu.append((cpu_ticks(f"/proc/{series.pid}/stat"),
                               cpu_ticks(f"/proc/{series.pid}/task/{series.pid}/stat")))

    def start(self) -> ChildSampler:
        self.sample_cpu()
        self.sample()
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(10)
        self.sample()
        self.sample_cpu()


def held_for_good(series: list[int]) -> tuple[int, int] | None:
    """(minimum over the first quarter of the samples, minimum over the last quarter): what a child
    holds for good at the start and at the end of the window. Minimums, because a collection in flight
    holds a socket, and a written-off one its thread, only for a moment (the deadline shuts the socket
    down, the driver call returns, the thread exits); the faulty servers' collections come back on the
    same grid every interval, so both quarters (several intervals each) see the same fewest in flight."""
    if len(series) < 4:
        return None
    quarter = len(series) // 4
    return min(series[:quarter]), min(series[-quarter:])


def threads_flat(series: list[int], concurrency: int) -> bool:
    """A child's threads: main, writer and the pool's counted threads, which never exit and are never
    more than ``concurrency`` (started on demand, so their number may still grow up to that); written-off
    threads come and go. Flat: what it holds for good never exceeds main + writer + a full pool."""
    held = held_for_good(series)
    return held is not None and max(held) <= CHILD_BASE_THREADS + concurrency


def fds_flat(series: list[int]) -> bool:
    """A child's fds: its pipes and SQLite files, one socket per kept connection (every healthy server
    is connected in the warm-up), sockets of collections in flight. Flat: what it holds for good grows
    by no more than a second pooled SQLite connection."""
    held = held_for_good(series)
    return held is not None and held[1] - held[0] <= SQLITE_SECOND_CONNECTION_FDS


def child_pids(deployment: Deployment, slugs: list[str]) -> dict[str, int]:
    """The newest child of each tenant, from its ``tenant.started`` line."""
    pids: dict[str, int] = {}
    for event in deployment.log_events():
        if event.get("event") == "tenant.started" and event.get("tenant") in slugs:
            pids[event["tenant"]] = int(event["pid"])
    return pids


def wait_first_lines(deployment: Deployment, slugs: list[str], timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        pids = child_pids(deployment, slugs)
        if len(pids) == len(slugs) or time.monotonic() > deadline:
            return pids
        time.sleep(0.5)


# --- the run -------------------------------------------------------------------------------------------
def run(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    from bench.collection_cost import driver_name

    raise_fd_limit()
    plan = plan_fleet(args, run_octet())
    fleet = SimFleet(directory / "sim", plan.servers)
    deployment = Deployment(
        directory / "collector", odbc_driver=driver_name(args.driver), concurrency=args.concurrency,
        collection_interval=args.interval, collection_timeout=args.collection_timeout,
        login_timeout=args.login_timeout, heartbeat_timeout=max(60.0, args.collection_timeout * 3),
        log_level="DEBUG",
    )
    load_at_launch = os.getloadavg()
    sampler: ChildSampler | None = None
    try:
        fleet.start()
        deployment.register(plan.groups, None, use_cli=False)
        urls = {slug: f"sqlite:///{deployment.directory}/var/tenants/{slug}.db" for slug in plan.groups}
        process = deployment.start()
        if not deployment.wait_children(len(plan.groups), 60):
            raise RuntimeError(f"children did not start: {(deployment.directory / 'stderr.txt').read_text()[-2000:]}")
        pids = wait_first_lines(deployment, list(plan.groups), 30)
        warmup = 2 * args.interval + 5.0
        time.sleep(warmup)
        pids = child_pids(deployment, list(plan.groups))
        window_start = utc_now_naive()
        load_start = os.getloadavg()
        start_tree = sample_tree(process.pid)
        sim_cpu0 = cpu_of(fleet.pids())
        sampler = ChildSampler(pids).start()
        deadline = time.monotonic() + args.minutes * 60 - warmup
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the supervisor exited with {process.returncode}")
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        sampler.stop()
        window_end = utc_now_naive()
        end_tree = sample_tree(process.pid)
        sim_cpu = cpu_of(fleet.pids()) - sim_cpu0
        load_end = os.getloadavg()
        pids_end = child_pids(deployment, list(plan.groups))
        exit_code, stop_seconds = deployment.terminate(args.collection_timeout + 30)
        tenants = {slug: load_tenant(slug, url) for slug, url in urls.items()}
        failures = failed_collections(deployment, window_start, window_end)
        result = figures(args, plan, tenants, failures, window_start, window_end)
        result["children"] = {
            slug: child_figures(series, args.concurrency, restarted=pids_end.get(slug) != series.pid)
            for slug, series in sampler.series.items()
        }
        result["cpu"] = cpu_figures(start_tree.cpu_seconds, end_tree.cpu_seconds, sim_cpu, result)
        children_cpu = [c for c in result["children"].values() if c["cpu_s"] is not None]
        result["cpu"]["children_cores"] = sum(c["cpu_s"] for c in children_cpu) / result["window_s"]
        result["cpu"]["children_main_thread_cores"] = (
            sum(c["main_thread_cpu_s"] for c in children_cpu) / result["window_s"])
        result["clock_moved_s"] = max(sampler.clock_offsets) - min(sampler.clock_offsets)
        result["load"] = {"launch": load_at_launch, "window_start": load_start, "window_end": load_end}
        result["stop"] = {"exit_code": exit_code, "seconds": stop_seconds}
        result["verdict"] = verdict(result, args)
        return result
    finally:
        tear_down(sampler, deployment, fleet)


@dataclass(frozen=True)
class Failure:
    at: dt.datetime  # when the child recorded it (the collection's end)
    server: str
    error_class: str
    duration_ms: int


def failed_collections(deployment: Deployment, start: dt.datetime, end: dt.datetime) -> list[Failure]:
    """Every ``collection.failed`` line that ended in the window."""
    found = []
    for event in deployment.log_events():
        if event.get("event") != "collection.failed":
            continue
        at = dt.datetime.fromisoformat(event["timestamp"]).astimezone(dt.UTC).replace(tzinfo=None)
        if start <= at < end:
            found.append(Failure(at, str(event.get("server")), str(event.get("error_class")),
                                 int(event.get("duration_ms") or 0)))
    return found


def timeout_ends(failures: list[Failure], timeout: float, interval: float, phases: dict[str, float]) -> list[float]:
    """How long after its server's grid slot each ``timeout`` was over, as the log sees it: the
    ``collection.failed`` line is written on the child's main thread after it cut the sockets and freed the
    slot. ``phases``: each server's slot on the wall clock, seconds into the interval (the scheduler's own
    phase). A collection may start up to ``START_AHEAD`` before its slot, so an on-time one is over by
    ``timeout`` after the slot at the latest. Unlike ``duration_ms`` (from the collection's start to when the
    main thread ended it) this also sees a collection started after its slot."""
    ends = []
    for failure in failures:
        phase = phases.get(failure.server)
        if failure.error_class != "timeout" or phase is None:
            continue
        over = failure.at.timestamp()
        slot = phase + round((over - timeout - phase) / interval) * interval
        ends.append(over - slot)
    return ends


def grid_phases(tenants: dict[str, TenantData], interval: float) -> dict[str, float]:
    """Each server's slot, seconds into the interval on the wall clock, as its tenant's child computes it."""
    phases = {}
    for tenant in tenants.values():
        at_zero = Scheduler(salt=tenant.slug, wall_clock=lambda: 0.0)
        for sid, row in tenant.servers.items():
            phases[row.name] = at_zero.first_delay(sid, interval)
    return phases


def healthy_punctuality(tenants: dict[str, TenantData], plan: FleetPlan, start: dt.datetime, end: dt.datetime,
                        interval: float) -> Punctuality:
    whole_slots = math.floor((end - start).total_seconds() / interval)
    total = Punctuality()
    for tenant in tenants.values():
        for sid, row in tenant.servers.items():
            if plan.kinds[row.name].category != HEALTHY:
                continue
            one = punctuality([s.collected_at for s in in_window(tenant.snapshots.get(sid, []), start, end)],
                              interval)
            edge = max(0, whole_slots - (one.collections + one.missed))  # slots at the window's edges
            one.missed += edge
            one.slots += edge
            total.add(one)
    return total


def peak_overlap(spans: list[tuple[float, float]]) -> int:
    """The most intervals (start, end) open at one moment."""
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda edge: (edge[0], edge[1]))
    peak = current = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak


def figures(args: argparse.Namespace, plan: FleetPlan, tenants: dict[str, TenantData], failures: list[Failure],
            start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
    window_s = (end - start).total_seconds()
    punctual = healthy_punctuality(tenants, plan, start, end, args.interval)
    slot_s: Counter[str] = Counter()
    collections: Counter[str] = Counter()
    faulty_with_snapshots = []
    for tenant in tenants.values():
        for sid, snaps in tenant.snapshots.items():
            kind = plan.kinds[tenant.servers[sid].name]
            inside = in_window(snaps, start, end)
            slot_s[kind.category] += sum((s.duration_ms or 0) for s in inside) / 1000
            collections["ok"] += len(inside)
            if kind.category != HEALTHY and inside:
                faulty_with_snapshots.append(tenant.servers[sid].name)
    by_kind: dict[str, list[Failure]] = defaultdict(list)
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for failure in failures:
        kind = plan.kinds.get(failure.server, Kind(HEALTHY, ""))
        slot_s[kind.category] += failure.duration_ms / 1000
        by_kind[kind.label].append(failure)
        if kind.category != HEALTHY:
            ended = failure.at.timestamp()
            spans[plan.tenant_of[failure.server]].append((ended - failure.duration_ms / 1000, ended))
    capacity = args.concurrency * len(plan.groups) * window_s
    busy = sum(slot_s.values())
    timeouts = [f.duration_ms / 1000 for f in failures if f.error_class == "timeout"]
    phases = grid_phases(tenants, args.interval)
    ends = timeout_ends(failures, args.collection_timeout, args.interval, phases)
    faulty = [name for name, kind in plan.kinds.items() if kind.category != HEALTHY]
    failed_servers = {f.server for f in failures}
    counts = Counter(kind.label for kind in plan.kinds.values())
    return {
        "plan": {key: getattr(args, key) for key in (
            "servers", "tenants", "interval", "minutes", "stalled", "blackholes", "concurrency",
            "collection_timeout", "login_timeout", "driver", "seed")},
        "servers_by_kind": dict(sorted(counts.items())),
        "window_s": window_s,
        "window": [start.isoformat(), end.isoformat()],
        "collections_ok": collections["ok"],
        "healthy": {
            "late": punctual.late, "missed_slots": punctual.missed, "slots": punctual.slots,
            "late_or_missed_share": punctual.late_share,
            "failures": len(by_kind.get(HEALTHY, [])),
        },
        "pool": {
            "capacity_slot_s": capacity,
            "healthy_slot_s": slot_s[HEALTHY],
            "stalled_slot_s": slot_s[STALLED],
            "blackhole_slot_s": slot_s[BLACKHOLE],
            "idle_slot_s": capacity - busy,
            "healthy_share": slot_s[HEALTHY] / capacity if capacity else math.nan,
            "stalled_share": slot_s[STALLED] / capacity if capacity else math.nan,
            "blackhole_share": slot_s[BLACKHOLE] / capacity if capacity else math.nan,
            "idle_share": (capacity - busy) / capacity if capacity else math.nan,
            "before_login_slot_s": sum(f.duration_ms for f in failures
                                       if not plan.kinds.get(f.server, Kind(HEALTHY, "")).after_login) / 1000,
            "peak_faulty_in_flight_per_tenant": max((peak_overlap(s) for s in spans.values()), default=0),
            "peak_faulty_in_flight_by_tenant": {slug: peak_overlap(spans.get(slug, [])) for slug in plan.groups},
            "mean_faulty_in_flight_per_tenant": (slot_s[STALLED] + slot_s[BLACKHOLE]) / len(plan.groups) / window_s
            if window_s else math.nan,
        },
        "timeouts": {
            "count": len(timeouts),
            "min_s": min(timeouts, default=math.nan),
            "p50_s": percentile(timeouts, 50),
            "p95_s": percentile(timeouts, 95),
            "max_s": max(timeouts, default=math.nan),
            "end_p50_s": percentile(ends, 50),
            "end_p95_s": percentile(ends, 95),
            "end_max_s": max(ends, default=math.nan),
            "target_s": args.collection_timeout + TIMEOUT_SLACK_S,
        },
        "faulty": {
            "servers": len(faulty),
            "servers_failed_in_window": len(failed_servers & set(faulty)),
            "servers_with_snapshots": sorted(faulty_with_snapshots),
            "failures": sum(len(v) for k, v in by_kind.items() if k != HEALTHY),
        },
        "by_kind": {
            label: {
                "servers": counts[label],
                "failures": len(items),
                "error_classes": dict(Counter(f.error_class for f in items)),
                "duration_p50_s": percentile([f.duration_ms / 1000 for f in items], 50),
                "duration_max_s": max(f.duration_ms / 1000 for f in items),
                "slot_s": sum(f.duration_ms for f in items) / 1000,
            }
            for label, items in sorted(by_kind.items())
        },
    }


def child_figures(series: ChildSeries, concurrency: int, *, restarted: bool) -> dict[str, Any]:
    def summary(values: list[int]) -> dict[str, int | None]:
        if not values:
            return {"start": None, "end": None, "min": None, "max": None}
        return {"start": values[0], "end": values[-1], "min": min(values), "max": max(values)}

    cpu = series.cpu_seconds()
    return {
        "pid": series.pid,
        "samples": len(series.threads),
        "cpu_s": None if cpu is None else cpu[0],
        "main_thread_cpu_s": None if cpu is None else cpu[1],
        "restarted": restarted,
        "threads": summary(series.threads),
        "fds": summary(series.fds),
        "threads_held_first_last_quarter": held_for_good(series.threads),
        "fds_held_first_last_quarter": held_for_good(series.fds),
        "threads_flat": not restarted and threads_flat(series.threads, concurrency),
        "fds_flat": not restarted and fds_flat(series.fds),
    }


def cpu_figures(start_s: float, end_s: float, sim_s: float, result: dict[str, Any]) -> dict[str, float]:
    window_s = result["window_s"]
    used = end_s - start_s
    collections = result["collections_ok"] + result["faulty"]["failures"] + result["healthy"]["failures"]
    return {
        "collector_cpu_s": used,
        "collector_cores": used / window_s if window_s else math.nan,
        "cpu_s_per_1000_collections": 1000 * used / collections if collections else math.nan,
        "simulator_cores": sim_s / window_s if window_s else math.nan,
    }


def verdict(result: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    timeouts = result["timeouts"]
    children = result["children"].values()
    checks = {
        "healthy_late_ok": result["healthy"]["late_or_missed_share"] <= HEALTHY_LATE_TARGET,
        # No timeout at all is a failure too: the stalled servers must have been collected.
        "timeouts_ok": timeouts["count"] > 0 and max(timeouts["max_s"], timeouts["end_max_s"]) <= timeouts["target_s"],
        "threads_flat": all(c["threads_flat"] for c in children),
        "fds_flat": all(c["fds_flat"] for c in children),
        # Not a target: a run in which the wall clock moved says nothing about lateness (a step shifts
        # every later collected_at against the monotonic grid, and the window's wall length is off).
        "clock_steady": result["clock_moved_s"] <= CLOCK_TOLERANCE_S,
    }
    return {**checks, "passed": all(checks.values())}


# --- the report ----------------------------------------------------------------------------------------
def report(result: dict[str, Any]) -> None:
    plan, pool, healthy, timeouts, cpu = (result[k] for k in ("plan", "pool", "healthy", "timeouts", "cpu"))
    print(f"stalled fleet: {plan['servers']} servers in {plan['tenants']} tenants, interval {plan['interval']} s, "
          f"{plan['minutes']} min, driver {plan['driver']}, concurrency {plan['concurrency']}, collection_timeout "
          f"{plan['collection_timeout']:g} s, login_timeout {plan['login_timeout']:g} s, seed {plan['seed']}")
    print(f"  servers                      {', '.join(f'{k} {v}' for k, v in result['servers_by_kind'].items())}")
    load = result["load"]
    print(f"  load average (1/5/15 min)    launch {_load(load['launch'])}, window start {_load(load['window_start'])}, "
          f"end {_load(load['window_end'])}")
    if not result["verdict"]["clock_steady"]:
        print(f"  WARNING: the wall clock moved {fmt(result['clock_moved_s'])} s against the monotonic clock in the "
              f"window (stepped, or the machine paused): the lateness figures below are not reliable")
    print(f"  measured window              {fmt(result['window_s'], 0)} s (after warm-up); "
          f"{result['collections_ok']} snapshots stored")
    print(f"  healthy late or missed       {fmt(100 * healthy['late_or_missed_share'])} % ({healthy['late']} late, "
          f"{healthy['missed_slots']} missed of {healthy['slots']} slots); healthy failures {healthy['failures']}")
    print(f"  pool slot-seconds            {fmt(pool['capacity_slot_s'], 0)} = healthy "
          f"{fmt(pool['healthy_slot_s'], 0)} ({fmt(100 * pool['healthy_share'], 1)} %) + stalled "
          f"{fmt(pool['stalled_slot_s'], 0)} ({fmt(100 * pool['stalled_share'], 1)} %) + black holes "
          f"{fmt(pool['blackhole_slot_s'], 0)} ({fmt(100 * pool['blackhole_share'], 1)} %) + idle "
          f"{fmt(pool['idle_slot_s'], 0)} ({fmt(100 * pool['idle_share'], 1)} %)")
    faulty_s = pool["stalled_slot_s"] + pool["blackhole_slot_s"]
    print(f"  of the faulty slot-seconds   {fmt(pool['before_login_slot_s'], 0)} "
          f"({fmt(100 * pool['before_login_slot_s'] / faulty_s if faulty_s else math.nan, 1)} %) before the login "
          f"(offline servers: black holes, connect/prelogin/tls/login stalls), "
          f"{fmt(faulty_s - pool['before_login_slot_s'], 0)} after it (online servers whose collection stalls)")
    print(f"  faulty collections in flight per tenant: mean {fmt(pool['mean_faulty_in_flight_per_tenant'])} slots, "
          f"peak {pool['peak_faulty_in_flight_per_tenant']} of {plan['concurrency']} "
          f"(by tenant {list(pool['peak_faulty_in_flight_by_tenant'].values())})")
    print(f"  faulty servers               {result['faulty']['failures']} failures of "
          f"{result['faulty']['servers_failed_in_window']}/{result['faulty']['servers']} faulty servers, "
          f"{len(result['faulty']['servers_with_snapshots'])} of them with snapshots")
    print(f"  timeouts, duration_ms        {timeouts['count']}: p50 / p95 / max {fmt(timeouts['p50_s'])} / "
          f"{fmt(timeouts['p95_s'])} / {fmt(timeouts['max_s'])} s (min {fmt(timeouts['min_s'])}; "
          f"target <= {fmt(timeouts['target_s'])} s)")
    print(f"  timeouts over, in the log    p50 / p95 / max {fmt(timeouts['end_p50_s'])} / "
          f"{fmt(timeouts['end_p95_s'])} / {fmt(timeouts['end_max_s'])} s after their server's grid slot "
          f"(see timeout_ends())")
    for label, kind in result["by_kind"].items():
        classes = ", ".join(f"{k} {v}" for k, v in sorted(kind["error_classes"].items()))
        print(f"    {label:<22} {kind['servers']:>5} servers, {kind['failures']:>5} failures ({classes}), "
              f"duration p50 {fmt(kind['duration_p50_s'])} s, max {fmt(kind['duration_max_s'])} s, "
              f"{fmt(kind['slot_s'], 0)} slot-s")
    print(f"  per child: start -> end (min..max) [held for good: first -> last quarter's minimum]; threads flat: "
          f"held <= {CHILD_BASE_THREADS} + {plan['concurrency']}, fds flat: held grows <= "
          f"{SQLITE_SECOND_CONNECTION_FDS}")
    for slug, child in result["children"].items():
        t, f = child["threads"], child["fds"]
        flags = "" if child["threads_flat"] and child["fds_flat"] else "  NOT FLAT"
        restarted = " (restarted in the window)" if child["restarted"] else ""
        print(f"    {slug} pid {child['pid']:<8} threads {t['start']} -> {t['end']} ({t['min']}..{t['max']}) "
              f"{_held(child['threads_held_first_last_quarter'])}, fds {f['start']} -> {f['end']} "
              f"({f['min']}..{f['max']}) {_held(child['fds_held_first_last_quarter'])}{restarted}{flags}")
    print(f"  collector tree CPU           {fmt(cpu['collector_cores'], 3)} cores, "
          f"{fmt(cpu['cpu_s_per_1000_collections'])} CPU s per 1,000 collections (logging at DEBUG); "
          f"simulator {fmt(cpu['simulator_cores'], 3)} cores")
    print(f"  children's CPU               {fmt(cpu['children_cores'], 3)} cores, of it their main threads "
          f"{fmt(cpu['children_main_thread_cores'], 3)} (scheduling, deadlines, socket cuts, outcomes, logging)")
    print(f"  SIGTERM to full stop         {fmt(result['stop']['seconds'])} s, exit {result['stop']['exit_code']}")
    v = result["verdict"]
    print(f"verdict: {'PASS' if v['passed'] else 'FAIL'}: healthy late or missed "
          f"{fmt(100 * healthy['late_or_missed_share'])} % [<= {100 * HEALTHY_LATE_TARGET:g} %] "
          f"{_ok(v['healthy_late_ok'])}; "
          f"timeouts max {fmt(timeouts['max_s'])} s, over in the log by {fmt(timeouts['end_max_s'])} s "
          f"[<= {fmt(timeouts['target_s'])} s] {_ok(v['timeouts_ok'])}; "
          f"threads flat {_ok(v['threads_flat'])}; fds flat {_ok(v['fds_flat'])}"
          + ("" if v["clock_steady"] else f"; wall clock moved {fmt(result['clock_moved_s'])} s: run again"))


def _load(values: list[float] | tuple[float, ...]) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def _held(held: tuple[int, int] | list[int] | None) -> str:
    return "[n/a]" if held is None else f"[{held[0]} -> {held[1]}]"


def _ok(value: bool) -> str:
    return "ok" if value else "MISSED"


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    result = run_in_folder(args.keep, "bench-stall-", lambda folder: run(args, folder))
    with contextlib.suppress(BrokenPipeError):
        report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    return 0 if result["verdict"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
