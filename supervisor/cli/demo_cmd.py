"""``demo``: a simulated fleet, registered and supervised in a fresh folder, with a live status table.

Starts ``python -m sqlserver_sim --fleet`` (one server of each tenant is down), writes a collector.ini,
registers tenants and servers through the CLI's own code, runs ``collector-supervisor run`` as a
subprocess and redraws a table per server (``demo_view``: status, CPU % and batch requests/s with sparklines,
memory %, connections, the values' age, the broken servers and the outage labelled).
Ctrl-C or ``--seconds`` stops the supervisor (SIGTERM, graceful) and then the simulator.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine

from supervisor.cli import demo_view
from supervisor.cli.context import CliContext
from supervisor.errors import CollectorError, UsageError

MARKER = ".collector-demo"
PASSWORD_ENV = "COLLECTOR_DEMO_SQL_PASSWORD"
SIM_USER = "sa"
SIM_PASSWORD = "Simulat0r!"
TENANT_NAMES = ["acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka"]
OUTAGE_START = 20
OUTAGE_END = 40


def demo(args: argparse.Namespace, ctx: CliContext) -> int:
    if not 1 <= args.tenants <= 50 or not 1 <= args.servers <= 50:
        raise UsageError("--tenants and --servers must be between 1 and 50")
    folder = _fresh_folder(Path(args.dir or "demo"))
    fleet = _fleet(args.tenants, args.servers)
    (folder / "fleet.json").write_text(json.dumps({"servers": fleet}, indent=2))
    config = _write_config(folder)
    simulator = _start_simulator(folder)
    supervisor: subprocess.Popen[bytes] | None = None
    try:
        _register(config, fleet)
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "supervisor", "-c", str(config), "run"],
            stdout=subprocess.DEVNULL,
            stderr=(folder / "supervisor.stderr").open("w"),
            start_new_session=True,  # Ctrl-C reaches only this process; it stops the others in order
        )
        _watch(folder, fleet, args.seconds, supervisor, simulator)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
        print("\nstopping: supervisor (SIGTERM) …", flush=True)
        code = _stop(supervisor, 60)
        print("stopping: simulator …", flush=True)
        _stop(simulator, 15)
    print(f"demo stopped (supervisor exit code {code}); logs in {folder / 'supervisor.log'}")
    return 0 if code in (0, None) else 1


def _fresh_folder(folder: Path) -> Path:
    folder = folder.resolve()
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--dir {folder} is not a folder: choose another")
    try:
        if folder.exists() and any(folder.iterdir()):
            if not (folder / MARKER).exists():
                raise UsageError(f"--dir {folder} is not empty and not a demo folder: choose another")
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MARKER).write_text("created by collector-supervisor demo; deleted by the next demo run\n")
    except OSError as exc:
        raise UsageError(f"--dir {folder} cannot be used: {exc.strerror or exc}") from None
    return folder


def _free_ports(count: int) -> list[int]:
    """Free ports below the ephemeral range (32768+), so no outgoing connection can hold one."""
    ports: list[int] = []
    candidate = random.randrange(20000, 30000 - count)
    while len(ports) < count and candidate < 32000:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
                ports.append(candidate)
            except OSError:
                pass
        candidate += 1
    if len(ports) < count:
        raise CollectorError("no free local ports for the simulated fleet")
    return ports


def _fleet(tenant_count: int, per_tenant: int) -> list[dict[str, Any]]:
    names = [TENANT_NAMES[i] if i < len(TENANT_NAMES) else f"tenant-{i + 1}" for i in range(tenant_count)]
    ports = iter(_free_ports(tenant_count * per_tenant))
    fleet = []
    for tenant in names:
        for number in range(1, per_tenant + 1):
            entry: dict[str, Any] = {
                "name": f"{tenant}-sql{number}",
                "port": next(ports),
                "user": SIM_USER,
                "password": SIM_PASSWORD,
                "profile": {"batch_requests_per_sec": 100 * number + 50, "cpu_percent": [5, 30 + 15 * number]},
                "tenant": tenant,
            }
            if number == per_tenant:
                entry["faults"] = {"down": True}  # the faulty one of this tenant
            fleet.append(entry)
    return fleet


def _write_config(folder: Path) -> Path:
    config = folder / "collector.ini"
    config.write_text(
        "[collector]\n"
        "system_db = sqlite:///var/system.db\n"
        "tenant_db_url = sqlite:///var/tenants/{slug}.db\n"
        "poll_interval = 2\n"
        "collection_interval = 5\n"
        "collection_timeout = 3\n"
        "shutdown_timeout = 10\n"
        "encrypt = no\n"
        "odbc_driver = auto\n"
        "[logging]\n"
        "file = supervisor.log\n"
        "[metrics]\n"
        "# any free port: a demo never fails on a port in use (supervisor.started in the log names it)\n"
        "listen = 127.0.0.1:0\n"
    )
    return config


def _start_simulator(folder: Path) -> subprocess.Popen[bytes]:
    fleet_file = folder / "fleet.json"
    sim_fleet = json.loads(fleet_file.read_text())
    for entry in sim_fleet["servers"]:
        entry.pop("tenant")
    fleet_file.write_text(json.dumps(sim_fleet, indent=2))
    process = subprocess.Popen(
        [sys.executable, "-m", "sqlserver_sim", "--fleet", str(fleet_file)],
        stdout=subprocess.PIPE,
        stderr=(folder / "simulator.log").open("w"),
        start_new_session=True,
    )
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 30)
    line = process.stdout.readline() if ready else b""
    if not line or json.loads(line).get("event") != "ready":
        _stop(process, 5)
        raise CollectorError(f"the simulator did not start; see {folder / 'simulator.log'}")
    print(f"simulator ready: {len(sim_fleet['servers'])} SQL Servers on 127.0.0.1", flush=True)
    return process


def _register(config: Path, fleet: list[dict[str, Any]]) -> None:
    from supervisor.cli.main import main

    os.environ[PASSWORD_ENV] = SIM_PASSWORD
    tenants = sorted({entry["tenant"] for entry in fleet}, key=[e["tenant"] for e in fleet].index)
    commands = [["tenant", "add", tenant] for tenant in tenants]
    commands += [
        ["server", "add", e["tenant"], e["name"], "--host", "127.0.0.1", "--port", str(e["port"]),
         "--user", SIM_USER, "--password-env", PASSWORD_ENV, "--encrypt", "no"]
        for e in fleet
    ]  # fmt: skip
    for command in commands:
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            code = main(["-c", str(config), *command])
        if code != 0:
            raise CollectorError(f"demo registration failed: {' '.join(command[:3])}")
    print(f"registered {len(tenants)} tenants and {len(fleet)} servers", flush=True)


def _watch(
    folder: Path,
    fleet: list[dict[str, Any]],
    seconds: float | None,
    supervisor: subprocess.Popen[bytes],
    simulator: subprocess.Popen[bytes],
) -> None:
    deadline = time.monotonic() + seconds if seconds else None
    tenants = list(dict.fromkeys(entry["tenant"] for entry in fleet))
    engines = {t: create_engine(f"sqlite:///{folder}/var/tenants/{t}.db") for t in tenants}
    outage = ScriptedOutage(folder / "fleet.json", fleet[0]["name"], simulator)
    broken = {e["name"]: "broken" for e in fleet if e.get("faults", {}).get("down")}
    interactive = sys.stdout.isatty()
    colour = demo_view.colour_wanted()
    started = time.monotonic()
    last_print = 0.0
    headline = f"{len(fleet)} simulated SQL Servers; those marked broken are down on purpose"
    while deadline is None or time.monotonic() < deadline:
        if supervisor.poll() is not None:
            print(f"the supervisor exited ({supervisor.returncode}); see {folder / 'supervisor.log'}")
            return
        now = time.monotonic()
        news = outage.advance(now - started)
        if news:
            headline = news  # kept on screen until the next news
            if not interactive:
                print(news, flush=True)
        if interactive or now - last_print >= 5 or news:
            table = demo_view.render(
                demo_view.read_views(engines),
                elapsed=now - started,
                headline=headline,
                note=outage.note,
                labels={**broken, outage.server: outage.label},
                colour=colour,
            )
            print(("\x1b[H\x1b[2J" if interactive else "\n") + table, flush=True)
            last_print = now
        time.sleep(1)


class ScriptedOutage:
    """Takes one healthy server down after OUTAGE_START seconds and brings it back after OUTAGE_END,
    by rewriting the fleet file and sending SIGHUP to the simulator: the newcomer sees it go offline."""

    def __init__(self, fleet_file: Path, server: str, simulator: subprocess.Popen[bytes]) -> None:
        self.fleet_file = fleet_file
        self.server = server
        self.simulator = simulator
        self.phase = "before"
        self.note = f"{server} will lose its network at {OUTAGE_START}s and get it back at {OUTAGE_END}s"
        self.label = f"out at {OUTAGE_START}s"

    def advance(self, elapsed: float) -> str | None:
        if self.phase == "before" and elapsed >= OUTAGE_START:
            self._set_down(True)
            self.phase, self.note = "down", f"{self.server} is unreachable since {OUTAGE_START}s (simulated outage)"
            self.label = f"out {OUTAGE_START}-{OUTAGE_END}s"
            return f"demo: {self.server} made unreachable at {OUTAGE_START}s — watch it go offline"
        if self.phase == "down" and elapsed >= OUTAGE_END:
            self._set_down(False)
            self.phase, self.note = "after", f"{self.server} was unreachable from {OUTAGE_START}s to {OUTAGE_END}s"
            self.label = "recovered"
            return f"demo: {self.server} reachable again at {OUTAGE_END}s — watch it come back online"
        return None

    def _set_down(self, down: bool) -> None:
        fleet = json.loads(self.fleet_file.read_text())
        for entry in fleet["servers"]:
            if entry["name"] == self.server:
                entry.setdefault("faults", {})["down"] = down
        self.fleet_file.write_text(json.dumps(fleet, indent=2))
        if self.simulator.poll() is None:
            self.simulator.send_signal(signal.SIGHUP)


def _stop(process: subprocess.Popen[bytes] | None, timeout: float) -> int | None:
    if process is None:
        return None
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()
