"""Fleet run: the real ``collector-supervisor run`` against a simulated fleet, then figures.

    python -m bench.fleet_run [--servers 1000] [--tenants 50] [--interval 30] [--minutes 5]
                              [--driver msodbc18|freetds] [--db sqlite|postgresql] [--tls] [--quick] [--big]

S servers in T tenants (plus one tenant without servers, to measure an idle child), interval I,
D minutes. Prints collections/s, the share of late starts (see ``bench.analysis``), p50/p95/p99
collection duration, CPU seconds of the collector's process tree per 1,000 collections, USS per idle
and busy child, parent RSS, fds and RSS at start and end, storage growth per server per day, and the
time from SIGTERM to full stop. Runs of 5,000 servers and more need ``--big``. ``--tls``: the servers
speak TLS and are registered with ``encrypt = yes`` (the production default) and a trusted certificate, so
every login and kept connection is encrypted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.analysis import Punctuality, TenantData, duration_percentiles, in_window, load_tenant, punctuality
from bench.common import (
    MIB,
    PLAIN,
    TLS,
    Deployment,
    SimFleet,
    SimServer,
    TreeSample,
    TreeSampler,
    cpu_of,
    fmt,
    make_servers,
    pg_available,
    pg_drop,
    pg_url,
    raise_fd_limit,
    run_in_folder,
    run_octet,
    sample_tree,
    split_tenants,
    tear_down,
)

IDLE_TENANT = "idle"
BIG = 5000


@dataclass
class RunPlan:
    servers: int
    tenants: int
    interval: int
    minutes: float
    driver: str
    db: str
    concurrency: int
    collection_timeout: float
    tls: bool = False


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_run", description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--interval", type=int, default=30)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--collection-timeout", type=float, default=5.0)
    parser.add_argument("--driver", choices=("msodbc18", "freetds"), default="msodbc18")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--tls", action="store_true", help="servers speak TLS; encrypt = yes, certificate trusted")
    parser.add_argument("--quick", action="store_true", help="40 servers, 4 tenants, 5 s interval, 30 s")
    parser.add_argument("--big", action="store_true", help=f"allow {BIG:,} servers or more")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.quick:
        args.servers, args.tenants, args.interval, args.minutes = 40, 4, 5, 0.5
    if args.servers >= BIG and not args.big:
        parser.error(f"--servers {args.servers} needs --big (a 2-core machine is saturated)")
    if args.tenants < 1 or args.servers < args.tenants:
        parser.error("need 1 <= tenants <= servers")
    return args


def run(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    from bench.collection_cost import driver_name

    plan = RunPlan(args.servers, args.tenants, args.interval, args.minutes, args.driver, args.db, args.concurrency,
                   args.collection_timeout, args.tls)
    encryption = TLS if plan.tls else PLAIN
    raise_fd_limit()
    octet = run_octet()
    servers = make_servers(plan.servers, octet, prefix="fleet", tls=plan.tls)
    groups: dict[str, list[SimServer]] = split_tenants(servers, plan.tenants)
    groups[IDLE_TENANT] = []
    db_urls: dict[str, str] = {}
    if plan.db == "postgresql":
        if not pg_available():
            raise SystemExit("PostgreSQL is not reachable at 127.0.0.1:5432")
        db_urls = {slug: pg_url(f"bench_{octet}_{slug}") for slug in groups}
    fleet = SimFleet(directory / "sim", servers)
    deployment = Deployment(
        directory / "collector", odbc_driver=driver_name(plan.driver), concurrency=plan.concurrency,
        collection_interval=plan.interval, collection_timeout=plan.collection_timeout,
        login_timeout=min(3.0, plan.collection_timeout), heartbeat_timeout=max(60.0, plan.collection_timeout * 3),
        encrypt=encryption.encrypt,
    )
    sampler: TreeSampler | None = None
    try:
        fleet.start()
        started = time.monotonic()
        deployment.register(groups, None, use_cli=plan.servers <= 50, db_urls=db_urls, encryption=encryption)
        registration_s = time.monotonic() - started
        urls = {slug: db_urls.get(slug) or f"sqlite:///{deployment.directory}/var/tenants/{slug}.db"
                for slug in groups}
        process = deployment.start()
        if not deployment.wait_children(len(groups), 60):
            raise RuntimeError(f"children did not start: {(deployment.directory / 'stderr.txt').read_text()[-2000:]}")
        sampler = TreeSampler(process.pid, every=5.0).start()
        # Warm-up: first collections are spread over one interval; one more, so every server has connected once.
        warmup = 2 * plan.interval + 5.0
        time.sleep(warmup)
        window_start = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        window_mono = time.monotonic()
        start_tree = sample_tree(process.pid)
        sim_cpu0 = cpu_of(fleet.pids())
        deadline = time.monotonic() + plan.minutes * 60 - warmup
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the supervisor exited with {process.returncode}")
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        window_end = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        end_tree = sample_tree(process.pid)
        sim_cpu = cpu_of(fleet.pids()) - sim_cpu0
        idle_pid = _idle_child_pid(deployment)
        sampler.stop()
        exit_code, stop_seconds = deployment.terminate(plan.collection_timeout + 30)
        tenants = {slug: load_tenant(slug, url, with_bytes=True) for slug, url in urls.items()}
        in_window_samples = [sample for sample in sampler.samples if sample.at >= window_mono]
        result = figures(plan, tenants, start_tree, end_tree, in_window_samples, window_start, window_end, sim_cpu,
                         idle_pid, exit_code, stop_seconds, registration_s, deployment)
        return result
    finally:
        tear_down(sampler, deployment, fleet)
        if db_urls:
            pg_drop([url.rsplit("/", 1)[1] for url in db_urls.values()])


def _idle_child_pid(deployment: Deployment) -> int | None:
    """The child of the tenant without servers: the one whose log says it serves 0 servers."""
    for event in deployment.log_events():
        if event.get("event") in ("tenant.started", "servers.refreshed") and event.get("tenant") == IDLE_TENANT:
            return int(event["pid"])
    for event in deployment.log_events():
        if event.get("tenant") == IDLE_TENANT and event.get("event") == "child.started":
            return int(event.get("child_pid") or 0) or None
    return None


def figures(plan: RunPlan, tenants: dict[str, TenantData], start: TreeSample, end: TreeSample,
            samples: list[TreeSample], window_start: dt.datetime, window_end: dt.datetime, sim_cpu: float,
            idle_pid: int | None, exit_code: int | None, stop_seconds: float, registration_s: float,
            deployment: Deployment) -> dict[str, Any]:
    window_s = (window_end - window_start).total_seconds()
    punctual = Punctuality()
    collections = duplicates = 0
    snapshots_total = 0
    for tenant in tenants.values():
        for snaps in tenant.snapshots.values():
            snapshots_total += len(snaps)
            inside = in_window(snaps, window_start, window_end)
            one, extra = server_slots([s.collected_at for s in inside], plan.interval, window_s)
            collections += one.collections
            duplicates += extra
            punctual.add(one)
    for tenant in tenants.values():  # servers without a single snapshot in the window
        for sid in tenant.servers:
            if sid not in tenant.snapshots:
                punctual.missed += math.floor(window_s / plan.interval)
                punctual.slots += math.floor(window_s / plan.interval)
    failures = sum(1 for e in deployment.log_events() if e.get("event") == "collection.failed")
    cpu_s = end.cpu_seconds - start.cpu_seconds
    durations = duration_percentiles(tenants.values(), window_start, window_end)
    busy_uss = [c.uss for c in end.children if c.pid != idle_pid]
    idle = next((c for c in end.children if c.pid == idle_pid), None)
    rows = snapshots_total + sum(t.wait_rows for t in tenants.values())
    bytes_total = sum(sum(t.table_bytes.values()) for t in tenants.values())
    per_day = 86400 / plan.interval
    samples = [s for s in samples if s.root]  # the measured window, every 5 s
    rss_series = [s.root.rss + sum(c.rss for c in s.children) for s in samples if s.root]
    fd_series = [s.fds for s in samples]
    idle_uss_series = [c.uss for s in samples for c in s.children if c.pid == idle_pid]
    busy_uss_series = [statistics.median(c.uss for c in s.children if c.pid != idle_pid)
                       for s in samples if any(c.pid != idle_pid for c in s.children)]
    return {
        "plan": plan.__dict__,
        "registration_s": registration_s,
        "window_s": window_s,
        "collections": collections,
        "duplicates": duplicates,
        "collections_per_s": collections / window_s if window_s else math.nan,
        "expected_per_s": plan.servers / plan.interval,
        "failed_collections_logged": failures,
        "late_share": punctual.late_share,
        "late": punctual.late,
        "missed_slots": punctual.missed,
        "slots": punctual.slots,
        "duration_ms": durations,
        "cpu_s_per_1000": 1000 * cpu_s / collections if collections else math.nan,
        "cpu_cores_collector": cpu_s / window_s if window_s else math.nan,
        "cpu_cores_simulator": sim_cpu / window_s if window_s else math.nan,
        "cpu_cores_parent": (end.root.cpu_seconds - start.root.cpu_seconds) / window_s
        if window_s and end.root and start.root else math.nan,
        "uss_idle_child_mib": idle.uss / MIB if idle else math.nan,
        "uss_busy_child_mib_median": statistics.median(busy_uss) / MIB if busy_uss else math.nan,
        "uss_busy_child_mib_max": max(busy_uss) / MIB if busy_uss else math.nan,
        "parent_rss_mib": end.root.rss / MIB if end.root else math.nan,
        "fds_start": start.fds,
        "fds_end": end.fds,
        "fds_min_max": [min(fd_series), max(fd_series)] if fd_series else None,
        "child_fds_min_max": [min(c.fds for c in end.children), max(c.fds for c in end.children)]
        if end.children else None,
        "parent_fds": end.root.fds if end.root else None,
        "tree_rss_mib_start": (start.root.rss + sum(c.rss for c in start.children)) / MIB if start.root else None,
        "tree_rss_mib_end": (end.root.rss + sum(c.rss for c in end.children)) / MIB if end.root else None,
        "tree_rss_mib_min_max": [min(rss_series) / MIB, max(rss_series) / MIB] if rss_series else None,
        "tree_rss_mib_per_minute": [round(v / MIB, 1) for v in rss_series[::12]],
        "fds_per_minute": fd_series[::12],
        "uss_idle_child_mib_first_last_max": _first_last_max(idle_uss_series),
        "uss_busy_child_median_mib_first_last_max": _first_last_max(busy_uss_series),
        "storage_rows_per_server_day": rows / snapshots_total * per_day if snapshots_total else math.nan,
        "storage_bytes_per_server_day": bytes_total / snapshots_total * per_day if snapshots_total else math.nan,
        "storage_rows_per_snapshot": rows / snapshots_total if snapshots_total else math.nan,
        "storage_bytes_per_snapshot": bytes_total / snapshots_total if snapshots_total else math.nan,
        "stop_exit_code": exit_code,
        "stop_seconds": stop_seconds,
        "stop_target_s": plan.collection_timeout + 2,
    }


def server_slots(times: list[dt.datetime], interval: float, window_s: float) -> tuple[Punctuality, int]:
    """One server's snapshots in the window: its punctuality over the grid slots it filled, and how many
    snapshots were duplicates (a second one in a slot already filled). A duplicate is no collection: counted as
    one, it would hide a missed slot at the window's edge."""
    slots: dict[int, dt.datetime] = {}
    for at in sorted(times):
        slots.setdefault(round((at - min(times)).total_seconds() / interval), at)  # the first in each slot
    one = punctuality(sorted(slots.values()), interval)
    # Slots at the window's edges are not between the first and last snapshot: a server must have at least
    # floor(window / interval) distinct collections in the window.
    edge = max(0, math.floor(window_s / interval) - (one.collections + one.missed))
    one.missed += edge
    one.slots += edge
    return one, len(times) - len(slots)


def _first_last_max(series: list[float]) -> list[float] | None:
    return [round(v / MIB, 2) for v in (series[0], series[-1], max(series))] if series else None


def report(result: dict[str, Any]) -> None:
    plan = result["plan"]
    d = result["duration_ms"]
    print(f"fleet run: {plan['servers']} servers in {plan['tenants']} tenants (+1 idle), "
          f"interval {plan['interval']} s, {plan['minutes']} min, driver {plan['driver']}, "
          f"tenant DBs {plan['db']}, concurrency {plan['concurrency']}"
          + (", encryption on (TLS, certificate trusted)" if plan.get("tls") else ""))
    print(f"  registration                 {fmt(result['registration_s'], 1)} s")
    print(f"  measured window              {fmt(result['window_s'], 0)} s (after warm-up)")
    print(f"  collections/s                {fmt(result['collections_per_s'])} (expected "
          f"{fmt(result['expected_per_s'])}); failures logged {result['failed_collections_logged']}; "
          f"duplicates {result['duplicates']} (not counted)")
    print(f"  late starts (>1 s) + missed  {fmt(100 * result['late_share'])} % ({result['late']} late, "
          f"{result['missed_slots']} missed of {result['slots']} slots; from collected_at, see bench/analysis.py)")
    print(f"  duration_ms p50/p95/p99      {fmt(d['p50'], 0)} / {fmt(d['p95'], 0)} / {fmt(d['p99'], 0)}")
    print(f"  CPU s per 1,000 collections  {fmt(result['cpu_s_per_1000'])} (collector tree; "
          f"{fmt(result['cpu_cores_collector'])} cores busy, parent {fmt(result['cpu_cores_parent'], 3)}; "
          f"simulator {fmt(result['cpu_cores_simulator'])} cores)")
    print(f"  USS idle child               {fmt(result['uss_idle_child_mib'], 1)} MiB; busy child median "
          f"{fmt(result['uss_busy_child_mib_median'], 1)} MiB, max {fmt(result['uss_busy_child_mib_max'], 1)} MiB")
    print(f"  parent RSS                   {fmt(result['parent_rss_mib'], 1)} MiB")
    print(f"  open fds start / end         {result['fds_start']} / {result['fds_end']} "
          f"(min/max {result['fds_min_max']}; parent {result['parent_fds']}, per child min/max "
          f"{result['child_fds_min_max']})")
    print(f"  tree RSS MiB start / end     {fmt(result['tree_rss_mib_start'], 1)} / "
          f"{fmt(result['tree_rss_mib_end'], 1)} "
          f"(min/max {[round(v, 1) for v in result['tree_rss_mib_min_max'] or []]})")
    print(f"  in the window (first/last/max) USS idle child {result['uss_idle_child_mib_first_last_max']} MiB, "
          f"busy child median {result['uss_busy_child_median_mib_first_last_max']} MiB")
    print(f"  per minute: tree RSS MiB {result['tree_rss_mib_per_minute']}")
    print(f"  per minute: open fds {result['fds_per_minute']}")
    print(f"  storage per server per day   {fmt(result['storage_rows_per_server_day'], 0)} rows, "
          f"{fmt(result['storage_bytes_per_server_day'] / MIB, 2)} MiB ({fmt(result['storage_rows_per_snapshot'], 1)} "
          f"rows and {fmt(result['storage_bytes_per_snapshot'], 0)} bytes per snapshot, {plan['db']}, "
          f"tables + indexes)")
    print(f"  SIGTERM to full stop         {fmt(result['stop_seconds'])} s, exit {result['stop_exit_code']} "
          f"(target <= {fmt(result['stop_target_s'], 0)} s)")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    result = run_in_folder(args.keep, "bench-fleet-", lambda folder: run(args, folder))
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
