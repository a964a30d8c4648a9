"""A real SQL Server simulator process (``python -m sqlserver_sim --fleet FILE``), driven through its fleet file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.helpers.ports import free_ports
from tests.helpers.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
SIM_USER = "collector"
SIM_PASSWORD = "S3cret;pw}x"  # "}" and ";" must survive the connection string with both drivers
#: sqlserver_sim's exit code when a server cannot listen (its port is taken).
EXIT_CANNOT_LISTEN = 3


class Simulator:
    """Every server listens on 127.0.0.1 on a port of this worker's own (``tests.helpers.ports``) and accepts
    ``SIM_USER``/``SIM_PASSWORD`` unless its entry says otherwise. ``start`` returns once the simulator
    printed its ready line (``ready``); ``ports`` maps server names to ports, ``stderr_lines`` collects its
    diagnostics (``wait_for_stderr``). At run time ``set_faults`` and ``set_servers`` rewrite the fleet file
    and SIGHUP; other signals go to ``process`` directly."""

    def __init__(self, directory: Path, servers: list[dict[str, Any]]) -> None:
        self.fleet_path = directory / "fleet.json"
        self.servers = servers
        self.ports: dict[str, int] = {}
        self.ready: dict[str, Any] = {}
        self.stderr_lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None

    def start(self, attempts: int = 5) -> None:
        for _ in range(attempts):
            self.ports = dict(zip([s["name"] for s in self.servers], free_ports(len(self.servers)), strict=True))
            self._write()
            if self._spawn():
                return
        raise RuntimeError(f"simulator did not start: {self.stderr_lines[-5:]}")

    def _spawn(self) -> bool:
        self.stderr_lines = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sqlserver_sim", "--fleet", str(self.fleet_path)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._collect_stderr, args=(self.process,), daemon=True).start()
        line = self.process.stdout.readline() if self.process.stdout else ""
        if not line:
            code = self.process.wait(timeout=10)
            if code == EXIT_CANNOT_LISTEN:  # someone took a port meanwhile: try fresh ones
                return False
            raise RuntimeError(f"simulator exited {code}: {self.stderr_lines[-5:]}")
        self.ready = json.loads(line)
        assert self.ready.get("event") == "ready", line
        return True

    def _collect_stderr(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            self.stderr_lines.append(line.rstrip("\n"))

    def _write(self) -> None:
        document = {
            "defaults": {"user": SIM_USER, "password": SIM_PASSWORD},
            "servers": [{"port": self.ports[s["name"]], **s} for s in self.servers],
        }
        temporary = self.fleet_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(document), encoding="utf-8")
        temporary.replace(self.fleet_path)

    def set_faults(self, name: str, **faults: Any) -> None:
        """Change one server's faults at run time (merged into its ``faults``); see ``set_servers``."""
        entries = [server for server in self.servers if server["name"] == name]
        assert entries, f"no simulated server {name!r}"
        for server in entries:
            server.setdefault("faults", {}).update(faults)
        self._reload()

    def set_servers(self, servers: list[dict[str, Any]]) -> None:
        """Replace the fleet's entries at run time: a name kept keeps its port, a new one gets a fresh port of
        this worker's; rewrite the fleet file, SIGHUP, wait for the reload, fail on any problem it reports."""
        self.servers = servers
        self._reload()

    def _reload(self) -> None:
        new = [server["name"] for server in self.servers if server["name"] not in self.ports]
        kept = {server["name"]: self.ports[server["name"]] for server in self.servers if server["name"] in self.ports}
        self.ports = {**kept, **dict(zip(new, free_ports(len(new)), strict=True))}
        self._write()
        seen = len(self.stderr_lines)
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)
        self.wait_for_stderr(("reloaded ", "invalid fleet file"), after=seen)
        problems = [line for line in self.stderr_lines[seen:] if "reload: " in line or "invalid fleet file" in line]
        assert not problems, problems

    def wait_for_stderr(self, text: str | tuple[str, ...], after: int = 0, timeout: float = 10.0) -> str:
        """The first diagnostic line from ``stderr_lines[after:]`` on that contains ``text`` (or one of them)."""
        texts = (text,) if isinstance(text, str) else text

        def found() -> str | None:
            return next((line for line in self.stderr_lines[after:] if any(t in line for t in texts)), None)

        return wait_until(found, timeout, lambda: f"a stderr line with {texts}: {self.stderr_lines[after:]}", 0.02)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


#: The ``simulator`` fixture: starts a ``Simulator`` for a list of server entries (all stopped afterwards).
StartSimulator = Callable[[list[dict[str, Any]]], Simulator]
