"""What serving /metrics costs the parent: CPU per scrape and the exposition's size.

    python -m bench.metrics_cost [--tenants 50] [--servers-per-tenant 4] [--scrapes 200] [--per-server]

T tenants with S simulated servers each, collected every 5 s, ``[metrics] listen`` on a free port. After
warm-up (every child has reported), ``--scrapes`` scrapes back to back; the parent's CPU time (utime +
stime, from psutil) over them gives CPU ms per scrape, and with Prometheus's usual 15 s interval the share
of a core: cost per scrape / 15 s. The same number of idle seconds without scrapes is measured first, so
the loop's own cost is not counted.
"""

from __future__ import annotations

import argparse
import socket
import time
import urllib.request
from pathlib import Path

import psutil

from bench.common import Deployment, SimFleet, make_servers, run_in_folder, run_octet, split_tenants

SCRAPE_EVERY = 15.0


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--servers-per-tenant", type=int, default=4)
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--per-server", action="store_true", help="with per_server = yes")
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it")
    return parser.parse_args(argv)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def measure(directory: Path, args: argparse.Namespace) -> dict[str, float]:
    servers = make_servers(args.tenants * args.servers_per_tenant, run_octet(), prefix="m")
    groups = split_tenants(servers, args.tenants)
    fleet = SimFleet(directory / "sim", servers)
    port = _free_port()
    deployment = Deployment(directory / "collector", odbc_driver="FreeTDS", collection_interval=5,
                            metrics_listen=f"127.0.0.1:{port}")  # fmt: skip
    if args.per_server:
        with deployment.config_path.open("a", encoding="utf-8") as config:
            config.write("per_server = yes\n")
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        fleet.start()
        deployment.register(groups, None, use_cli=False)
        process = deployment.start()
        if not deployment.wait_children(args.tenants, 120):
            raise RuntimeError("the children did not start")
        parent = psutil.Process(process.pid)
        deadline = time.monotonic() + 60
        body = b""
        while time.monotonic() < deadline:  # warm-up: every tenant has counted collections
            with urllib.request.urlopen(url, timeout=10) as response:
                body = response.read()
            if body.count(b'collector_collections_total{result="ok"') >= args.tenants:
                break
            time.sleep(1)
        idle_start, cpu0 = time.monotonic(), _cpu(parent)
        time.sleep(5)
        idle_cpu_per_s = (_cpu(parent) - cpu0) / (time.monotonic() - idle_start)
        start, cpu1 = time.monotonic(), _cpu(parent)
        for _ in range(args.scrapes):
            with urllib.request.urlopen(url, timeout=10) as response:
                body = response.read()
        elapsed = time.monotonic() - start
        scrape_cpu = (_cpu(parent) - cpu1 - idle_cpu_per_s * elapsed) / args.scrapes
        lines = [line for line in body.decode().splitlines() if line and not line.startswith("#")]
        return {
            "tenants": args.tenants,
            "servers": len(servers),
            "cpu_ms_per_scrape": 1000 * scrape_cpu,
            "wall_ms_per_scrape": 1000 * elapsed / args.scrapes,
            "core_share_at_15s_percent": 100 * scrape_cpu / SCRAPE_EVERY,
            "exposition_bytes": len(body),
            "exposition_samples": len(lines),
        }
    finally:
        deployment.terminate(30)
        fleet.stop()


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    figures = run_in_folder(args.keep, "bench-metrics-", lambda folder: measure(folder, args))
    for key, value in figures.items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    print(
        f"parent CPU for /metrics: {figures['cpu_ms_per_scrape']:.2f} ms per scrape, "
        f"{figures['core_share_at_15s_percent']:.3f} % of a core at one scrape per 15 s "
        f"({figures['tenants']} tenants, {figures['exposition_bytes']:,} bytes per exposition)"
    )


if __name__ == "__main__":
    main()
