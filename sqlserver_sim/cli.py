"""``sqlserver-sim``: run a fleet of simulated SQL Servers (README "The SQL Server simulator").

    sqlserver-sim --fleet FILE.json
    sqlserver-sim --servers N --base-port P [--user U --password P] [--host H]

Prints one JSON line ``{"event": "ready", "servers": [...]}`` on stdout once every server listens;
SIGHUP re-reads the fleet file, SIGTERM/SIGINT stop (exit 0). Diagnostics go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

from sqlserver_sim.fleet import (
    DEFAULT_HOST,
    DEFAULT_PASSWORD,
    DEFAULT_USER,
    Fleet,
    FleetError,
    ServerSpec,
    generated_fleet,
    load_fleet,
)
from sqlserver_sim.server import FleetRunner
from sqlserver_sim.tls import CertificateStore

EXIT_INVALID_FLEET = 2
EXIT_CANNOT_LISTEN = 3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sqlserver-sim", description="Simulated SQL Servers speaking TDS 7.4")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--fleet", type=Path, help="fleet file (JSON); re-read on SIGHUP")
    source.add_argument("--servers", type=int, help="number of generated servers")
    parser.add_argument("--base-port", type=int, default=15000, help="first port of generated servers")
    parser.add_argument("--host", default=None, help=f"listen address (default {DEFAULT_HOST})")
    parser.add_argument("--user", default=DEFAULT_USER)
    parser.add_argument("--password", default=DEFAULT_PASSWORD)
    parser.add_argument("--cert-dir", type=Path, default=None,
                        help="where TLS servers' certificate and key are written")
    return parser.parse_args(argv)


def say(text: str) -> None:
    print(f"sqlserver-sim: {text}", file=sys.stderr, flush=True)


def read_fleet(args: argparse.Namespace) -> Fleet:
    if args.fleet is not None:
        fleet = load_fleet(args.fleet)
        if args.host:
            raise FleetError("--host: use the fleet file's 'host' field with --fleet")
        return fleet
    if args.servers < 1 or not 1 <= args.base_port <= 65535 - args.servers:
        raise FleetError("--servers/--base-port: need N >= 1 and ports within 1-65535")
    return generated_fleet(args.servers, args.base_port, args.host or DEFAULT_HOST, args.user, args.password)


async def run(args: argparse.Namespace, fleet: Fleet) -> int:
    cert_dir = args.cert_dir or fleet.cert_dir or Path.cwd()
    certificates = CertificateStore(cert_dir)
    runner = FleetRunner(certificates)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    reloads: asyncio.Queue[None] = asyncio.Queue()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, reloads.put_nowait, None)
    report = await runner.apply(fleet.servers)
    if report.errors:
        for problem in report.errors:
            say(problem)
        await runner.stop()
        return EXIT_CANNOT_LISTEN
    ready = {"event": "ready", "servers": [_entry(server.spec, certificates) for server in runner.servers.values()]}
    print(json.dumps(ready), flush=True)

    reloader = asyncio.create_task(_reload_forever(args, runner, reloads))
    await stopping.wait()
    reloader.cancel()
    await runner.stop()
    return 0


async def _reload_forever(args: argparse.Namespace, runner: FleetRunner, reloads: asyncio.Queue[None]) -> None:
    while True:
        await reloads.get()
        if args.fleet is None:
            say("SIGHUP ignored: no fleet file")
            continue
        try:
            fleet = load_fleet(args.fleet)
        except FleetError as exc:
            say(f"invalid fleet file, keeping the old fleet: {exc}")
            continue
        report = await runner.apply(fleet.servers)
        for problem in report.errors:
            say(f"reload: {problem}")
        say(f"reloaded {args.fleet}: {report}")


def _entry(spec: ServerSpec, certificates: CertificateStore) -> dict[str, object]:
    entry: dict[str, object] = {"name": spec.name, "host": spec.host, "port": spec.port}
    if spec.tls:
        certificates.contexts()
        entry["certificate"] = str(certificates.certificate_path)
    return entry


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="sqlserver-sim: %(message)s")
    try:
        fleet = read_fleet(args)
    except FleetError as exc:
        say(f"invalid fleet: {exc}")
        return EXIT_INVALID_FLEET
    try:
        return asyncio.run(run(args, fleet))
    except KeyboardInterrupt:
        return 0
