"""The fleet file: which simulated servers to run, their load profiles and faults.

A JSON object::

    {
      "host": "127.0.0.1",                 # default listen address of every server
      "cert_dir": "certs",                 # where TLS servers' certificate/key are written
                                           # (default: beside the fleet file); relative to the file
      "defaults": { ...server fields... }, # merged into every server (profile/faults key by key)
      "servers": [
        {
          "name": "sql-01",                # required, unique
          "port": 15001,                   # required, unique per host
          "host": "127.0.0.2",             # optional, overrides the top-level host
          "user": "collector", "password": "secret",   # the only login accepted
          "version": "16.0.4135.4",        # ProductVersion; major.minor.build go into LOGINACK
          "edition": "Enterprise Edition (64-bit)",
          "engine_edition": 3,             # optional; derived from edition (Azure 5, Express 4, ...)
          "host_platform": "Windows",      # or "Linux" (then system_idle_percent is always 0)
          "grants": ["VIEW SERVER STATE"], # the login's permissions (default: its flavour's; flavours.py)
          "elastic_pool": false,           # Azure SQL Database in an elastic pool (flavours.py)
          "databases": ["master", "sales"],# the databases a login may go to (default: any name)
          "entra": {"key": "…"},           # accept Entra ID access tokens signed with key (entra.py)
          "timezone_offset_minutes": 0,    # server local time = UTC + offset (sqlserver_start_time)
          "procedure_installed": true,     # collector.usp_collect_snapshot exists
          "tls": false,                    # TDS 7.x encryption with a generated certificate
          "profile": {
            "batch_requests_per_sec": 500, # the counter grows exactly at this rate
            "cpu_percent": [5, 40],        # SQL Server process CPU wanders in [lo, hi]
            "system_idle_percent": [40, 90],
            "cpu_count": 8,
            "memory_total_mb": 16384,
            "memory_used_percent": [60, 90],
            "sql_memory_mb": 8192,         # Total Server Memory
            "sql_target_memory_mb": 8192,  # Target Server Memory
            "user_connections": [10, 50],
            "uptime_seconds": 86400,       # simulated uptime when the simulator starts
            "cpu_record_on_start": true    # false: no ring-buffer record in the first minute
          },
          "faults": {
            "down": false, "blackhole": false, "slow_login_ms": 0, "slow_query_ms": 0,
            "login_failed": false, "permission_denied": false, "disconnect_mid_result": false,
            "restart": 0,                  # generation; true counts as 1; a change restarts
            "stall": null,                 # or a phase in which the server stops answering (below)
            "ignore_attention": false,     # true: ATTENTION (cancel) is never acknowledged
            "clock_offset_s": 0            # the server's clock ahead (behind if < 0); a change steps it
          }
        }
      ]
    }

``stall`` makes the server stop answering for good in one phase of a connection, like a hung SQL
Server or a broken middlebox:

- ``"connect"``: TCP connect() never completes (a listener whose accept queue is full and never
  drained: Linux drops the SYNs, the client stays in SYN_SENT until its own timeout).
- ``"prelogin"``: the connection is accepted and the first message (PRELOGIN) read, never answered
  (a TDS 8.0 strict client gets its TLS handshake done first, then its PRELOGIN is not answered).
- ``"tls"``: PRELOGIN is answered with encryption on, then the TLS handshake is never answered (nor is
  a TDS 8.0 strict client's ClientHello). Only for ``"tls": true`` servers (else a FleetError).
- ``"login"``: LOGIN7 is read, never answered.
- ``"query"``: login and every other request work; the collection procedure / batch (the requests
  ``slow_query_ms`` delays) is read and never answered.
- ``"mid_result"``: of the collection's answer, the first result set (up to and including its
  DONEINPROC/DONE) is sent and flushed in packets without EOM, then nothing more (an answer without
  result sets, e.g. with ``permission_denied``: its first half).
- ``"before_done"``: every result set of the collection is sent, not the final DONE/DONEPROC.

In a stall the server answers nothing more on that connection, ATTENTION included (no DONE with the
ATTN bit), and keeps the socket open until the client closes it (or the server goes down, restarts or
is removed). A change of ``stall`` on SIGHUP applies to new connections ("connect", "prelogin", "tls",
"login"; into or out of "connect" only the listener is replaced, open sessions stay) and new
requests (the others); connections already stalled stay stalled. ``down`` wins over
``stall``, ``blackhole`` over every stall but "connect"; ``slow_query_ms`` is waited before a
query-phase stall shows, and a query-phase stall wins over ``disconnect_mid_result``.
``ignore_attention`` without a stall: ATTENTION neither cancels a running request (the slow query's
answer still comes, after its delay) nor is acknowledged, also on an idle connection.

``engine_edition`` (5 Azure SQL Database, 8 Managed Instance, else boxed), ``version`` and ``host_platform``
decide which ``sys.*`` views exist and what reading them needs (``sqlserver_sim/flavours.py``).

Unknown fields are errors. The file is re-read on SIGHUP: only servers whose entry changed are
touched, servers added or removed are started or stopped; an invalid file keeps the old fleet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlserver_sim.entra import EntraSpec, parse_entra
from sqlserver_sim.faults import Faults, parse_faults
from sqlserver_sim.values import FleetError, as_bool, as_int, as_number, as_range, as_strings, reject_unknown
from supervisor.procedures import catalog

DEFAULT_HOST = "127.0.0.1"
DEFAULT_USER = "sa"
DEFAULT_PASSWORD = "Simulat0r!"


@dataclass(frozen=True)
class Profile:
    batch_requests_per_sec: float = 500.0
    cpu_percent: tuple[float, float] = (5.0, 40.0)
    system_idle_percent: tuple[float, float] = (40.0, 90.0)
    cpu_count: int = 8
    memory_total_mb: int = 16384
    memory_used_percent: tuple[float, float] = (60.0, 90.0)
    sql_memory_mb: int = 8192
    sql_target_memory_mb: int = 8192
    user_connections: tuple[int, int] = (10, 50)
    uptime_seconds: float = 86400.0
    cpu_record_on_start: bool = True


@dataclass(frozen=True)
class ServerSpec:
    name: str
    port: int
    host: str = DEFAULT_HOST
    user: str = DEFAULT_USER
    password: str = DEFAULT_PASSWORD
    version: str = "16.0.4135.4"
    edition: str = "Developer Edition (64-bit)"
    engine_edition: int = 0  # 0: derive from edition
    host_platform: str = "Windows"
    timezone_offset_minutes: int = 0
    procedure_installed: bool = True
    tls: bool = False
    grants: tuple[str, ...] | None = None
    elastic_pool: bool = False
    databases: tuple[str, ...] | None = None
    entra: EntraSpec | None = None
    profile: Profile = field(default_factory=Profile)
    faults: Faults = field(default_factory=Faults)

    @cached_property
    def flavour(self) -> str:
        return catalog.flavour_of(self.effective_engine_edition)

    @cached_property
    def major(self) -> int:
        return self.version_tuple[0]

    @property
    def version_tuple(self) -> tuple[int, int, int]:
        major, minor, build = [*(int(p) for p in self.version.split(".")[:3]), 0, 0, 0][:3]
        return major, minor, build

    @property
    def effective_engine_edition(self) -> int:
        if self.engine_edition:
            return self.engine_edition
        edition = self.edition.lower()
        if "azure" in edition:
            return 5
        if "express" in edition:
            return 4
        if "standard" in edition or "web" in edition:
            return 2
        return 3


@dataclass(frozen=True)
class Fleet:
    servers: tuple[ServerSpec, ...]
    cert_dir: Path | None = None


_RANGE_FIELDS = {"cpu_percent", "system_idle_percent", "memory_used_percent", "user_connections"}
_PERCENT_RANGES = {"cpu_percent", "system_idle_percent", "memory_used_percent"}


def load_fleet(path: Path) -> Fleet:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FleetError(f"{path}: cannot read: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise FleetError(f"{path}: not JSON: {exc}") from exc
    fleet = parse_fleet(document)
    cert_dir = document.get("cert_dir")
    base = path.resolve().parent
    return Fleet(fleet.servers, base / cert_dir if isinstance(cert_dir, str) else base)


def parse_fleet(document: Any) -> Fleet:
    if not isinstance(document, dict):
        raise FleetError("fleet: expected a JSON object")
    reject_unknown(document, {"host", "defaults", "servers", "cert_dir"}, "fleet")
    host = document.get("host", DEFAULT_HOST)
    if not isinstance(host, str) or not host:
        raise FleetError("host: expected a non-empty string")
    defaults = document.get("defaults", {})
    if not isinstance(defaults, dict):
        raise FleetError("defaults: expected an object")
    entries = document.get("servers")
    if not isinstance(entries, list):
        raise FleetError("servers: expected a list")
    servers: list[ServerSpec] = []
    names: set[str] = set()
    endpoints: set[tuple[str, int]] = set()
    for index, entry in enumerate(entries):
        where = f"servers[{index}]"
        if not isinstance(entry, dict):
            raise FleetError(f"{where}: expected an object")
        spec = parse_server({"host": host, **_merge(defaults, entry)}, where)
        if spec.name in names:
            raise FleetError(f"{where}.name: duplicate name {spec.name!r}")
        if (spec.host, spec.port) in endpoints:
            raise FleetError(f"{where}.port: {spec.host}:{spec.port} used twice")
        names.add(spec.name)
        endpoints.add((spec.host, spec.port))
        servers.append(spec)
    return Fleet(tuple(servers))


def parse_server(entry: dict[str, Any], where: str) -> ServerSpec:
    known = {f.name for f in fields(ServerSpec)}
    reject_unknown(entry, known, where)
    values: dict[str, Any] = {}
    for f in fields(ServerSpec):
        if f.name not in entry:
            if f.name in ("name", "port"):
                raise FleetError(f"{where}.{f.name}: missing")
            continue
        value = entry[f.name]
        path = f"{where}.{f.name}"
        if f.name == "profile":
            values[f.name] = _parse_profile(value, path)
        elif f.name == "faults":
            values[f.name] = parse_faults(value, path)
        elif f.name in ("port", "engine_edition", "timezone_offset_minutes"):
            values[f.name] = as_int(value, path)
        elif f.name in ("procedure_installed", "tls", "elastic_pool"):
            values[f.name] = as_bool(value, path)
        elif f.name in ("grants", "databases"):
            values[f.name] = as_strings(value, path)
        elif f.name == "entra":
            values[f.name] = parse_entra(value, path)
        else:
            if not isinstance(value, str) or not value:
                raise FleetError(f"{path}: expected a non-empty string")
            values[f.name] = value
    spec = ServerSpec(**values)
    if not 1 <= spec.port <= 65535:
        raise FleetError(f"{where}.port: {spec.port} is not a TCP port")
    if spec.host_platform not in ("Windows", "Linux"):
        raise FleetError(f"{where}.host_platform: expected 'Windows' or 'Linux'")
    if spec.faults.stall == "tls" and not spec.tls:
        raise FleetError(f"{where}.faults.stall: 'tls' needs \"tls\": true on this server")
    try:
        spec.version_tuple  # noqa: B018
    except ValueError as exc:
        raise FleetError(f"{where}.version: expected digits like '16.0.4135.4'") from exc
    return spec


def _parse_profile(value: Any, where: str) -> Profile:
    if not isinstance(value, dict):
        raise FleetError(f"{where}: expected an object")
    reject_unknown(value, {f.name for f in fields(Profile)}, where)
    values: dict[str, Any] = {}
    for name, item in value.items():
        path = f"{where}.{name}"
        if name in _RANGE_FIELDS:
            values[name] = as_range(item, path, percent=name in _PERCENT_RANGES)
        elif name == "cpu_record_on_start":
            values[name] = as_bool(item, path)
        elif name in ("batch_requests_per_sec", "uptime_seconds"):
            values[name] = as_number(item, path)
        else:
            values[name] = as_int(item, path, minimum=1)
    return Profile(**values)


def _merge(defaults: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    merged = dict(defaults)
    for key, value in entry.items():
        if key in ("profile", "faults") and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def generated_fleet(count: int, base_port: int, host: str = DEFAULT_HOST, user: str = DEFAULT_USER,
                    password: str = DEFAULT_PASSWORD) -> Fleet:
    """The fleet of ``--servers N --base-port P``: sim-00001 … on consecutive ports, varied loads."""
    servers = tuple(
        ServerSpec(
            name=f"sim-{index + 1:05d}",
            port=base_port + index,
            host=host,
            user=user,
            password=password,
            host_platform="Linux" if index % 10 == 9 else "Windows",
            profile=Profile(batch_requests_per_sec=float(100 + (index * 37) % 2000)),
        )
        for index in range(count)
    )
    return Fleet(servers)
