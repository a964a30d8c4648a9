"""Capacity figures of the SQL Server simulator (a script that prints figures, not a test).

    python bench/sim_bench.py [--threads 8] [--seconds 5] [--drivers msodbc18,freetds] [--fleet-size 2000]

Prints, per driver, the logins/s and collection calls/s one simulator process sustains from N pyodbc
client threads, then the RSS of a 2,000-server fleet, idle and with one logged-in session per server.
Clients run on the same machine: the figures are for one process with its clients, not the server
alone. Logins go to 64 servers spread over 127.0.0.1-4 so that TIME_WAIT sockets do not pile up on
one address pair.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pyodbc

REPO = Path(__file__).resolve().parents[1]
USER = "bench"
PASSWORD = "Bench!pw1"
PROCEDURE_CALL = "{CALL collector.usp_collect_snapshot}"


def msodbc18_path() -> str:
    spec = importlib.util.find_spec("mssql_python_odbc")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("mssql-python-odbc is not installed")
    base = Path(next(iter(spec.submodule_search_locations)))
    return str(base / "libs/linux/debian_ubuntu/x86_64/lib/libmsodbcsql-18.6.so.2.1")


def connection_string(driver: str, host: str, port: int) -> str:
    if driver == "msodbc18":
        return f"DRIVER={{{msodbc18_path()}}};SERVER={host},{port};UID={USER};PWD={{{PASSWORD}}};Encrypt=no"
    return f"DRIVER={{FreeTDS}};SERVER={host};PORT={port};UID={USER};PWD={{{PASSWORD}}};TDS_Version=7.4"


class PortTaken(Exception):
    pass


class Simulator:
    def __init__(self, arguments: list[str]) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "sqlserver_sim", *arguments], cwd=REPO,
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            if code == 3:
                raise PortTaken
            raise SystemExit(f"simulator did not start (exit {code})")
        self.servers: list[dict[str, object]] = json.loads(line)["servers"]

    @property
    def rss_mb(self) -> float:
        return psutil.Process(self.process.pid).memory_info().rss / 2**20

    @property
    def cpu_seconds(self) -> float:
        times = psutil.Process(self.process.pid).cpu_times()
        return times.user + times.system

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def spread_fleet(directory: Path, base_port: int, count: int = 64) -> Path:
    servers = [{"name": f"bench-{i:02d}", "host": f"127.0.0.{1 + i % 4}", "port": base_port + i} for i in range(count)]
    path = directory / "bench-fleet.json"
    path.write_text(json.dumps({"defaults": {"user": USER, "password": PASSWORD}, "servers": servers}))
    return path


def run_threads(threads: int, seconds: float, work: Callable[[int, Callable[[], bool]], int]) -> float:
    """Run ``work(index, keep_going)`` in threads; returns operations per second."""
    deadline = time.monotonic() + seconds
    counts = [0] * threads

    def body(index: int) -> None:
        counts[index] = work(index, lambda: time.monotonic() < deadline)

    workers = [threading.Thread(target=body, args=(i,)) for i in range(threads)]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts) / (time.monotonic() - started)


def bench_driver(sim: Simulator, driver: str, threads: int, seconds: float) -> None:
    targets = [(str(s["host"]), int(s["port"])) for s in sim.servers]  # type: ignore[call-overload]

    def logins(index: int, keep_going: Callable[[], bool]) -> int:
        done = 0
        rng = random.Random(index)
        while keep_going():
            host, port = rng.choice(targets)
            pyodbc.connect(connection_string(driver, host, port), timeout=10, autocommit=True).close()
            done += 1
        return done

    def collections(index: int, keep_going: Callable[[], bool]) -> int:
        host, port = targets[index % len(targets)]
        done = 0
        with pyodbc.connect(connection_string(driver, host, port), timeout=10, autocommit=True) as conn:
            cursor = conn.cursor()
            while keep_going():
                cursor.execute(PROCEDURE_CALL)
                while True:
                    if cursor.description is not None:
                        cursor.fetchall()
                    if not cursor.nextset():
                        break
                done += 1
        return done

    for label, work in (("logins/s", logins), ("collection calls/s", collections)):
        cpu_before = sim.cpu_seconds
        rate = run_threads(threads, seconds, work)
        server_cpu = (sim.cpu_seconds - cpu_before) / seconds
        print(f"{driver:9s} {threads} threads  {label:19s} {rate:8.0f}   (simulator CPU {server_cpu:.0%} of a core)",
              flush=True)


def start_generated_fleet(size: int, base_port: int, attempts: int = 5) -> Simulator:
    """A ``--servers N`` fleet; other base ports are tried when a port is taken (exit 3)."""
    for _ in range(attempts):
        try:
            return Simulator(["--servers", str(size), "--base-port", str(base_port), "--user", USER,
                              "--password", PASSWORD])
        except PortTaken:
            base_port = random.randrange(15000, 31000 - size)
    raise SystemExit("no free port range for the fleet")


def bench_fleet_memory(size: int, base_port: int) -> None:
    sim = start_generated_fleet(size, base_port)
    try:
        time.sleep(0.5)
        print(f"fleet of {size} servers: RSS idle {sim.rss_mb:.1f} MB", flush=True)
        connections = []
        for server in sim.servers:
            cs = connection_string("freetds", str(server["host"]), int(server["port"]))  # type: ignore[call-overload]
            connections.append(pyodbc.connect(cs, timeout=10, autocommit=True))
        print(f"fleet of {size} servers: RSS with one session per server {sim.rss_mb:.1f} MB", flush=True)
        for connection in connections:
            connection.close()
    finally:
        sim.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--drivers", default="msodbc18,freetds")
    parser.add_argument("--fleet-size", type=int, default=2000)
    parser.add_argument("--base-port", type=int, default=24000)
    args = parser.parse_args()
    pyodbc.pooling = False
    with tempfile.TemporaryDirectory() as directory:
        sim = Simulator(["--fleet", str(spread_fleet(Path(directory), args.base_port))])
        try:
            for driver in args.drivers.split(","):
                bench_driver(sim, driver, args.threads, args.seconds)
        finally:
            sim.stop()
    if args.fleet_size:
        bench_fleet_memory(args.fleet_size, args.base_port + 100)


if __name__ == "__main__":
    main()
