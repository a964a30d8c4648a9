"""Collector test fixtures: a real simulator subprocess, a tenant with servers, a real child process."""

from __future__ import annotations

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

import pytest
from sqlalchemy import Engine, select

from supervisor.children.odbc_driver import bundled_library
from supervisor.config import load_settings
from supervisor.secret_box import SecretBox
from supervisor.servers import ServerSpec, add_server
from supervisor.storage.engine import make_engine
from supervisor.storage.migrations import upgrade_system, upgrade_tenant
from supervisor.storage.tenant_schema import servers
from supervisor.tenants import ACTIVE, insert_tenant

REPO = Path(__file__).resolve().parents[2]
SIM_USER = "collector"
SIM_PASSWORD = "S3cret;pw}x"  # "}" and ";" must survive the connection string with both drivers
TENANT = "acme"
DRIVERS = ("msodbc18", "freetds")


def driver_setting(driver: str) -> str:
    if driver == "freetds":
        return "FreeTDS"
    library = bundled_library()
    if library is None:
        pytest.fail("mssql-python-odbc is not installed (pip install -e '.[test]')")
    return library


class Simulator:
    def __init__(self, directory: Path, servers: list[dict[str, Any]]) -> None:
        self.fleet_path = directory / "fleet.json"
        self.servers = servers
        self.ports: dict[str, int] = {}
        self.stderr: list[str] = []
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        for _ in range(5):
            base = random.randrange(20000, 30000 - len(self.servers) - 20)
            self.ports = {s["name"]: base + i for i, s in enumerate(self.servers)}
            self._write()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sqlserver_sim", "--fleet", str(self.fleet_path)],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            threading.Thread(target=self._drain, daemon=True).start()
            line = self.process.stdout.readline() if self.process.stdout else ""
            if line:
                return
            self.process.wait(10)
        raise RuntimeError(f"simulator did not start: {self.stderr[-5:]}")

    def _drain(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line)

    def _write(self) -> None:
        document = {
            "defaults": {"user": SIM_USER, "password": SIM_PASSWORD},
            "servers": [{"port": self.ports[s["name"]], **s} for s in self.servers],
        }
        temporary = self.fleet_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(document), encoding="utf-8")
        temporary.replace(self.fleet_path)

    def set_faults(self, name: str, **faults: Any) -> None:
        for server in self.servers:
            if server["name"] == name:
                server.setdefault("faults", {}).update(faults)
        self._write()
        seen = len(self.stderr)
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if any("reload" in line for line in self.stderr[seen:]):
                return
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Deployment:
    """A config file, a system DB, one tenant with its DB, and servers registered through the real API."""

    def __init__(self, directory: Path, driver: str, tenant_db_url: str, **settings: Any) -> None:
        self.directory = directory
        self.driver = driver
        self.tenant_db_url = tenant_db_url
        self.log_path = directory / "child.log"
        values = {
            "system_db": f"sqlite:///{directory}/system.db",
            "tenant_db_url": "sqlite:///tenants/{slug}.db",
            "odbc_driver": driver_setting(driver),
            "encrypt": "no",
            "concurrency": 8,
            "collection_interval": 2,
            "collection_timeout": 2,
            "login_timeout": 1,
            "server_refresh_interval": 2,
            "secret_key_file": str(directory / "secret.key"),
            "spool_dir": str(directory / "spool"),
            **settings,
        }
        lines = ["[collector]", *(f"{key} = {value}" for key, value in values.items())]
        lines += ["[logging]", "level = DEBUG", "format = json", f"file = {self.log_path}"]
        self.config_path = directory / "collector.ini"
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.settings = load_settings(self.config_path)
        system = make_engine(self.settings.system_db, pooled=False)
        upgrade_system(system)
        self.engine: Engine = make_engine(tenant_db_url, pooled=False)
        upgrade_tenant(self.engine)
        insert_tenant(system, TENANT, "Acme", tenant_db_url, ACTIVE)
        system.dispose()
        self.box = SecretBox.load(self.settings.secret_key_file)

    def password(self) -> str:
        return SIM_PASSWORD

    def add(self, name: str, port: int, *, password: str = SIM_PASSWORD, **fields: Any) -> int:
        spec = ServerSpec(name=name, host="127.0.0.1", port=port, username=SIM_USER, password=password, **fields)
        return add_server(self.engine, spec, self.box.encrypt(password)).id

    def server_ids(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {row.name: row.id for row in conn.execute(select(servers.c.id, servers.c.name))}

    def log_events(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        events = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                events.append({"unparsable": line})
        return events


class Child:
    """``python -m supervisor.children -c collector.ini TENANT`` as a real process."""

    def __init__(self, deployment: Deployment) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "supervisor.children", "-c", str(deployment.config_path), TENANT],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def terminate(self, timeout: float = 30.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds until exit)."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Callable[[list[dict[str, Any]]], Simulator]]:
    started: list[Simulator] = []

    def start(servers_: list[dict[str, Any]]) -> Simulator:
        sim = Simulator(tmp_path, servers_)
        sim.start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture
def child_processes() -> Iterator[Callable[[Deployment], Child]]:
    children: list[Child] = []

    def start(deployment: Deployment) -> Child:
        child = Child(deployment)
        children.append(child)
        return child

    yield start
    for child in children:
        child.kill()


def wait_until(condition: Callable[[], Any], timeout: float, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            return value
        time.sleep(interval)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/tenant.db"


def env_without_secret() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "COLLECTOR_SECRET_KEY"}
