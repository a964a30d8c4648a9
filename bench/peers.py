"""What the peer benchmarks (``bench.peer_query_exporter``, ``bench.peer_sql_exporter``) share.

Each runs ours (the real supervisor) and then a peer exporter against the same simulator processes, with the
same collection SQL and interval, and compares CPU per collection and memory per 1,000 servers. This module
holds the common arguments, our side of the run, the measured window of a peer process (CPU of the peer and
of the simulator, memory at the end) and the table both print.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sqlite3
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil

from bench.common import (
    MIB,
    PLAIN,
    TLS,
    Deployment,
    Encryption,
    SimServer,
    cpu_of,
    fmt,
    sample_tree,
    split_tenants,
    stop_process_group,
)

T = TypeVar("T")


def add_arguments(parser: argparse.ArgumentParser, *, interval: int, seconds: float, warmup: float) -> None:
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--tenants", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--interval", type=int, default=interval)
    parser.add_argument("--seconds", type=float, default=seconds, help="measured window per side")
    parser.add_argument("--warmup", type=float, default=warmup)
    parser.add_argument("--driver", choices=("msodbc18", "freetds"), default="msodbc18")
    parser.add_argument("--tls", action="store_true",
                        help="servers speak TLS and both sides connect with encryption on (the production default "
                             "encrypt = yes; the simulator's self-signed certificate trusted)")
    parser.add_argument("--json", type=Path)


def instance_columns() -> dict[str, list[str]]:
    """The first (instance) result set of the collection, as a Prometheus exporter can take it: its numbers as
    metric values, its text as labels, its times apart (a label only where the peer turns any value into text).
    From the contract, so that a new column cannot leave a peer's configuration behind."""
    from supervisor.procedures.resultsets import INSTANCE, SqlType

    kinds = {SqlType.INT: "numbers", SqlType.BIGINT: "numbers", SqlType.FLOAT: "numbers", SqlType.NVARCHAR: "text",
             SqlType.DATETIME2: "times"}
    columns: dict[str, list[str]] = {"numbers": [], "text": [], "times": []}
    for column in INSTANCE.columns:
        columns[kinds[column.sql_type]].append(column.name)
    return columns


def encryption_of(args: argparse.Namespace) -> Encryption:
    return TLS if args.tls else PLAIN


def memory_of(pid: int) -> dict[str, float]:
    """RSS, PSS and USS summed over ``pid`` and its descendants, with how many processes and threads."""
    processes = [psutil.Process(pid)]
    processes += processes[0].children(recursive=True)
    totals = {"rss": 0.0, "pss": 0.0, "uss": 0.0, "processes": 0.0, "threads": 0.0}
    for process in processes:
        try:
            info = process.memory_full_info()
            totals["rss"] += info.rss
            totals["pss"] += info.pss
            totals["uss"] += info.uss
            totals["processes"] += 1
            totals["threads"] += process.num_threads()
        except psutil.NoSuchProcess:
            continue
    return totals


def snapshots_between(deployment: Deployment, start_utc: str, end_utc: str) -> int:
    total = 0
    for path in sorted((deployment.directory / "var" / "tenants").glob("*.db")):
        with sqlite3.connect(path) as db:
            total += int(db.execute(
                "SELECT count(*) FROM metric_snapshots WHERE collected_at >= ? AND collected_at < ?",
                (start_utc, end_utc),
            ).fetchone()[0])
    return total


def utc_text() -> str:
    """Now, as ``collected_at`` is stored (naive UTC)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def failures_logged(deployment: Deployment, start_utc: str, end_utc: str) -> int:
    """``collection.failed`` lines between the two times (a repeated failure of a server is logged once, at INFO)."""
    start, end = (dt.datetime.fromisoformat(text) for text in (start_utc, end_utc))
    count = 0
    for event in deployment.log_events():
        if event.get("event") != "collection.failed":
            continue
        at = dt.datetime.fromisoformat(str(event.get("timestamp", "")).replace("Z", "+00:00")).replace(tzinfo=None)
        count += start <= at < end
    return count


def run_ours(directory: Path, servers: list[SimServer], args: argparse.Namespace,
             sim_pids: list[int]) -> dict[str, Any]:
    """The supervisor on ``servers`` in ``args.tenants`` tenants: collections stored, failures logged, CPU of its
    tree and of the simulator over the window after ``args.warmup``, memory of the tree at the end."""
    from bench.collection_cost import driver_name

    encryption = encryption_of(args)
    deployment = Deployment(directory / "ours", odbc_driver=driver_name(args.driver), concurrency=args.concurrency,
                            collection_interval=args.interval, encrypt=encryption.encrypt)
    deployment.register(split_tenants(servers, args.tenants), None, use_cli=False, encryption=encryption)
    process = deployment.start()
    try:
        time.sleep(args.warmup)
        if process.poll() is not None:
            raise RuntimeError(f"the supervisor exited with {process.returncode}")
        cpu0, sim0, start = sample_tree(process.pid).cpu_seconds, cpu_of(sim_pids), utc_text()
        time.sleep(args.seconds)
        cpu1, sim1, end = sample_tree(process.pid).cpu_seconds, cpu_of(sim_pids), utc_text()
        memory = memory_of(process.pid)
    finally:
        deployment.terminate(30.0)
    return {"collections": snapshots_between(deployment, start, end), "failed": failures_logged(deployment, start, end),
            "cpu_s": cpu1 - cpu0, "sim_cpu_s": sim1 - sim0, "memory": memory, "window_s": args.seconds}


@dataclass
class PeerWindow:
    """A peer process's measured window: its counter at both ends, CPU (its tree, the simulator), memory."""

    before: Any
    after: Any
    cpu_s: float
    sim_cpu_s: float
    window_s: float
    memory: dict[str, float]


def measure_peer(process: subprocess.Popen[Any], name: str, log_path: Path, args: argparse.Namespace,
                 sim_pids: list[int], mark: Callable[[int], tuple[T, float]]) -> PeerWindow:
    """Wait ``args.warmup``, then measure ``args.seconds``; ``mark(pid)`` returns the peer's counter and the CPU
    seconds of its tree read at the same moment (a peer may need the moment chosen: between bursts). The
    process is stopped in the end, whatever happens."""
    try:
        time.sleep(args.warmup)
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}: see {log_path}")
        before, cpu0 = mark(process.pid)
        sim0, started = cpu_of(sim_pids), time.monotonic()
        time.sleep(args.seconds)
        after, cpu1 = mark(process.pid)
        sim1, window_s = cpu_of(sim_pids), time.monotonic() - started
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}: see {log_path}")
        memory = memory_of(process.pid)
    finally:
        stop_process_group(process, 15.0)
    return PeerWindow(before, after, cpu1 - cpu0, sim1 - sim0, window_s, memory)


def tree_cpu(pid: int) -> float:
    return sample_tree(pid).cpu_seconds


def print_table(ours: dict[str, Any], theirs: dict[str, Any], peer: str,
                args: argparse.Namespace) -> tuple[float, float]:
    """The side-by-side table; returns (CPU per collection, PSS per 1,000 servers) ours / the peer's."""
    return print_runs([(ours, theirs)], peer, args)


def print_runs(runs: list[tuple[dict[str, Any], dict[str, Any]]], peer: str,
               args: argparse.Namespace) -> tuple[float, float]:
    """The table, a row per side and run (ours, peer, ours, ...); returns ours / the peer's, each side's median
    over the runs: (CPU per collection, PSS per 1,000 servers)."""
    encryption = "encryption on (TLS, certificate trusted)" if args.tls else "no encryption"
    print(f"{args.servers} simulated servers in {args.tenants} tenants, interval {args.interval} s, driver "
          f"{args.driver} for ours, {encryption}; {args.seconds:.0f} s measured after {args.warmup:.0f} s warm-up, "
          f"one side after the other" + (f", {len(runs)} times" if len(runs) > 1 else ""))
    width = max(len(peer), 4) + (3 if len(runs) > 1 else 0)
    print(f"{'who':<{width}} {'collections':>11} {'per s':>7} {'failed':>6} {'CPU ms/coll':>11} {'sim ms/coll':>11} "
          f"{'PSS MiB/1k srv':>14} {'RSS MiB/1k':>10} {'USS MiB/1k':>10} {'procs':>5} {'threads':>7}")
    figures: dict[str, list[tuple[float, float]]] = {"ours": [], peer: []}
    for index, pair in enumerate(runs):
        for who, data in zip(figures, pair, strict=True):
            n = data["collections"]
            memory = data["memory"]
            per_k = 1000 / args.servers / MIB
            cpu_ms = 1000 * data["cpu_s"] / n if n else math.nan
            pss = memory["pss"] * per_k
            figures[who].append((cpu_ms, pss))
            data["cpu_ms_per_collection"], data["pss_mib_per_1000_servers"] = cpu_ms, pss
            label = f"{who} #{index + 1}" if len(runs) > 1 else who
            print(f"{label:<{width}} {n:>11} {fmt(n / data['window_s'], 1):>7} {data.get('failed', 0):>6} "
                  f"{fmt(cpu_ms):>11} {fmt(1000 * data['sim_cpu_s'] / n if n else math.nan):>11} {fmt(pss, 1):>14} "
                  f"{fmt(memory['rss'] * per_k, 1):>10} {fmt(memory['uss'] * per_k, 1):>10} "
                  f"{int(memory['processes']):>5} {int(memory['threads']):>7}")
    (ours_cpu, ours_pss), (their_cpu, their_pss) = (
        (statistics.median(cpu for cpu, _ in rows), statistics.median(pss for _, pss in rows))
        for rows in figures.values())
    if len(runs) > 1:
        print(f"medians, ours / {peer}: CPU ms per collection {fmt(ours_cpu)} / {fmt(their_cpu)}, "
              f"PSS MiB per 1,000 servers {fmt(ours_pss, 1)} / {fmt(their_pss, 1)}")
    return (ours_cpu / their_cpu if their_cpu else math.nan, ours_pss / their_pss if their_pss else math.nan)
