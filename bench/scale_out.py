"""Scale-out: three supervisors on three simulated hosts sharing one PostgreSQL system DB.

    python -m bench.scale_out [--quick] [--json FILE] [--keep DIR]

Each supervisor runs in its own network namespace with a hostname of its own (bench/netns.py), so the
instances are on different hosts as far as the supervisor can tell; they reach PostgreSQL (127.0.0.1:5432,
through a forwarder on this machine's end of the first veth pair) and the simulated SQL Servers (listening
on that same address) over the veth pairs only. Tenants are of uneven sizes. Tenant DBs are SQLite files in
one folder all three reach, as a shared tenant DB server would be: the system DB, the state the hosts share,
is what this measures, and the files need no server and nothing to drop.

Steps: host 1 runs alone until every tenant's servers are known; host 2 joins, then host 3 (each: the time
until the assignment settles, measured from the newcomer's first poll and from its start; which children
moved); the host running the most tenants is killed with SIGKILL (until each of its tenants is claimed by
another host and has a snapshot again, from the snapshots in the tenant DBs); then the busiest survivor is
killed and restarted at once on the same host (same-host take-over). Finally every snapshot pair of one
server closer than half the interval is a duplicate (one slot collected twice: by two owners at once, or by
the old and the new child across a move, which the report tells apart), and every tenant's children on
different hosts must not overlap in time. Targets (issue 16): a joining instance settles within
2 x poll_interval, a killed one's tenants collect again within lease_duration, and within 15 s when it is
restarted on the same host. Needs root (network namespaces) and PostgreSQL; exits 2 with one line if not.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.common import (
    PORT_BASE,
    Deployment,
    SimFleet,
    SimServer,
    bench_env,
    pg_available,
    pg_drop,
    run_in_folder,
    stop_process_group,
)
from bench.netns import SimHosts, TcpForwarder, bindable, free_subnet, netns_unavailable
from bench.scale_out_watch import LeaseWatch, fmt_s, loads_of, local_optimum
from supervisor.ipc import CHILD_EXIT_OK

QUICK_SIZES = (40, 20, 12, 8, 5, 3, 2, 1)
FULL_SIZES = (600, 300, 200, 150, 120, 100, 80, 60, 50, 40, 30, 25, 20, 15, 12, 10, 8, 6, 5, 4, 3, 2, 1, 1)
SAME_HOST_TARGET_S = 15.0
PG_DIRECT = "host=127.0.0.1 port=5432 user=postgres dbname={db}"


@dataclass
class Plan:
    sizes: tuple[int, ...]
    interval: int
    poll: float
    lease: float
    hosts: int = 3


@dataclass
class Host:
    index: int
    hostname: str
    deployment: Deployment
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    starts: int = 0
    every_process: list[subprocess.Popen[bytes]] = field(default_factory=list)  # for the clean-up

    def start(self, sim_hosts: SimHosts) -> None:
        argv = [sys.executable, "-m", "supervisor", "-c", str(self.deployment.config_path), "run"]
        stderr = (self.deployment.directory / f"stderr-{self.starts}.txt").open("wb")
        self.started_at = time.time()
        self.process = subprocess.Popen(
            sim_hosts.command(self.index, self.hostname, argv), cwd=self.deployment.directory, env=bench_env(),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
        )  # fmt: skip
        stderr.close()
        self.every_process.append(self.process)
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def children(self) -> list[int]:
        if self.process is None or not self.alive:
            return []
        with contextlib.suppress(psutil.Error):
            return [c.pid for c in psutil.Process(self.process.pid).children()]
        return []

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)  # the parent only: its children get SIGTERM from PDEATHSIG
        self.process.wait(10)


@dataclass
class Report:
    plan: dict[str, Any]
    joins: list[dict[str, Any]] = field(default_factory=list)
    failovers: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = -1
    duplicates_at_handover: int = 0
    snapshots: int = 0
    overlaps: list[str] = field(default_factory=list)
    stop_exit_codes: dict[str, int | None] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale_out", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{len(QUICK_SIZES)} tenants, {sum(QUICK_SIZES)} "
                        "servers, 2 s polls, 8 s leases (about a minute)")  # fmt: skip
    parser.add_argument("--poll-interval", type=float, help="poll_interval (default 2 quick, 5 otherwise)")
    parser.add_argument("--lease-duration", type=float, help="lease_duration (default 8 quick, 30 otherwise)")
    parser.add_argument("--interval", type=int, help="collection interval (default 3 quick, 10 otherwise)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it")
    args = parser.parse_args(argv)
    quick = args.quick
    args.plan = Plan(
        sizes=QUICK_SIZES if quick else FULL_SIZES,
        interval=args.interval or (3 if quick else 10),
        poll=args.poll_interval or (2.0 if quick else 5.0),
        lease=args.lease_duration or (8.0 if quick else 30.0),
    )
    if args.plan.lease <= 2 * args.plan.poll:
        parser.error("--lease-duration must be more than twice --poll-interval")
    return args


def note(what: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {what}", flush=True)


# --- steps ------------------------------------------------------------------------------------------------------
def join(watch: LeaseWatch, host: Host, sim_hosts: SimHosts, plan: Plan, report: Report) -> None:
    before = watch.latest().owners_by_host()
    host.start(sim_hosts)
    registered = watch.wait(lambda s: host.hostname in s.running_hosts(), 60, f"{host.hostname} to register")
    settled, sample = watch.wait_settled(registered.at, plan.poll, 60)
    after = sample.owners_by_host()
    moved = sorted(t for t in after if before.get(t) not in (None, after[t]))
    loads = loads_of(sample, watch.sizes)
    share = sum(watch.sizes.values()) / len(loads)
    stops = sum(len(watch.stops_logged(h, since=registered.at)) for h in watch.hosts if h is not host)
    after_poll, after_start = round(settled - registered.at, 2), round(settled - host.started_at, 2)
    figures: dict[str, Any] = {
        "host": host.hostname, "instances": len(loads), "share_servers": round(share, 1),
        "settled_after_first_poll_s": after_poll, "settled_after_start_s": after_start, "target_s": 2 * plan.poll,
        "met": settled - registered.at <= 2 * plan.poll, "moved_children": len(moved),
        "moved_servers": sum(watch.sizes[t] for t in moved), "children_stopped_logged": stops,
        "loads": loads, "newcomer_servers": loads.get(host.hostname, 0),
        "balanced": local_optimum(sample, watch.sizes),
    }  # fmt: skip
    report.joins.append(figures)
    note(f"{host.hostname} joined: settled {fmt_s(after_poll)} after its first poll ({fmt_s(after_start)} after "
         f"start), {len(moved)} children moved "
         f"({figures['moved_servers']} servers), loads {loads}, share {share:.1f}")  # fmt: skip
    if not figures["balanced"] or not figures["newcomer_servers"]:
        report.problems.append(f"after {host.hostname} joined the split is not balanced by servers: {loads}")


def fail_over(watch: LeaseWatch, victim: Host, sim_hosts: SimHosts, plan: Plan, report: Report, *,
              restart: bool) -> None:  # fmt: skip
    sample = watch.latest()
    tenants = sorted(t for t, h in sample.owners_by_host().items() if h == victim.hostname)
    old_ids = {i for i, row in sample.instances.items() if row.host == victim.hostname}
    orphans = victim.children()
    expiry = max((e for t, e in sample.expires.items() if t in tenants and e is not None), default=None)
    killed_at = time.time()
    victim.kill()
    if restart:
        victim.start(sim_hosts)
    orphans_gone = watch.wait_pids_gone(orphans, 30)
    target = SAME_HOST_TARGET_S if restart else plan.lease
    claimed, collecting, every_server = watch.wait_collecting(tenants, old_ids, killed_at, target + 30)
    _, after = watch.wait_settled(time.time(), plan.poll, 60)
    new_owners = after.owners_by_host()
    owners = sorted({h for t, h in new_owners.items() if h is not None and t in tenants})
    worst = max(collecting.values(), default=None) if len(collecting) == len(tenants) else None
    claimed_s = round(max(claimed.values()) - killed_at, 2) if len(claimed) == len(tenants) and claimed else None
    collecting_s = round(worst - killed_at, 2) if worst is not None else None
    all_servers = max(every_server.values()) if len(every_server) == len(tenants) and every_server else None
    all_servers_s = round(all_servers - killed_at, 2) if all_servers is not None else None
    figures = {
        "host": victim.hostname, "restarted_on_same_host": restart, "tenants": len(tenants),
        "servers": sum(watch.sizes[t] for t in tenants), "orphans_gone_s": round(orphans_gone - killed_at, 2),
        "lease_expiry_s": None if expiry is None else round(expiry.replace(tzinfo=dt.UTC).timestamp() - killed_at, 2),
        "claimed_s": claimed_s, "collecting_s": collecting_s, "target_s": target,
        "met": worst is not None and worst - killed_at <= target,
        "claimed_met": claimed_s is not None and claimed_s <= target,
        # Every server of those tenants has a snapshot again (a catch-up collects those the dead owner missed).
        "all_servers_s": all_servers_s, "all_servers_met": all_servers_s is not None and all_servers_s <= target,
        # How long after the dead owner's lease ran out (the earliest another may claim): the part this code sets.
        "all_servers_after_expiry_s": None if all_servers_s is None or expiry is None else
                                      round(all_servers - expiry.replace(tzinfo=dt.UTC).timestamp(), 2),
        # After its claim, a tenant's first snapshot: a caught-up server's, or the next slot of one checked within
        # an interval (each server keeps its grid over a move).
        "slot_wait_max_s": round(max(collecting[t] - claimed[t] for t in collecting), 2) if collecting else None,
        "taken_by": {h: sum(1 for t in tenants if new_owners.get(t) == h) for h in owners},
        "loads_after": loads_of(after, watch.sizes),
    }  # fmt: skip
    report.failovers.append(figures)
    how = "killed and restarted on the same host" if restart else "killed (SIGKILL)"
    verdicts = [("claims", figures["claimed_met"]), ("collections", figures["met"]),
                ("every server", figures["all_servers_met"])]  # fmt: skip
    note(f"{victim.hostname} {how}: its {len(tenants)} tenants claimed again after {fmt_s(claimed_s)}, "
         f"all collecting after {fmt_s(collecting_s)}, every server after {fmt_s(all_servers_s)} (target {target:g} s: "
         + ", ".join(f"{what} {'met' if ok else 'missed'}" for what, ok in verdicts)
         + f"), taken by {figures['taken_by']}")  # fmt: skip
    if worst is None:
        report.problems.append(f"after {victim.hostname} was {how}, not every tenant of it collected again")


def busiest(watch: LeaseWatch, hosts: list[Host]) -> Host:
    """The host running the most tenants (then the most servers): the most to fail over."""
    owners = watch.latest().owners_by_host()

    def weight(host: Host) -> tuple[int, int]:
        held = [t for t, h in owners.items() if h == host.hostname]
        return len(held), sum(watch.sizes[t] for t in held)

    return max(hosts, key=weight)


def free_port_base(address: str, count: int) -> int:
    """The first of ``count`` consecutive ports from 10000 on that can be bound on ``address`` now (the address is
    this run's own, so only a wildcard listener of another program could hold one)."""
    for base in range(PORT_BASE, 30000 - count, count):
        if all(bindable(port, address) for port in range(base, base + count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports on {address}")


def find_duplicates(tenant_dir: Path, slugs: list[str], interval: int) -> tuple[int, list[tuple[str, int, str, str]]]:
    """(snapshots, pairs of one server's snapshots closer than half the interval: tenant, server, the two times)."""
    total, duplicates = 0, []
    for slug in slugs:
        with contextlib.closing(sqlite3.connect(f"file:{tenant_dir / slug}.db?mode=ro", uri=True)) as conn:
            rows = conn.execute("SELECT server_id, collected_at FROM metric_snapshots ORDER BY 1, 2").fetchall()
        total += len(rows)
        for (server_a, at_a), (server_b, at_b) in itertools.pairwise(rows):
            gap = (dt.datetime.fromisoformat(at_b) - dt.datetime.fromisoformat(at_a)).total_seconds()
            if server_a == server_b and gap < interval / 2:
                duplicates.append((slug, server_a, at_a, at_b))
    return total, duplicates


def describe_duplicates(watch: LeaseWatch, pairs: list[tuple[str, int, str, str]], report: Report) -> None:
    """A pair across a move (the old child exited, the new one started between the two) is one slot collected by
    both children one after the other, not two owners at once; it is a duplicate all the same."""
    epoch = lambda text: dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()  # noqa: E731
    described = []
    for slug, server, first, second in pairs:
        how = watch.handover(slug, epoch(first), epoch(second))
        report.duplicates_at_handover += how is not None
        described.append(f"{slug} server {server} at {first[11:]} and {second[11:]}" + (f" ({how})" if how else ""))
    report.duplicates = len(pairs)
    if pairs:
        report.problems.append(f"{len(pairs)} duplicate snapshots (one server twice within half its interval), "
                               f"{report.duplicates_at_handover} of them across a move: {'; '.join(described[:6])}")


# --- the run ------------------------------------------------------------------------------------------------------
def run(args: argparse.Namespace, directory: Path) -> Report:
    plan: Plan = args.plan
    report = Report(plan=asdict(plan))
    tag = f"so{os.getpid() % 100000}"
    database = f"cs_scaleout_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    sim_hosts = SimHosts(plan.hosts, tag, free_subnet(os.getpid() % 256))
    forwarder: TcpForwarder | None = None
    fleet: SimFleet | None = None
    hosts: list[Host] = []
    watch: LeaseWatch | None = None
    try:
        sim_hosts.create()
        address = sim_hosts.service_address
        forwarder = TcpForwarder((address, 5432), ("127.0.0.1", 5432)).start()
        base = free_port_base(address, sum(plan.sizes))
        servers = [SimServer(f"sql-{n + 1:04d}", address, base + n) for n in range(sum(plan.sizes))]
        groups: dict[str, Sequence[SimServer]] = {}
        first = 0
        for index, size in enumerate(plan.sizes):
            groups[f"t{index + 1:02d}-{size}"] = servers[first : first + size]
            first += size
        fleet = SimFleet(directory / "sim", servers)
        fleet.start()
        shared = {
            "tenant_db_url": f"sqlite:///{directory}/tenants/{{slug}}.db",
            "secret_key_file": str(directory / "secret.key"),
            "poll_interval": plan.poll, "lease_duration": plan.lease, "collection_interval": plan.interval,
            "collection_timeout": 2, "login_timeout": 1.5, "heartbeat_timeout": 30, "shutdown_timeout": 5,
        }  # fmt: skip
        pg_url = f"postgresql+psycopg://postgres@{{}}:5432/{database}"
        control = Deployment(directory / "control", system_db=pg_url.format("127.0.0.1"), **shared)
        control.cli("init-db")
        control.register(groups, plan.interval, use_cli=False)
        note(f"{len(servers)} servers in {len(groups)} tenants of {'/'.join(map(str, plan.sizes))} servers on "
             f"{address}; {plan.hosts} hosts in {sim_hosts.subnet}; poll {plan.poll:g} s, lease {plan.lease:g} s, "
             f"collection interval {plan.interval} s")  # fmt: skip
        for index in range(plan.hosts):
            deployment = Deployment(directory / f"host{index + 1}", system_db=pg_url.format(address),
                                    spool_dir=str(directory / f"host{index + 1}" / "spool"), **shared)  # fmt: skip
            hosts.append(Host(index, f"{tag}-host{index + 1}", deployment))
        sizes = {slug: len(members) for slug, members in groups.items()}
        watch = LeaseWatch(PG_DIRECT.format(db=database), sizes, hosts, directory / "tenants", plan.lease).start()

        hosts[0].start(sim_hosts)
        watch.wait(lambda s: s.all_weighed(watch.sizes) and len(s.running_hosts()) == 1, 60,
                   "host 1 to run every tenant and report its servers")  # fmt: skip
        note(f"{hosts[0].hostname} runs all {len(groups)} tenants, their servers reported")
        for host in hosts[1:]:
            join(watch, host, sim_hosts, plan, report)
        victim = busiest(watch, hosts)
        fail_over(watch, victim, sim_hosts, plan, report, restart=False)
        fail_over(watch, busiest(watch, [h for h in hosts if h is not victim]), sim_hosts, plan, report, restart=True)
        time.sleep(plan.interval)  # a last round of collections on the final owners
        running = [(host.hostname, host.process) for host in hosts if host.alive and host.process is not None]
        for _, process in running:
            process.send_signal(signal.SIGTERM)
        for hostname, process in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(30)
            report.stop_exit_codes[hostname] = process.returncode
        watch.stop()
        report.snapshots, pairs = find_duplicates(directory / "tenants", list(groups), plan.interval)
        describe_duplicates(watch, pairs, report)
        report.overlaps = watch.overlaps()
        report.problems += [f"two children at once: {overlap}" for overlap in report.overlaps]
        report.problems += [f"{h} exit code {c} after SIGTERM" for h, c in report.stop_exit_codes.items()
                            if c != CHILD_EXIT_OK]  # fmt: skip
        return report
    finally:
        if watch is not None:
            watch.stop()
        for process in (p for host in hosts for p in host.every_process):
            stop_process_group(process, 10.0)
        if fleet is not None:
            fleet.stop()
        if forwarder is not None:
            forwarder.stop()
        for problem in sim_hosts.destroy():
            print(f"  cleanup: {problem}", file=sys.stderr)
        with contextlib.suppress(Exception):
            pg_drop([database])


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    why = netns_unavailable()
    if why is not None:
        print(f"bench.scale_out: cannot simulate hosts here: {why} (needs root and network namespaces)",
              file=sys.stderr)  # fmt: skip
        return 2
    if not pg_available():
        print("bench.scale_out: PostgreSQL is not reachable at 127.0.0.1:5432 as user postgres (scripts/setup.sh "
              "installs it)", file=sys.stderr)  # fmt: skip
        return 2
    try:
        report = run_in_folder(args.keep, "bench-scale-out-", lambda folder: run(args, folder))
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"bench.scale_out: failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench.scale_out: interrupted (everything it made is removed)", file=sys.stderr)
        return 130
    for problem in report.problems:
        print(f"  FAIL: {problem}")
    summary = {"passed": report.passed, **asdict(report)}
    print(
        f"scale-out {'PASSED' if report.passed else 'FAILED'}: {report.snapshots} snapshots, "
        f"{report.duplicates} duplicates, {len(report.overlaps)} overlapping children; targets "
        + ", ".join(f"{'met' if f['met'] else 'missed'}" for f in [*report.joins, *report.failovers])
    )
    print("RESULT " + json.dumps(summary, default=str))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
