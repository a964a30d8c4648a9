"""Shared benchmark plumbing: simulator fleets, deployments, process-tree sampling, statistics.

Every subprocess is started in its own process group and stopped in ``finally`` blocks (SIGTERM,
then SIGKILL). Simulated servers listen on ``127.77.<run>.<shard>`` addresses (loopback only) with
ports 10000-14999, below the ephemeral range, so TIME_WAIT sockets spread over many 4-tuples and
parallel runs (a CI smoke test next to a manual run) do not collide.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]
SIM_USER = "bench"
SIM_PASSWORD = "Bench-pw-7"  # plain: FreeTDS cannot carry '};' (see connection_string.py)
PORT_BASE = 10000
PORTS_PER_HOST = 5000
#: Servers per simulator process: each needs a listener and a session fd.
SERVERS_PER_SIM = 4000
MIB = 1024 * 1024


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (inherited by every subprocess we start)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def bench_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


# --- statistics --------------------------------------------------------------------------------------
def run_in_folder(keep: Path | None, prefix: str, run: Callable[[Path], T]) -> T:
    """``run`` in ``keep`` (created, kept for inspection) or in a temporary folder removed afterwards."""
    if keep:
        keep.mkdir(parents=True, exist_ok=True)
        return run(keep)
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        return run(Path(tmp))


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


# --- simulated servers ---------------------------------------------------------------------------------
@dataclass
class SimServer:
    name: str
    host: str
    port: int
    faults: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)
    procedure_installed: bool = True
    tls: bool = False

    def entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": self.name, "host": self.host, "port": self.port}
        if self.faults:
            entry["faults"] = dict(self.faults)
        if self.profile:
            entry["profile"] = dict(self.profile)
        if not self.procedure_installed:
            entry["procedure_installed"] = False
        if self.tls:
            entry["tls"] = True
        return entry


@dataclass(frozen=True)
class Encryption:
    """How the collector's server rows (and a peer's connections) ask for encryption."""

    encrypt: str = "no"  # the server row's encrypt mode
    trust_server_certificate: bool = False

    @property
    def on(self) -> bool:
        return self.encrypt != "no"


PLAIN = Encryption()
#: The production default ``encrypt = yes``, against servers with ``tls`` on. The simulator's self-signed
#: certificate names 127.0.0.1-8 and localhost, not the 127.77.x.y addresses of the benches, so it is trusted
#: (TrustServerCertificate) rather than verified; the peers are configured the same way.
TLS = Encryption("yes", True)


def make_servers(count: int, run_octet: int, prefix: str = "sql", *, tls: bool = False,
                 first: int = 0) -> list[SimServer]:
    """``count`` servers from the ``first``-th address/port slot of this run on (another set of the same run
    starts where the last one ended)."""
    servers = []
    for index in range(first, first + count):
        host = f"127.77.{run_octet}.{1 + index // PORTS_PER_HOST}"
        port = PORT_BASE + index % PORTS_PER_HOST
        servers.append(SimServer(f"{prefix}-{index + 1:05d}", host, port, tls=tls))
    return servers


class SimProcess:
    """One ``python -m sqlserver_sim --fleet FILE`` process serving some servers."""

    def __init__(self, directory: Path, index: int, servers: list[SimServer]) -> None:
        self.fleet_path = directory / f"fleet-{index}.json"
        self.servers = servers
        self.process: subprocess.Popen[str] | None = None
        self.stderr: list[str] = []
        self.reloads = 0
        self._lock = threading.Lock()

    def write(self) -> None:
        document = {
            "defaults": {"user": SIM_USER, "password": SIM_PASSWORD},
            "servers": [server.entry() for server in self.servers],
        }
        temporary = self.fleet_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(document), encoding="utf-8")
        temporary.replace(self.fleet_path)

    def start(self, timeout: float = 120.0) -> None:
        self.write()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sqlserver_sim", "--fleet", str(self.fleet_path)],
            cwd=REPO,
            env=bench_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._drain, daemon=True).start()
        ready: list[str] = []
        reader = threading.Thread(target=lambda: ready.append(self._stdout_line()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not ready or not ready[0].strip():
            self.stop()
            raise RuntimeError(f"simulator {self.fleet_path.name} not ready: {''.join(self.stderr[-5:])}")
        threading.Thread(target=self._discard_stdout, daemon=True).start()

    def _stdout_line(self) -> str:
        assert self.process is not None and self.process.stdout is not None
        return self.process.stdout.readline()

    def _discard_stdout(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for _line in self.process.stdout:
            pass

    def _drain(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            with self._lock:
                self.stderr.append(line)
                del self.stderr[:-200]
                if "reloaded" in line:
                    self.reloads += 1

    def reload(self, timeout: float = 30.0) -> bool:
        """Rewrite the fleet file, SIGHUP, wait for the simulator's 'reloaded' line."""
        with self._lock:
            seen = self.reloads
        self.write()
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.reloads > seen:
                    return True
            time.sleep(0.05)
        return False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def stop(self) -> None:
        stop_process_group(self.process, 10.0)


class SimFleet:
    """Servers sharded over several simulator processes (fd limit: listener + session per server)."""

    def __init__(self, directory: Path, servers: list[SimServer], per_process: int = SERVERS_PER_SIM) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        shards = max(1, math.ceil(len(servers) / per_process))
        self.processes = [
            SimProcess(directory, index, servers[index::shards]) for index in range(shards)
        ]
        self.by_name = {server.name: server for server in servers}

    def start(self) -> None:
        try:
            for process in self.processes:
                process.start()
        except BaseException:
            self.stop()
            raise

    def set_faults(self, changes: dict[str, dict[str, Any]]) -> None:
        """``{server name: {fault: value}}``; a value of None removes that fault. SIGHUPs affected shards."""
        touched = []
        for process in self.processes:
            names = {server.name for server in process.servers}
            hit = False
            for name, faults in changes.items():
                if name in names:
                    server = self.by_name[name]
                    for key, value in faults.items():
                        if value is None:
                            server.faults.pop(key, None)
                        else:
                            server.faults[key] = value
                    hit = True
            if hit:
                touched.append(process)
        for process in touched:
            if not process.reload():
                raise RuntimeError(f"simulator {process.fleet_path.name} did not confirm the reload")

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.pid is not None]

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


def stop_process_group(process: subprocess.Popen[Any] | None, timeout: float) -> int | None:
    """SIGTERM the group led by ``process``, wait, then SIGKILL the group. Returns the exit code."""
    if process is None:
        return None
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # leftovers of the group (e.g. orphaned grandchildren)
    return process.returncode


def run_octet() -> int:
    return random.randrange(1, 255)


# --- process trees -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcSample:
    pid: int
    cpu_seconds: float  # user + system of this process (not its children)
    rss: int
    uss: int
    fds: int


@dataclass(frozen=True)
class TreeSample:
    at: float
    root: ProcSample | None
    children: tuple[ProcSample, ...]
    #: CPU of the whole tree: live processes plus reaped children (the root's children_* times).
    cpu_seconds: float

    @property
    def fds(self) -> int:
        return (self.root.fds if self.root else 0) + sum(c.fds for c in self.children)


def _sample_process(process: psutil.Process) -> tuple[ProcSample, float]:
    with process.oneshot():
        times = process.cpu_times()
        info = process.memory_full_info()
        fds = process.num_fds()
    reaped = times.children_user + times.children_system
    return ProcSample(process.pid, times.user + times.system, info.rss, info.uss, fds), reaped


def sample_tree(pid: int) -> TreeSample:
    try:
        root = psutil.Process(pid)
        root_sample, reaped = _sample_process(root)
        descendants = root.children(recursive=True)
    except psutil.NoSuchProcess:
        return TreeSample(time.monotonic(), None, (), 0.0)
    children = []
    total = root_sample.cpu_seconds + reaped
    for child in descendants:
        try:
            sample, child_reaped = _sample_process(child)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        children.append(sample)
        total += sample.cpu_seconds + child_reaped
    return TreeSample(time.monotonic(), root_sample, tuple(children), total)


def cpu_of(pids: Sequence[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total


def process_cpu(pid: int) -> float:
    """CPU seconds of one process (all its threads, exited ones too; not its children) in nanoseconds'
    resolution: the kernel's CPU clock of another process (clock_getcpuclockid's id, CPUCLOCK_SCHED), where
    /proc's times count 10 ms ticks."""
    return time.clock_gettime(((~pid) << 3) | 2)


class TreeSampler:
    """Samples a process tree every ``every`` seconds in a thread."""

    def __init__(self, pid: int, every: float = 5.0) -> None:
        self.pid = pid
        self.every = every
        self.samples: list[TreeSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> TreeSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                self.samples.append(sample_tree(self.pid))
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


# --- deployments ---------------------------------------------------------------------------------------
class Deployment:
    """A folder with collector.ini, its system DB, secret key and SQLite tenant DBs; the real CLI."""

    def __init__(self, directory: Path, **settings: Any) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.log_path = directory / "collector.log"
        values: dict[str, Any] = {
            "system_db": "sqlite:///var/system.db",
            "tenant_db_url": "sqlite:///var/tenants/{slug}.db",
            "encrypt": "no",
            "secret_key_file": "var/secret.key",
            "spool_dir": "var/spool",
            **settings,
        }
        level = values.pop("log_level", "INFO")
        listen = values.pop("metrics_listen", "")  # off unless asked: runs side by side need no port
        lines = ["[collector]", *(f"{key} = {value}" for key, value in values.items())]
        lines += ["", "[logging]", f"level = {level}", "format = json", f"file = {self.log_path}"]
        lines += ["", "[metrics]", f"listen = {listen}"]
        self.config_path = directory / "collector.ini"
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.process: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None,
            check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "supervisor", "-c", str(self.config_path), *args]
        result = subprocess.run(
            command, input=stdin, env={**bench_env(), **(env or {})}, capture_output=True, text=True,
            timeout=timeout, cwd=self.directory, check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:3])}: exit {result.returncode}: {result.stderr.strip()[-500:]}")
        return result

    def add_tenant(self, slug: str, db_url: str | None = None) -> None:
        extra = ["--db-url", db_url] if db_url else []
        self.cli("tenant", "add", slug, *extra)

    def add_server_cli(self, tenant: str, server: SimServer, interval: int | None,
                       encryption: Encryption = PLAIN) -> None:
        args = ["server", "add", tenant, server.name, "--host", server.host, "--port", str(server.port),
                "--user", SIM_USER, "--password-env", "BENCH_SIM_PASSWORD", "--encrypt", encryption.encrypt]
        if encryption.trust_server_certificate:
            args.append("--trust-server-certificate")
        if interval is not None:
            args += ["--interval", str(interval)]
        self.cli(*args, env={"BENCH_SIM_PASSWORD": SIM_PASSWORD})

    def add_servers_api(self, tenant: str, servers: Sequence[SimServer], interval: int | None,
                        encryption: Encryption = PLAIN) -> None:
        """Bulk registration with the very function ``server add`` calls (a CLI call per server is too slow
        for thousands)."""
        from supervisor import databases
        from supervisor.config import load_settings
        from supervisor.secret_box import SecretBox
        from supervisor.servers import ServerSpec, add_server
        from supervisor.tenants import get_tenant

        settings = load_settings(self.config_path)
        system = databases.system_engine(settings)
        engine = databases.tenant_engine(settings, get_tenant(system, tenant), pooled=True)
        box = SecretBox.load(settings.secret_key_file)
        try:
            for server in servers:
                spec = ServerSpec(name=server.name, host=server.host, port=server.port, username=SIM_USER,
                                  password=SIM_PASSWORD, interval_seconds=interval, encrypt=encryption.encrypt,
                                  trust_server_certificate=encryption.trust_server_certificate or None)
                add_server(engine, spec, box.encrypt(SIM_PASSWORD))
        finally:
            engine.dispose()
            system.dispose()

    def register(self, tenants: Mapping[str, Sequence[SimServer]], interval: int | None, *, use_cli: bool,
                 db_urls: dict[str, str] | None = None, encryption: Encryption = PLAIN) -> None:
        for slug, servers in tenants.items():
            self.add_tenant(slug, (db_urls or {}).get(slug))
            if use_cli:
                for server in servers:
                    self.add_server_cli(slug, server, interval, encryption)
            else:
                self.add_servers_api(slug, servers, interval, encryption)

    # --- the supervisor ------------------------------------------------------------------------------
    def start(self) -> subprocess.Popen[bytes]:
        env = bench_env()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "supervisor", "-c", str(self.config_path), "run"],
            cwd=self.directory, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=(self.directory / "stderr.txt").open("wb"),
            start_new_session=True,
        )
        return self.process

    def children_pids(self) -> list[int]:
        if self.process is None:
            return []
        with contextlib.suppress(psutil.NoSuchProcess):
            return [c.pid for c in psutil.Process(self.process.pid).children()]
        return []

    def wait_children(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.children_pids()) >= count:
                return True
            time.sleep(0.2)
        return False

    def terminate(self, timeout: float) -> tuple[int | None, float]:
        """SIGTERM to the parent only (as supervisord does); returns (exit code, seconds to full stop)."""
        if self.process is None:
            return None, 0.0
        started = time.monotonic()
        tree = [self.process.pid, *self.children_pids()]
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        code: int | None
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        while time.monotonic() - started < timeout and any(psutil.pid_exists(p) and _alive(p) for p in tree):
            time.sleep(0.02)
        elapsed = time.monotonic() - started
        stop_process_group(self.process, 5.0)
        return code, elapsed

    def log_events(self) -> Iterator[dict[str, Any]]:
        if not self.log_path.exists():
            return
        with self.log_path.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                with contextlib.suppress(json.JSONDecodeError):
                    yield json.loads(line)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def split_tenants(servers: Sequence[SimServer], tenants: int, prefix: str = "t") -> dict[str, list[SimServer]]:
    groups: dict[str, list[SimServer]] = {f"{prefix}{index + 1:03d}": [] for index in range(tenants)}
    slugs = list(groups)
    for index, server in enumerate(servers):
        groups[slugs[index % tenants]].append(server)
    return groups


# --- PostgreSQL ----------------------------------------------------------------------------------------
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def pg_url(database: str) -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"


def pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", connect_timeout=3):
            return True
    except Exception:
        return False


def pg_drop(databases: Sequence[str]) -> None:
    import psycopg

    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as conn:
        for name in databases:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def tear_down(sampler: TreeSampler | None, deployment: Deployment, fleet: SimFleet) -> None:
    """After a run, whatever happened: stop sampling, stop the supervisor (SIGTERM, then the group), the fleet."""
    if sampler is not None:
        sampler.stop()
    deployment.terminate(10.0)
    fleet.stop()
