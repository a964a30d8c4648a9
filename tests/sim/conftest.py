"""Fixtures for the simulator tests: a real ``python -m sqlserver_sim`` subprocess and driver connections."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyodbc
import pytest

REPO = Path(__file__).resolve().parents[2]
USER = "collector"
PASSWORD = "S3cret!pw"
DRIVERS = ("msodbc18", "freetds")


def msodbc18_path() -> str:
    spec = importlib.util.find_spec("mssql_python_odbc")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("mssql-python-odbc is not installed (pip install -e '.[test]')")
    base = Path(next(iter(spec.submodule_search_locations)))
    return str(base / "libs/linux/debian_ubuntu/x86_64/lib/libmsodbcsql-18.6.so.2.1")


def connection_string(driver: str, port: int, *, host: str = "127.0.0.1", user: str = USER,
                      password: str = PASSWORD) -> str:
    if driver == "msodbc18":
        return (f"DRIVER={{{msodbc18_path()}}};SERVER={host},{port};UID={user};PWD={{{password}}};"
                "Encrypt=no")
    return f"DRIVER={{FreeTDS}};SERVER={host};PORT={port};UID={user};PWD={{{password}}};TDS_Version=7.4"


def result_sets(cursor: pyodbc.Cursor) -> list[tuple[list[str], list[tuple[Any, ...]]]]:
    """Every result set of the current statement; skips the procedure's tail (description None)."""
    sets = []
    while True:
        if cursor.description is not None:
            names = [column[0] for column in cursor.description]
            sets.append((names, [tuple(row) for row in cursor.fetchall()]))
        if not cursor.nextset():
            return sets


def server_entry(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, **fields}


class Simulator:
    """A running simulator process driven through its fleet file and signals."""

    def __init__(self, directory: Path, servers: list[dict[str, Any]], extra: dict[str, Any] | None = None,
                 ) -> None:
        self.directory = directory
        self.fleet_path = directory / "fleet.json"
        self.extra = extra or {}
        self.servers = servers
        self.stderr_lines: list[str] = []
        self.ports: dict[str, int] = {}
        self.ready: dict[str, Any] = {}
        self.process: subprocess.Popen[str] | None = None

    def fleet_document(self) -> dict[str, Any]:
        servers = [{"port": self.ports[s["name"]], **s} for s in self.servers]
        return {"defaults": {"user": USER, "password": PASSWORD}, **self.extra, "servers": servers}

    def write_fleet(self) -> None:
        temporary = self.fleet_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.fleet_document()), encoding="utf-8")
        temporary.replace(self.fleet_path)

    def start(self, attempts: int = 5) -> None:
        for _ in range(attempts):
            base = random.randrange(15000, 30000 - len(self.servers))
            self.ports = {s["name"]: base + i for i, s in enumerate(self.servers)}
            self.write_fleet()
            if self._spawn():
                return
        raise RuntimeError(f"simulator did not start: {self.stderr_lines}")

    def _spawn(self) -> bool:
        self.stderr_lines = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sqlserver_sim", "--fleet", str(self.fleet_path)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        threading.Thread(target=self._collect_stderr, args=(self.process,), daemon=True).start()
        line = self.process.stdout.readline() if self.process.stdout else ""
        if not line:
            self.process.wait(timeout=10)
            if self.process.returncode == 3:  # a port was taken: try other ports
                return False
            raise RuntimeError(f"simulator exited {self.process.returncode}: {self.stderr_lines}")
        self.ready = json.loads(line)
        return True

    def _collect_stderr(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            self.stderr_lines.append(line.rstrip("\n"))

    def port(self, name: str) -> int:
        return self.ports[name]

    def reload(self, change: Callable[[list[dict[str, Any]]], None]) -> None:
        """Edit the server list, rewrite the fleet file, SIGHUP, and wait for the reload line."""
        change(self.servers)
        for server in self.servers:
            self.ports.setdefault(server["name"], max(self.ports.values()) + 1)
        self.write_fleet()
        seen = len(self.stderr_lines)
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)
        self.wait_for_stderr("reloaded", after=seen)

    def wait_for_stderr(self, text: str, after: int = 0, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.stderr_lines[after:]:
                if text in line:
                    return line
            time.sleep(0.02)
        raise AssertionError(f"no stderr line with {text!r}: {self.stderr_lines}")

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture
def make_simulator(tmp_path: Path) -> Iterator[Callable[..., Simulator]]:
    started: list[Simulator] = []

    def make(servers: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> Simulator:
        simulator = Simulator(tmp_path, servers, extra)
        simulator.start()
        started.append(simulator)
        return simulator

    yield make
    for simulator in started:
        simulator.stop()


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)
