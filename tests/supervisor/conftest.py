"""Real processes: the ``collector-supervisor`` CLI in a subprocess, its JSON log read back from a file."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import create_engine, text

FAKE_RUNTIME_DIR = Path(__file__).parent / "fake_runtime"
#: The installed console script: on PATH, else beside this interpreter (``.venv/bin/python -m pytest``).
CLI = [shutil.which("collector-supervisor") or str(Path(sys.executable).parent / "collector-supervisor")]
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """A safety net, not a timing assertion: fails only if ``predicate`` stays false for ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Deployment:
    """A folder with a collector.ini; runs CLI commands and supervisors against it."""

    def __init__(self, root: Path, system_db: str | None = None, fake_runtime: bool = True) -> None:
        self.root = root
        self.system_db = system_db or "sqlite:///var/system.db"
        self.fake_runtime = fake_runtime
        self.supervisors: list[SupervisorProcess] = []
        self.options: dict[str, Any] = {
            "poll_interval": 0.5,
            "shutdown_timeout": 5,
            "heartbeat_timeout": 20,
            "lease_duration": 10,
        }

    @property
    def config(self) -> Path:
        return self.root / "collector.ini"

    def write_config(self, **options: Any) -> Path:
        self.options.update(options)
        lines = ["[collector]", f"system_db = {self.system_db}"]
        lines += [f"{key} = {value}" for key, value in self.options.items()]
        lines += ["[logging]", "level = INFO"]
        self.config.write_text("\n".join(lines) + "\n")
        return self.config

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.fake_runtime:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(FAKE_RUNTIME_DIR), env.get("PYTHONPATH")]))
            env["COLLECTOR_FAKE_RUNTIME"] = "1"
        return env

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*CLI, "-c", str(self.config), *args],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{args} failed ({result.returncode}): {result.stderr}")
        return result

    def add_tenant(self, slug: str, *extra: str) -> None:
        self.cli("tenant", "add", slug, *extra)

    def start(self, name: str = "supervisor") -> SupervisorProcess:
        process = SupervisorProcess(self, self.root / f"{name}.log")
        self.supervisors.append(process)
        return process


class SupervisorProcess:
    def __init__(self, deployment: Deployment, log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("w")
        self.popen = subprocess.Popen(
            [*CLI, "-c", str(deployment.config), "run"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=deployment.env(),
            start_new_session=True,  # teardown can kill the whole group whatever happened
        )
        self.pid = self.popen.pid

    def lines(self) -> list[dict[str, Any]]:
        """Every complete line, parsed: a line that is not a JSON object fails the test."""
        content = self.log_path.read_text()
        complete = content[: content.rfind("\n") + 1]
        records = []
        for line in complete.splitlines():
            record = json.loads(line)
            assert isinstance(record, dict), line
            records.append(record)
        return records

    def events(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        return [r for r in self.lines() if r.get("event") == event and all(r.get(k) == v for k, v in fields.items())]

    def wait_event(self, event: str, count: int = 1, timeout: float = 20, **fields: Any) -> list[dict[str, Any]]:
        return wait_until(
            lambda: (found := self.events(event, **fields)) and len(found) >= count and found,
            timeout,
            f"{count} x {event} {fields} in {self.log_path}",
        )

    def running_children(self) -> dict[str, int]:
        """tenant slug → pid of the children started and not exited, according to the log."""
        children: dict[str, int] = {}
        for record in self.lines():
            if record.get("event") == "child.started":
                children[record["tenant"]] = record["child_pid"]
            elif record.get("event") == "child.exited" and children.get(record["tenant"]) == record["child_pid"]:
                del children[record["tenant"]]
        return children

    def child_pids(self) -> set[int]:
        try:
            return {child.pid for child in psutil.Process(self.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            return set()

    def signal(self, signo: int) -> None:
        os.kill(self.pid, signo)

    def wait_exit(self, timeout: float = 30) -> int:
        return self.popen.wait(timeout=timeout)

    def kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)
        self._log.close()


def pids_gone(pids: set[int]) -> bool:
    return not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    deployment = Deployment(tmp_path)
    deployment.write_config()
    yield deployment
    for process in deployment.supervisors:
        process.kill_group()


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database (dropped afterwards); scripts/setup.sh provides the server."""
    name = f"cs_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.fail(f"PostgreSQL not available on 127.0.0.1:5432 (run scripts/setup.sh): {exc}")
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        conn.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture
def pg_deployment(tmp_path: Path, pg_database: str) -> Iterator[Deployment]:
    deployment = Deployment(tmp_path, system_db=pg_database)
    deployment.write_config()
    yield deployment
    for process in deployment.supervisors:
        process.kill_group()
