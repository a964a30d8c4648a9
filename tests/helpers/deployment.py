"""Deployments on disk: a folder with a ``collector.ini``, and the real processes run against it.

``Deployment`` drives everything through the real command line (``tenant add``, ``server add``) and runs
supervisors (``SupervisorProcess``: the CLI's ``run`` in its own session, its JSON log read back from a file).
``TenantDeployment`` is a deployment with one tenant and its servers registered directly through the API
(quicker than the CLI) for a tenant child run on its own (``Child``: ``python -m supervisor.children``).
Every ``SupervisorProcess`` and ``Child`` is in ``STARTED`` from its start on: the ``stray_processes`` fixture
(``tests/conftest.py``) stops those a test leaves running, whatever way it ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import Engine, select

from supervisor.config import Settings, load_settings
from supervisor.secret_box import SecretBox
from supervisor.servers import ServerSpec, add_server
from supervisor.storage.engine import make_engine
from supervisor.storage.migrations import upgrade_system, upgrade_tenant
from supervisor.storage.tenant_schema import servers
from supervisor.tenants import ACTIVE, insert_tenant
from tests.helpers.cli import CLI
from tests.helpers.drivers import driver_setting
from tests.helpers.simulator import REPO, SIM_PASSWORD, SIM_USER
from tests.helpers.waiting import wait_until

#: A stand-in for the tenant runtime whose behaviour the tenant slug selects (see its docstring).
FAKE_RUNTIME_DIR = Path(__file__).resolve().parents[1] / "supervisor" / "fake_runtime"
TENANT = "acme"


class Started:
    """The supervisors and tenant children started so far, oldest first."""

    def __init__(self) -> None:
        self._processes: list[SupervisorProcess | Child] = []

    def add(self, process: SupervisorProcess | Child) -> None:
        self._processes.append(process)

    def mark(self) -> int:
        return len(self._processes)

    def stop_since(self, mark: int) -> None:
        """Kill every process started since ``mark`` (newest first; each one even if another's kill fails)."""
        leftovers = self._processes[mark:]
        del self._processes[mark:]
        with contextlib.ExitStack() as stack:
            for process in leftovers:
                stack.callback(process.stop)


STARTED = Started()


class Deployment:
    """A folder with a ``collector.ini`` (``[collector]`` from ``options``, ``[logging]`` from ``logging``).

    ``fake_runtime`` puts the scripted tenant runtime of ``FAKE_RUNTIME_DIR`` in place of the real one for the
    CLI and the supervisors started from here.
    """

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
        self.logging: dict[str, Any] = {"level": "INFO"}
        #: No metrics port unless a test asks for one: parallel tests would compete for the default port.
        self.metrics: dict[str, Any] = {"listen": ""}

    @property
    def config(self) -> Path:
        return self.root / "collector.ini"

    def write_config(self, **options: Any) -> Path:
        self.options.update(options)
        lines = ["[collector]", f"system_db = {self.system_db}"]
        lines += [f"{key} = {value}" for key, value in self.options.items()]
        lines += ["[logging]", *(f"{key} = {value}" for key, value in self.logging.items())]
        lines += ["[metrics]", *(f"{key} = {value}" for key, value in self.metrics.items())]
        self.config.write_text("\n".join(lines) + "\n", encoding="utf-8")
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

    def start(self, name: str = "supervisor", module: str | None = None) -> SupervisorProcess:
        """``run`` of the CLI, or of ``python -m module`` (a test's variant of the CLI) when given."""
        process = SupervisorProcess(self, self.root / f"{name}.log", module)
        self.supervisors.append(process)
        return process

    def stop_all(self) -> None:
        """Teardown: whatever the test left running, gone with its whole process group."""
        for process in self.supervisors:
            process.kill_group()


class SupervisorProcess:
    """``collector-supervisor run`` as a real process; stdout and stderr go to ``log_path``."""

    def __init__(self, deployment: Deployment, log_path: Path, module: str | None = None) -> None:
        self.log_path = log_path
        self._log = log_path.open("w")
        command = [sys.executable, "-m", module] if module else CLI
        self.popen = subprocess.Popen(
            [*command, "-c", str(deployment.config), "run"],
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=deployment.env(),
            start_new_session=True,  # teardown can kill the whole group whatever happened
        )
        self.pid = self.popen.pid
        self._group_killed = False
        STARTED.add(self)

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
        if self._group_killed:  # nothing survives a group's SIGKILL, and its id may be another group's by now
            return
        self._group_killed = True
        members = set()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, 0)
            members = {p.pid for p in psutil.process_iter() if _group_of(p.pid) == self.pid} - {self.pid}
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)
        _wait_gone(members)
        self._log.close()

    stop = kill_group


def children() -> set[int]:
    """This process's children, alive or not yet reaped (``/proc``: quick enough to ask at every test's start)."""
    pids: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            pids.update(map(int, (task / "children").read_text().split()))
    return pids


def names_folder(process: psutil.Process, folder: str) -> bool:
    """``process``'s command line, working directory or an open file is ``folder`` or in it (a supervisor's command
    line is its title: its log or DB files show it)."""

    def inside(text: str) -> bool:
        return text.endswith(folder) or f"{folder}{os.sep}" in text

    with contextlib.suppress(psutil.Error, OSError):
        if any(map(inside, process.cmdline())) or inside(process.cwd()):
            return True
        fds = Path(f"/proc/{process.pid}/fd")
        return any(inside(os.readlink(fd)) for fd in fds.iterdir())
    return False


def kill_strays(folder: Path, children_before: set[int] | None = None) -> list[int]:
    """SIGKILL each process that names ``folder`` and, given ``children_before``, each child of this process not
    among them: with its descendants, and its process group when it leads one. Returns their pids."""
    spared = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = [p for p in psutil.process_iter() if p.pid not in spared and names_folder(p, str(folder))]
    if children_before is not None:
        for pid in children() - children_before:
            with contextlib.suppress(psutil.Error):
                found.append(psutil.Process(pid))
    doomed: dict[int, psutil.Process] = {}
    for process in found:
        with contextlib.suppress(psutil.Error, OSError):
            doomed.update({p.pid: p for p in [process, *process.children(recursive=True)]})
            if os.getpgid(process.pid) == process.pid != os.getpgrp():
                os.killpg(process.pid, signal.SIGKILL)
    for process in doomed.values():
        with contextlib.suppress(psutil.Error):
            process.kill()
    _wait_gone(set(doomed))
    return sorted(doomed)


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _wait_gone(pids: set[int], timeout: float = 10) -> None:
    """Until each of ``pids`` has exited (a zombie has: its parent may not be this process)."""
    deadline = time.monotonic() + timeout
    while not pids_gone(pids) and time.monotonic() < deadline:
        time.sleep(0.01)


def pids_gone(pids: set[int]) -> bool:
    return not any(map(_running, pids))


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class TenantDeployment(Deployment):
    """A deployment for one tenant child: the system DB with tenant ``TENANT`` (DB at ``tenant_db_url``) and
    servers added through the API with their passwords encrypted; the child logs JSON to ``log_path``."""

    def __init__(self, root: Path, driver: str, tenant_db_url: str, **settings: Any) -> None:
        super().__init__(root, system_db=f"sqlite:///{root}/system.db", fake_runtime=False)
        self.driver = driver
        self.tenant_db_url = tenant_db_url
        self.log_path = root / "child.log"
        self.options = {
            "tenant_db_url": "sqlite:///tenants/{slug}.db",
            "odbc_driver": driver_setting(driver),
            "encrypt": "no",
            "concurrency": 8,
            "collection_interval": 2,
            "collection_timeout": 2,
            "login_timeout": 1,
            "server_refresh_interval": 2,
            "secret_key_file": str(root / "secret.key"),
            "spool_dir": str(root / "spool"),
            **settings,
        }
        self.logging = {"level": "DEBUG", "format": "json", "file": str(self.log_path)}
        self.write_config()
        self.settings: Settings = load_settings(self.config)
        system = make_engine(self.settings.system_db, pooled=False)
        upgrade_system(system)
        self.engine: Engine = make_engine(tenant_db_url, pooled=False)
        upgrade_tenant(self.engine)
        insert_tenant(system, TENANT, "Acme", tenant_db_url, ACTIVE)
        system.dispose()
        self.box = SecretBox.load(self.settings.secret_key_file)

    def add(self, name: str, port: int, *, password: str = SIM_PASSWORD, **fields: Any) -> int:
        spec = ServerSpec(name=name, host="127.0.0.1", port=port, username=SIM_USER, password=password, **fields)
        return add_server(self.engine, spec, self.box.encrypt(password)).id

    def server_ids(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {row.name: row.id for row in conn.execute(select(servers.c.id, servers.c.name))}

    def log_events(self) -> list[dict[str, Any]]:
        """The child's log so far; a line that is not JSON shows as ``{"unparsable": line}``."""
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

    def __init__(self, deployment: TenantDeployment, prefix: tuple[str, ...] = ()) -> None:
        """``prefix``: a command that runs the child (``prlimit …``)."""
        self.process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "supervisor.children", "-c", str(deployment.config), TENANT],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        STARTED.add(self)

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

    stop = kill
