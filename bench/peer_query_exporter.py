"""Side by side with a peer: query-exporter (SQLAlchemy + pyodbc too) against the same simulated fleet.

    python -m bench.peer_query_exporter [--servers 1000] [--tenants 5] [--interval 10] [--seconds 120]
                                        [--warmup 30] [--driver msodbc18|freetds] [--tls] [--venv DIR]

query-exporter 5.x is installed into its own venv at benchmark time (default ``bench/.peer-venv``,
git-ignored): a yardstick, never a dependency. Both run, one after the other, against the same
simulator processes, with the same collection SQL (``EXEC collector.usp_collect_snapshot``; the peer
turns the first result set into Prometheus metrics, we read and store all of them) and interval.
Figures: collections/s and CPU ms per collection over the measured window (after ``--warmup``), and
memory of the process tree at the end (PSS sum; RSS and USS too), per 1,000 servers. ``--tls``: the
servers speak TLS and both sides connect with ``Encrypt=yes`` and a trusted certificate. The shared parts
are in ``bench.peers``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import PLAIN, REPO, Encryption, SimFleet, SimServer, fmt, make_servers, raise_fd_limit, run_octet
from bench.peers import (
    add_arguments,
    encryption_of,
    instance_columns,
    measure_peer,
    print_table,
    run_ours,
    tree_cpu,
)

PEER_SPEC = "query-exporter>=5,<6"
#: query-exporter wants every column of the result as a metric or a label (it stringifies labels).
INSTANCE_COLUMNS = {
    "metrics": instance_columns()["numbers"],
    "labels": instance_columns()["text"] + instance_columns()["times"],
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


def odbc_connect(driver: str, server: SimServer, encryption: Encryption = PLAIN) -> str:
    from bench.collection_cost import floor_connection_string

    return floor_connection_string(driver, server, encryption).replace("APP=bench-floor", "APP=query-exporter")


def peer_config(servers: list[SimServer], driver: str, interval: int,
                encryption: Encryption = PLAIN) -> dict[str, Any]:
    databases = {
        server.name.replace("-", "_"): {
            "dsn": "mssql+pyodbc:///?odbc_connect="
            + urllib.parse.quote_plus(odbc_connect(driver, server, encryption)),
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


def run_peer(directory: Path, servers: list[SimServer], args: argparse.Namespace, executable: Path,
             sim_pids: list[int]) -> dict[str, Any]:
    config = directory / "peer.yaml"
    document = peer_config(servers, args.driver, args.interval, encryption_of(args))
    config.write_text(json.dumps(document), encoding="utf-8")  # JSON is YAML
    port = 19560 + run_octet()
    log_path = directory / "peer.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(executable), "--config", str(config), "-H", "127.0.0.1", "-p", str(port), "-L", "warning"],
            cwd=directory, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        window = measure_peer(process, "query-exporter", log_path, args, sim_pids,
                              lambda pid: (scrape_queries(port), tree_cpu(pid)))
    before, after = window.before, window.after
    ok = after.get("success", 0.0) - before.get("success", 0.0)
    failed = sum(after.values()) - sum(before.values()) - ok
    return {"collections": int(ok), "failed": int(failed), "cpu_s": window.cpu_s, "sim_cpu_s": window.sim_cpu_s,
            "memory": window.memory, "window_s": window.window_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peer_query_exporter", description=__doc__.splitlines()[0])
    add_arguments(parser, interval=10, seconds=120.0, warmup=30.0)
    parser.add_argument("--venv", type=Path, default=REPO / "bench" / ".peer-venv")
    args = parser.parse_args(argv)
    raise_fd_limit()
    try:
        executable = ensure_venv(args.venv)
    except (subprocess.CalledProcessError, OSError) as exc:
        print(f"query-exporter cannot be installed here: {exc}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        directory = Path(tmp)
        servers = make_servers(args.servers, run_octet(), prefix="peer", tls=args.tls)
        fleet = SimFleet(directory / "sim", servers)
        fleet.start()
        try:
            ours = run_ours(directory, servers, args, fleet.pids())
            theirs = run_peer(directory, servers, args, executable, fleet.pids())
        finally:
            fleet.stop()
    report(ours, theirs, args)
    if args.json:
        args.json.write_text(json.dumps({"ours": ours, "theirs": theirs}, indent=2), encoding="utf-8")
    return 0


def report(ours: dict[str, Any], theirs: dict[str, Any], args: argparse.Namespace) -> None:
    cpu_ratio, mem_ratio = print_table(ours, theirs, "query-exporter", args)
    if theirs.get("failed"):
        print(f"query-exporter failed queries in the window: {theirs['failed']}")
    print(f"ours / query-exporter: CPU per collection {fmt(cpu_ratio)}x (target <= 0.5), "
          f"memory (PSS) per 1,000 servers {fmt(mem_ratio)}x (target <= 0.5)")


if __name__ == "__main__":
    raise SystemExit(main())
