"""Memory per kept connection, by driver, encryption and connection option.

    python -m bench.connection_memory [--connections 300] [--threads 10] [--rounds 3] [--repeats 3]
                                      [--drivers msodbc18,freetds] [--options NAME,...] [--no-tls] [--quick]
                                      [--json FILE]

Each measurement is a fresh worker process (``--worker``), so that no option set inherits another's heap: it
loads the driver with ``threads * 2`` warm-up connections, takes the memory it has written (Private_Dirty in
/proc/self/smaps_rollup), then opens ``--connections`` connections from a pool of ``--threads`` threads as a
child's collection pool does, runs the collection on each (``{CALL collector.usp_collect_snapshot}``, every
result set read and parsed with the collector's ``read_result_sets``/``parse_sample``), ``--rounds`` more
collections on every kept connection, and takes it again: the difference over the connections is the figure.
The CPU per collection on a kept connection (this process's CPU over those rounds, all threads) is printed
beside it, and the SQLSTATE of a login with a wrong password (28000 from Driver 18, 42000 from FreeTDS;
Driver 18 with a PacketSize other than 4096 reports IM006 "Packet size change not supported by server"
instead, as a failed login's reply carries no packet-size ENVCHANGE: the real reason is hidden). The
connection string is the collector's own (``connection_string.build``) with the option set's keywords
appended (a keyword given twice: the drivers take the last) and its ``attrs_before``. Option sets and
encryption alternate within each repeat; the median of the repeats is printed with the range.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.collection_cost import driver_name
from bench.common import (
    PLAIN,
    REPO,
    SIM_PASSWORD,
    SIM_USER,
    TLS,
    Encryption,
    SimFleet,
    SimServer,
    bench_env,
    fmt,
    make_servers,
    raise_fd_limit,
    run_octet,
)

ALL_DRIVERS = ("msodbc18", "freetds")
KIB = 1024
SQL_ATTR_PACKET_SIZE = 112


@dataclass(frozen=True)
class OptionSet:
    name: str
    drivers: tuple[str, ...]
    keywords: str = ""  # appended to the collector's connection string
    attrs_before: dict[int, int] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # the worker's environment (process-wide settings)
    note: str = ""


BOTH = ALL_DRIVERS
OPTION_SETS = (
    OptionSet("default", BOTH, note="connection_string.build as it is"),
    OptionSet("packet-512", BOTH, "PacketSize=512;", note="LOGIN7 asks 512 bytes (FreeTDS sends 4096)"),
    OptionSet("packet-4096", BOTH, "PacketSize=4096;", note="the size SQL Server and the simulator choose by default"),
    OptionSet("packet-8192", BOTH, "PacketSize=8192;"),
    OptionSet("packet-32767", ("msodbc18",), "PacketSize=32767;"),
    OptionSet("attr-packet-512", ("msodbc18",), attrs_before={SQL_ATTR_PACKET_SIZE: 512},
              note="SQL_ATTR_PACKET_SIZE before connecting"),
    OptionSet("mars-off", BOTH, "MARS_Connection=no;", note="the drivers' default, said explicitly"),
    OptionSet("no-retry", ("msodbc18",), "ConnectRetryCount=0;", note="no idle connection resiliency"),
    OptionSet("client-utf8", ("freetds",), "ClientCharset=UTF-8;"),
    OptionSet("arena-2", BOTH, env={"MALLOC_ARENA_MAX": "2"}, note="glibc malloc arenas (process-wide)"),
)
QUICK_OPTIONS = ("default", "packet-512")


# --- the worker: one process, one driver, one option set -------------------------------------------------
def private_bytes() -> int:
    """Pages this process has written (Private_Dirty), not USS: USS also counts the drivers' clean code pages
    while no other process maps them, and drops when one does (a concurrent process loading the same driver
    swung 20 connections' USS by -10 to +255 KiB each)."""
    with open("/proc/self/smaps_rollup", encoding="ascii") as rollup:
        for line in rollup:
            if line.startswith("Private_Dirty:"):
                return int(line.split()[1]) * KIB
    raise RuntimeError("/proc/self/smaps_rollup has no Private_Dirty line")


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    import pyodbc

    from supervisor.children.connection_string import Endpoint, build
    from supervisor.children.odbc_driver import OdbcDriver, kind_of
    from supervisor.children.result_reader import read_result_sets
    from supervisor.children.sample import parse_sample
    from supervisor.procedures.tsql import exec_statement

    pyodbc.pooling = False
    name = spec["driver_name"]
    endpoint = Endpoint(spec["host"], spec["port"], SIM_USER, SIM_PASSWORD, spec["encrypt"], spec["trust"])
    connection_string = build(OdbcDriver(name, kind_of(name)), endpoint) + spec["keywords"]
    attrs = {int(key): value for key, value in spec["attrs_before"].items()}
    extra = {"attrs_before": attrs} if attrs else {}
    failures = 0

    def collect(conn: Any) -> None:
        nonlocal failures
        cursor = conn.cursor()
        try:
            cursor.execute(exec_statement())
            parse_sample(read_result_sets(cursor))
        except Exception:
            failures += 1
        finally:
            cursor.close()

    def connect(_index: int) -> Any:
        conn = pyodbc.connect(connection_string, timeout=10, autocommit=True, **extra)
        collect(conn)
        return conn

    threads = spec["threads"]
    with ThreadPoolExecutor(threads) as pool:
        warm = list(pool.map(connect, range(threads * 2)))
        list(pool.map(collect, warm))
        gc.collect()
        before = private_bytes()
        conns = list(pool.map(connect, range(spec["connections"])))
        cpu = time.process_time()
        for _ in range(spec["rounds"]):
            list(pool.map(collect, conns))
        cpu = time.process_time() - cpu
        gc.collect()
        after = private_bytes()
        collections = len(conns) * (1 + spec["rounds"])
        for conn in conns + warm:
            conn.close()
    wrong = build(OdbcDriver(name, kind_of(name)), replace(endpoint, password="not-" + SIM_PASSWORD)) + spec["keywords"]
    try:
        pyodbc.connect(wrong, timeout=10, autocommit=True, **extra).close()
        wrong_password = "accepted"
    except pyodbc.Error as exc:
        wrong_password = str(exc.args[0])
    return {"private_kib_per_connection": (after - before) / KIB / len(conns), "private_before_mib": before / KIB / KIB,
            "collections": collections, "failures": failures,
            "cpu_ms_per_collection": 1000 * cpu / max(1, len(conns) * spec["rounds"]),
            "wrong_password_sqlstate": wrong_password}


# --- the runner --------------------------------------------------------------------------------------------
def run_worker(driver: str, server: SimServer, encryption: Encryption, options: OptionSet,
               args: argparse.Namespace) -> dict[str, Any]:
    spec = {"driver_name": driver_name(driver), "host": server.host, "port": server.port,
            "encrypt": encryption.encrypt, "trust": encryption.trust_server_certificate,
            "keywords": options.keywords, "attrs_before": options.attrs_before, "threads": args.threads,
            "connections": args.connections, "rounds": args.rounds}
    result = subprocess.run([sys.executable, "-m", "bench.connection_memory", "--worker", json.dumps(spec)],
                            cwd=REPO, env={**bench_env(), **options.env}, capture_output=True, text=True,
                            timeout=300, stdin=subprocess.DEVNULL, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{driver} {options.name}: worker exit {result.returncode}: {result.stderr[-800:]}")
    figures: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return figures


def row_key(driver: str, encryption: Encryption, options: OptionSet) -> str:
    return f"{driver}/{'tls' if encryption.on else 'plain'}/{options.name}"


def measure(args: argparse.Namespace, drivers: Sequence[str], option_sets: Sequence[OptionSet]) -> dict[str, Any]:
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-connmem-") as tmp:
        octet = run_octet()
        servers = {PLAIN: make_servers(1, octet, prefix="mem")[0]}
        if args.tls:
            servers[TLS] = make_servers(1, octet, prefix="mem-tls", tls=True, first=1)[0]
        fleet = SimFleet(Path(tmp) / "sim", list(servers.values()))
        fleet.start()
        try:
            for repeat in range(args.repeats):
                for driver in drivers:
                    for encryption, server in servers.items():
                        ordered = list(option_sets) if repeat % 2 == 0 else list(reversed(option_sets))
                        for options in ordered:
                            if driver not in options.drivers:
                                continue
                            figures = run_worker(driver, server, encryption, options, args)
                            row = rows.setdefault(row_key(driver, encryption, options), {
                                "driver": driver, "tls": encryption.on, "options": options.name,
                                "keywords": options.keywords, "attrs_before": options.attrs_before,
                                "env": options.env, "runs": []})
                            row["runs"].append(figures)
        finally:
            fleet.stop()
    for row in rows.values():
        values = [run["private_kib_per_connection"] for run in row["runs"]]
        row["private_kib_median"] = statistics.median(values)
        row["private_kib_min"], row["private_kib_max"] = min(values), max(values)
        row["collections"] = sum(run["collections"] for run in row["runs"])
        row["failures"] = sum(run["failures"] for run in row["runs"])
        row["cpu_ms_median"] = statistics.median(run["cpu_ms_per_collection"] for run in row["runs"])
        row["wrong_password_sqlstates"] = sorted({run["wrong_password_sqlstate"] for run in row["runs"]})
    return {"plan": {"connections": args.connections, "threads": args.threads, "rounds": args.rounds,
                     "repeats": args.repeats}, "rows": rows}


def report(results: dict[str, Any], option_sets: Sequence[OptionSet]) -> None:
    plan = results["plan"]
    print(f"Private (written) memory per kept connection: {plan['connections']} connections from "
          f"{plan['threads']} threads, {1 + plan['rounds']} collections on each, "
          f"median of {plan['repeats']} worker processes")
    notes = {options.name: options.note or options.keywords or json.dumps(options.env) for options in option_sets}
    print(f"{'driver':<9} {'tls':<5} {'options':<16} {'KiB/conn':>9} {'min':>7} {'max':>7} {'vs default':>10} "
          f"{'cpu ms':>7} {'fail':>5} {'bad pw':>6}  what")
    rows = results["rows"]
    for row in rows.values():
        default = rows.get(f"{row['driver']}/{'tls' if row['tls'] else 'plain'}/default")
        delta = row["private_kib_median"] - default["private_kib_median"] if default else math.nan
        print(f"{row['driver']:<9} {'yes' if row['tls'] else 'no':<5} {row['options']:<16} "
              f"{fmt(row['private_kib_median'], 1):>9} {fmt(row['private_kib_min'], 1):>7} "
              f"{fmt(row['private_kib_max'], 1):>7} "
              f"{fmt(delta, 1):>10} {fmt(row['cpu_ms_median']):>7} {row['failures']:>5} "
              f"{'/'.join(row['wrong_password_sqlstates']):>6}  "
              f"{notes.get(row['options'], '')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.connection_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--threads", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="collections on every kept connection after the first")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--drivers", default=",".join(ALL_DRIVERS))
    parser.add_argument("--options", default="", help="option sets by name (default: all)")
    parser.add_argument("--no-tls", dest="tls", action="store_false", help="only unencrypted connections")
    parser.add_argument("--quick", action="store_true",
                        help=f"20 connections, 2 threads, 1 round, 1 repeat, options {','.join(QUICK_OPTIONS)}")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if args.quick:
        args.connections, args.threads, args.rounds, args.repeats = 20, 2, 1, 1
        args.options = args.options or ",".join(QUICK_OPTIONS)
    drivers = [d for d in args.drivers.split(",") if d]
    names = [n for n in args.options.split(",") if n] or [o.name for o in OPTION_SETS]
    known = {o.name: o for o in OPTION_SETS}
    if any(d not in ALL_DRIVERS for d in drivers) or any(n not in known for n in names):
        parser.error(f"drivers from {ALL_DRIVERS}, options from {tuple(known)}")
    option_sets = [known[n] for n in names]
    raise_fd_limit()
    results = measure(args, drivers, option_sets)
    report(results, option_sets)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    failures = sum(row["failures"] for row in results["rows"].values())
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
