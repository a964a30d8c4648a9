"""Side by side with a peer: query-exporter (SQLAlchemy + pyodbc too) against the same simulated fleet.

    python -m bench.peer_query_exporter [--servers 1000] [--tenants 5] [--interval 10] [--seconds 120]
                                        [--warmup 30] [--driver msodbc18|freetds] [--venv DIR]

query-exporter 5.x is installed into its own venv at benchmark time (default ``bench/.peer-venv``,
git-ignored): a yardstick, never a dependency. Both run, one after the other, against the same
simulator processes, with the same collection SQL (``EXEC collector.usp_collect_snapshot``; the peer
turns the first result set into Prometheus metrics, we read and store all of them) and interval.
Figures: collections/s and CPU ms per collection over the measured window (after ``--warmup``), and
memory of the process tree at the end (PSS sum; RSS and USS too), per 1,000 servers.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from bench.common import (
    MIB,
    REPO,
    Deployment,
    SimFleet,
    SimServer,
    fmt,
    make_servers,
    raise_fd_limit,
    run_octet,
    sample_tree,
    split_tenants,
    stop_process_group,
)

PEER_SPEC = "query-exporter>=5,<6"
INSTANCE_COLUMNS = {
    "metrics": ["contract_version", "engine_edition", "cpu_count"],
    "labels": ["server_name", "product_version", "edition", "host_platform", "sqlserver_start_time",
               "sample_time_utc"],
}


def ensure_venv(venv: Path) -> Path:
    """The venv's query-exporter executable; creates the venv and installs the peer when missing."""
    executable = venv / "bin" / "query-exporter"
    if executable.exists():
        return executable
    print(f"installing {PEER_SPEC} into {venv} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", PEER_SPEC, "pyodbc"], check=True)
    return executable


def odbc_connect(driver: str, server: SimServer) -> str:
    from bench.collection_cost import floor_connection_string

    return floor_connection_string(driver, server).replace("APP=bench-floor", "APP=query-exporter")


def peer_config(servers: list[SimServer], driver: str, interval: int) -> dict[str, Any]:
    databases = {
        server.name.replace("-", "_"): {
            "dsn": "mssql+pyodbc:///?odbc_connect=" + urllib.parse.quote_plus(odbc_connect(driver, server)),
        }
        for server in servers
    }
    metrics: dict[str, Any] = {
        name: {"type": "gauge", "description": name, "labels": INSTANCE_COLUMNS["labels"], "expiration": "1m"}
        for name in INSTANCE_COLUMNS["metrics"]
    }
    queries = {
        "collect": {
            "interval": interval,
            "databases": list(databases),
            "metrics": INSTANCE_COLUMNS["metrics"],
            "sql": "EXEC collector.usp_collect_snapshot",
        }
    }
    return {"databases": databases, "metrics": metrics, "queries": queries}


_QUERIES_TOTAL = re.compile(r'^queries_total\{([^}]*)\}\s+([0-9.eE+]+)', re.MULTILINE)


def scrape_queries(port: int) -> dict[str, float]:
    """queries_total by status from the peer's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for labels, value in _QUERIES_TOTAL.findall(text):
        status = re.search(r'status="([^"]+)"', labels)
        key = status.group(1) if status else "?"
        totals[key] = totals.get(key, 0.0) + float(value)
    return totals


def memory_of(pid: int) -> dict[str, float]:
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
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()) + f".{int(time.time() * 1e6) % 1000000:06d}"


def run_ours(directory: Path, servers: list[SimServer], args: argparse.Namespace) -> dict[str, Any]:
    from bench.collection_cost import driver_name

    deployment = Deployment(directory / "ours", odbc_driver=driver_name(args.driver),
                            concurrency=args.concurrency, collection_interval=args.interval)
    deployment.register(split_tenants(servers, args.tenants), None, use_cli=False)
    deployment.start()
    try:
        time.sleep(args.warmup)
        cpu0, start = sample_tree(deployment.process.pid).cpu_seconds, utc_text()  # type: ignore[union-attr]
        time.sleep(args.seconds)
        cpu1, end = sample_tree(deployment.process.pid).cpu_seconds, utc_text()  # type: ignore[union-attr]
        memory = memory_of(deployment.process.pid)  # type: ignore[union-attr]
    finally:
        deployment.terminate(30.0)
    collections = snapshots_between(deployment, start, end)
    return {"collections": collections, "cpu_s": cpu1 - cpu0, "memory": memory}


def run_peer(directory: Path, servers: list[SimServer], args: argparse.Namespace, executable: Path) -> dict[str, Any]:
    config = directory / "peer.yaml"
    config.write_text(json.dumps(peer_config(servers, args.driver, args.interval)), encoding="utf-8")  # JSON is YAML
    port = 19560 + run_octet()
    log = (directory / "peer.log").open("wb")
    process = subprocess.Popen(
        [str(executable), "--config", str(config), "-H", "127.0.0.1", "-p", str(port), "-L", "warning"],
        cwd=directory, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        time.sleep(args.warmup)
        if process.poll() is not None:
            raise RuntimeError(f"query-exporter exited with {process.returncode}: see {directory / 'peer.log'}")
        before = scrape_queries(port)
        cpu0 = sample_tree(process.pid).cpu_seconds
        time.sleep(args.seconds)
        after = scrape_queries(port)
        cpu1 = sample_tree(process.pid).cpu_seconds
        memory = memory_of(process.pid)
    finally:
        stop_process_group(process, 15.0)
        log.close()
    ok = after.get("success", 0.0) - before.get("success", 0.0)
    failed = sum(after.values()) - sum(before.values()) - ok
    return {"collections": int(ok), "failed": int(failed), "cpu_s": cpu1 - cpu0, "memory": memory}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peer_query_exporter", description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--tenants", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--interval", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=120.0, help="measured window per side")
    parser.add_argument("--warmup", type=float, default=30.0)
    parser.add_argument("--driver", choices=("msodbc18", "freetds"), default="msodbc18")
    parser.add_argument("--venv", type=Path, default=REPO / "bench" / ".peer-venv")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    raise_fd_limit()
    try:
        executable = ensure_venv(args.venv)
    except (subprocess.CalledProcessError, OSError) as exc:
        print(f"query-exporter cannot be installed here: {exc}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        directory = Path(tmp)
        servers = make_servers(args.servers, run_octet(), prefix="peer")
        fleet = SimFleet(directory / "sim", servers)
        fleet.start()
        try:
            ours = run_ours(directory, servers, args)
            theirs = run_peer(directory, servers, args, executable)
        finally:
            fleet.stop()
    report(ours, theirs, args)
    if args.json:
        args.json.write_text(json.dumps({"ours": ours, "theirs": theirs}, indent=2), encoding="utf-8")
    return 0


def report(ours: dict[str, Any], theirs: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"{args.servers} simulated servers, interval {args.interval} s, driver {args.driver}, "
          f"{args.seconds:.0f} s measured after {args.warmup:.0f} s warm-up, one side after the other")
    rows = []
    for who, data in (("ours", ours), ("query-exporter", theirs)):
        n = max(1, data["collections"])
        memory = data["memory"]
        per_k = 1000 / args.servers
        rows.append((who, data["collections"], data["collections"] / args.seconds, 1000 * data["cpu_s"] / n,
                     memory["pss"] * per_k / MIB, memory["rss"] * per_k / MIB, memory["uss"] * per_k / MIB,
                     int(memory["processes"]), int(memory["threads"])))
    print(f"{'who':<15} {'collections':>11} {'per s':>7} {'CPU ms/coll':>11} {'PSS MiB/1k srv':>14} "
          f"{'RSS MiB/1k':>10} {'USS MiB/1k':>10} {'procs':>5} {'threads':>7}")
    for row in rows:
        print(f"{row[0]:<15} {row[1]:>11} {fmt(row[2], 1):>7} {fmt(row[3]):>11} {fmt(row[4], 1):>14} "
              f"{fmt(row[5], 1):>10} {fmt(row[6], 1):>10} {row[7]:>5} {row[8]:>7}")
    if theirs.get("failed"):
        print(f"query-exporter failed queries in the window: {theirs['failed']}")
    cpu_ratio = rows[0][3] / rows[1][3] if rows[1][3] else float("nan")
    mem_ratio = rows[0][4] / rows[1][4] if rows[1][4] else float("nan")
    print(f"ours / query-exporter: CPU per collection {fmt(cpu_ratio)}x (target <= 0.5), "
          f"memory (PSS) per 1,000 servers {fmt(mem_ratio)}x (target <= 0.5)")


if __name__ == "__main__":
    raise SystemExit(main())
