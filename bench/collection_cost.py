"""Per-collection cost of the collector vs the floor, against the same simulated servers, in one run.

    python -m bench.collection_cost [--servers 10] [--rounds 30] [--drivers msodbc18,freetds]
                                    [--modes reuse,noreuse] [--tls] [--json FILE]

*floor*: a bare pyodbc loop: ``{CALL collector.usp_collect_snapshot}`` and every result set fetched,
on an open connection (reuse) or on a fresh connection per collection (noreuse).
*ours*: the collector's own path: ``ServerSession.collect`` (connect, query timeout, the call,
``read_result_sets``, ``parse_sample``), then ``TenantRuntime._record`` (deltas, status, snapshot
row, logging), then storage: each round's results go into a real SQLite tenant DB in one transaction
with ``persist.write_items``, the call the child's writer makes for a batch. A round is one batch, so
``--servers`` is the batch size (a 200-server tenant at 30 s gives the writer batches of about 13).
Each collection is charged its share of its batch's storage CPU.

Floor and ours alternate round by round, so machine noise hits both alike. CPU is this process's
CPU time (``time.process_time``); the simulator's CPU is measured separately with psutil. Last, the
storage path alone is timed by batch size, next to a bare ``sqlite3`` loop writing the same rows
(the floor of storage: what SQLite itself costs, without SQLAlchemy).

With both modes, a login's cost is derived for floor and ours: the mean CPU of a collection on a fresh
connection (login, the collection, the close) less the mean on a kept one. ``--tls`` measures every
driver/mode again against servers that speak TLS, both sides with encryption on (``Encrypt=yes`` and a
trusted certificate: the production default ``encrypt = yes``), and prints what encryption adds per
collection on a kept connection and per login.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyodbc

from bench.common import (
    PLAIN,
    SIM_PASSWORD,
    SIM_USER,
    TLS,
    Encryption,
    SimFleet,
    SimServer,
    cpu_of,
    fmt,
    make_servers,
    median,
    percentile,
    raise_fd_limit,
    run_octet,
)

ALL_DRIVERS = ("msodbc18", "freetds")
ALL_MODES = ("reuse", "noreuse")
CALL = "{CALL collector.usp_collect_snapshot}"


@dataclass
class Series:
    cpu_ms: list[float] = field(default_factory=list)
    wall_ms: list[float] = field(default_factory=list)
    cpu_total_s: float = 0.0
    sim_cpu_s: float = 0.0
    failures: int = 0
    path_cpu_ms: list[float] = field(default_factory=list)  # ours: collect + record, without storage

    def summary(self) -> dict[str, float]:
        n = max(1, len(self.wall_ms))
        return {
            "collections": len(self.wall_ms),
            "failures": self.failures,
            "cpu_ms_median": median(self.cpu_ms),
            "cpu_ms_p95": percentile(self.cpu_ms, 95),
            "cpu_ms_mean": 1000 * self.cpu_total_s / n,
            "wall_ms_median": median(self.wall_ms),
            "wall_ms_p95": percentile(self.wall_ms, 95),
            "sim_cpu_ms_mean": 1000 * self.sim_cpu_s / n,
            "path_cpu_ms_median": median(self.path_cpu_ms),
        }


def driver_name(driver: str) -> str:
    if driver == "freetds":
        return "FreeTDS"
    from supervisor.children.odbc_driver import bundled_library

    library = bundled_library()
    if library is None:
        raise SystemExit("mssql-python-odbc is not installed: pip install mssql-python-odbc")
    return library


def floor_connection_string(driver: str, server: SimServer, encryption: Encryption = PLAIN) -> str:
    name = driver_name(driver)
    if driver == "freetds":
        # FreeTDS checks a certificate only with a CA file in freetds.conf: "require" encrypts and trusts.
        encrypted = "Encryption=require;" if encryption.on else ""
        return (f"DRIVER={{{name}}};SERVER={server.host};PORT={server.port};TDS_Version=7.4;{encrypted}"
                f"UID={SIM_USER};PWD={SIM_PASSWORD};APP=bench-floor")
    trust = "TrustServerCertificate=yes;" if encryption.trust_server_certificate else ""
    return (f"DRIVER={{{name}}};SERVER={server.host},{server.port};Encrypt={encryption.encrypt};{trust}"
            f"UID={SIM_USER};PWD={SIM_PASSWORD};APP=bench-floor")


def fetch_all_sets(cursor: Any) -> int:
    rows = 0
    while True:
        if cursor.description is not None:
            rows += len(cursor.fetchall())
        if not cursor.nextset():
            return rows


class Floor:
    """The bare loop for one server."""

    def __init__(self, connection_string: str, reuse: bool) -> None:
        self.connection_string = connection_string
        self.reuse = reuse
        self.conn: Any = None

    def collect(self) -> bool:
        try:
            if self.conn is None:
                self.conn = pyodbc.connect(self.connection_string, timeout=3, autocommit=True)
            cursor = self.conn.cursor()
            cursor.execute(CALL)
            fetch_all_sets(cursor)
            cursor.close()
            if not self.reuse:
                self.close()
            return True
        except pyodbc.Error:
            self.close()
            return False

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(pyodbc.Error):
                self.conn.close()
            self.conn = None


class HeldItems:
    """Stands in for the child's writer thread: keeps each round's items for one ``write_items`` batch."""

    def __init__(self) -> None:
        self.held: list[Any] = []
        self.recorded: list[Any] = []  # the last items, for the storage-by-batch figures

    def put(self, item: Any) -> None:
        self.held.append(item)
        self.recorded.append(item)
        del self.recorded[:-400]

    def take(self) -> list[Any]:
        items, self.held = self.held, []
        return items


class Ours:
    """The collector's per-server path for one tenant DB: sessions, runtime bookkeeping, storage in batches."""

    def __init__(self, directory: Path, servers: list[SimServer]) -> None:
        from supervisor.config import Settings
        from supervisor.servers import ServerSpec, add_server
        from supervisor.storage.engine import make_engine
        from supervisor.storage.migrations import upgrade_tenant

        self.directory = directory
        self.settings = Settings(
            tenant_db_url=f"sqlite:///{directory}/{{slug}}.db", encrypt="no", spool_dir=str(directory / "spool"),
            collection_timeout=5, login_timeout=3, retention_days=0,
        )
        self.db_url = f"sqlite:///{directory}/bench.db"
        engine = make_engine(self.db_url, pooled=False)
        upgrade_tenant(engine)
        self.server_ids: dict[str, int] = {}
        for server in servers:
            spec = ServerSpec(name=server.name, host=server.host, port=server.port, username=SIM_USER,
                              password=SIM_PASSWORD, encrypt="no")
            self.server_ids[server.name] = add_server(engine, spec, None).id
        engine.dispose()
        self.engine: Any = None
        self.held: Any = None
        self.recorder: Any = None

    def start(self) -> None:
        from supervisor.children.recorder import OutcomeRecorder
        from supervisor.children.stats import TenantStats
        from supervisor.storage.engine import make_engine

        self.engine = make_engine(self.db_url, pooled=True)
        self.held = HeldItems()
        self.recorder = OutcomeRecorder("bench", self.settings.max_sample_gap, TenantStats(), self.held.put,
                                        collection_timeout=self.settings.collection_timeout)  # fmt: skip

    def session(self, driver: str, server: SimServer, reuse: bool, encryption: Encryption = PLAIN) -> Any:
        from supervisor.children.collect import ServerSession
        from supervisor.children.connection_string import Endpoint
        from supervisor.children.odbc_driver import OdbcDriver, kind_of
        from supervisor.children.targets import Target

        name = driver_name(driver)
        endpoint = Endpoint(server.host, server.port, SIM_USER, SIM_PASSWORD, encryption.encrypt,
                            encryption.trust_server_certificate)
        target = Target(self.server_ids[server.name], server.name, endpoint, 30.0, "procedure")
        return ServerSession(target, OdbcDriver(name, kind_of(name)), self.settings.login_timeout, reuse)

    def collect(self, session: Any) -> bool:
        outcome = session.collect(time.monotonic() + self.settings.collection_timeout)
        self.recorder.record(outcome)  # deltas, status, snapshot row, logging, writer.put
        return outcome.failure is None

    def store_round(self) -> int:
        """The round's results in one transaction, as the writer stores a batch; returns how many."""
        from supervisor.children.persist import write_items

        items = self.held.take()
        if items:
            with self.engine.begin() as conn:
                write_items(conn, items)
        return len(items)

    def stop(self) -> None:
        if self.engine is not None:
            self.engine.dispose()

    def stored(self) -> int:
        import sqlite3

        with sqlite3.connect(self.directory / "bench.db") as db:
            return int(db.execute("SELECT count(*) FROM metric_snapshots").fetchone()[0])


def timed(series: Series, action: Callable[[], bool]) -> float:
    """Records wall and CPU of ``action``; returns its CPU seconds."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    ok = action()
    wall1, cpu1 = time.perf_counter(), time.process_time()
    series.wall_ms.append(1000 * (wall1 - wall0))
    if not ok:
        series.failures += 1
    return cpu1 - cpu0


def measure(driver: str, reuse: bool, servers: list[SimServer], ours: Ours, sim_pids: list[int],
            rounds: int, encryption: Encryption = PLAIN) -> tuple[Series, Series]:
    floors = [Floor(floor_connection_string(driver, s, encryption), reuse) for s in servers]
    sessions = [ours.session(driver, s, reuse, encryption) for s in servers]
    floor, mine = Series(), Series()
    try:
        # Warm-up (pyodbc's per-connection-string type-info probe, first logins): not counted.
        for f, s in zip(floors, sessions, strict=True):
            f.collect()
            ours.collect(s)
        ours.store_round()
        for round_index in range(rounds):
            # One round over every server, floor and ours alternating which goes first.
            order = ("floor", "ours") if round_index % 2 == 0 else ("ours", "floor")
            for who in order:
                sim0 = cpu_of(sim_pids)
                if who == "floor":
                    for f in floors:
                        cpu = timed(floor, f.collect)
                        floor.cpu_ms.append(1000 * cpu)
                        floor.cpu_total_s += cpu
                    floor.sim_cpu_s += cpu_of(sim_pids) - sim0
                    continue
                paths = [timed(mine, lambda s=s: ours.collect(s)) for s in sessions]
                cpu0 = time.process_time()
                stored = ours.store_round()
                share = (time.process_time() - cpu0) / max(1, stored)
                mine.sim_cpu_s += cpu_of(sim_pids) - sim0
                for path in paths:
                    mine.path_cpu_ms.append(1000 * path)
                    mine.cpu_ms.append(1000 * (path + share))
                    mine.cpu_total_s += path + share
    finally:
        for f in floors:
            f.close()
        for s in sessions:
            s.close()
    return floor, mine


def pair_key(driver: str, mode: str, encryption: Encryption = PLAIN) -> str:
    return f"{driver}/{mode}" + ("/tls" if encryption.on else "")


def login_and_tls(results: dict[str, Any], drivers: list[str]) -> dict[str, dict[str, Any]]:
    """Per driver, from the measured pairs (``pair_key``): CPU ms per collection on a kept connection and per
    login, for floor and ours, without and with encryption, and what encryption adds to each. A login's cost
    is a collection on a fresh connection (login, collection, close) less one on a kept one; medians, as a
    one-off (a GC pass, the first write of a DB) moves a mean of a few dozen collections."""
    derived: dict[str, dict[str, Any]] = {}
    for driver in drivers:
        per: dict[str, Any] = {}
        for name, encryption in (("plain", PLAIN), ("tls", TLS)):
            kept, fresh = (results.get(pair_key(driver, mode, encryption)) for mode in ALL_MODES)
            if kept is None:
                continue
            figures: dict[str, dict[str, float]] = {"collection": {}, "login": {}}
            for who in ("floor", "ours"):
                figures["collection"][who] = kept[who]["cpu_ms_median"]
                if fresh is not None:
                    figures["login"][who] = fresh[who]["cpu_ms_median"] - kept[who]["cpu_ms_median"]
            per[name] = figures
        if "plain" in per and "tls" in per:
            per["tls_adds"] = {
                what: {who: per["tls"][what][who] - per["plain"][what][who] for who in per["tls"][what]
                       if who in per["plain"][what]}
                for what in ("collection", "login")
            }
        if per:
            derived[driver] = per
    return derived


def print_login_and_tls(derived: dict[str, dict[str, Any]], indent: str = "") -> None:
    for driver, per in derived.items():
        for name in ("plain", "tls", "tls_adds"):
            figures = per.get(name)
            if not figures:
                continue
            label = {"plain": "without TLS", "tls": "with TLS", "tls_adds": "TLS adds"}[name]
            parts = [f"{what} {' / '.join(fmt(figures[what].get(who, float('nan'))) for who in ('floor', 'ours'))}"
                     for what in ("collection", "login") if figures[what]]
            print(f"{indent}{driver:<9} {label:<12} CPU ms per {', per '.join(parts)} (floor / ours)")


def storage_by_batch(directory: Path, items: list[Any], batch_sizes: tuple[int, ...]) -> dict[int, dict[str, float]]:
    """CPU ms per stored collection when ``batch`` collections share a transaction: ``write_items`` through
    SQLAlchemy (ours) and a bare ``sqlite3`` loop writing the same rows (the floor)."""
    import dataclasses
    import datetime as dt

    results: dict[int, dict[str, float]] = {}
    snapshots = [item for item in items if item.snapshot is not None]
    if not snapshots:
        return results
    servers = max(item.server_id for item in snapshots)  # ids 1..N as in the run's DB
    for batch in batch_sizes:
        chunks = []
        for start in range(0, 20 * batch, batch):
            chunk = []
            for offset in range(batch):
                item = snapshots[(start + offset) % len(snapshots)]
                shift = dt.timedelta(seconds=start + offset + 1)
                snapshot = dataclasses.replace(item.snapshot, collected_at=item.snapshot.collected_at + shift)
                status = dataclasses.replace(item.status, checked_at=item.status.checked_at + shift)
                chunk.append(dataclasses.replace(item, snapshot=snapshot, status=status))
            chunks.append(chunk)
        total = 20 * batch
        ours = _store_with_persist(directory / f"ours-{batch}.db", servers, chunks)
        bare = _store_with_sqlite3(directory / f"bare-{batch}.db", servers, chunks)
        results[batch] = {"ours": 1000 * ours / total, "sqlite3": 1000 * bare / total}
    return results


def _tenant_db(path: Path, servers: int) -> Any:
    from supervisor.servers import ServerSpec, add_server
    from supervisor.storage.engine import make_engine
    from supervisor.storage.migrations import upgrade_tenant

    engine = make_engine(f"sqlite:///{path}", pooled=True)
    upgrade_tenant(engine)
    for index in range(servers):
        add_server(engine, ServerSpec(name=f"s{index + 1}", host="h"), None)
    return engine


def _store_with_persist(path: Path, servers: int, chunks: list[list[Any]]) -> float:
    from supervisor.children.persist import write_items

    engine = _tenant_db(path, servers)
    cpu = 0.0
    for chunk in chunks:
        cpu0 = time.process_time()
        with engine.begin() as conn:
            write_items(conn, chunk)
        cpu += time.process_time() - cpu0
    engine.dispose()
    return cpu


def _store_with_sqlite3(path: Path, servers: int, chunks: list[list[Any]]) -> float:
    """The same rows with the standard library only: no statement building, no type processing."""
    import sqlite3

    _tenant_db(path, servers).dispose()
    db = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "foreign_keys=ON", "synchronous=NORMAL"):
        db.execute(f"PRAGMA {pragma}")
    snapshot_sql = ("INSERT INTO metric_snapshots (server_id, collected_at, cpu_percent, system_cpu_percent, "
                    "memory_percent, sql_memory_mb, sql_target_memory_mb, connection_count, batch_requests_per_sec, "
                    "interval_seconds, duration_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?)")
    wait_sql = ("INSERT INTO wait_stats (snapshot_id, wait_type, waiting_tasks_count, wait_time_ms, "
                "signal_wait_time_ms) VALUES (?,?,?,?,?)")
    status_sql = ("UPDATE servers SET status=?, last_checked_at=?, consecutive_failures=?, last_error=?, "
                  "last_error_class=?, last_success_at=coalesce(?, last_success_at) WHERE id=?")
    baseline_sql = ("INSERT INTO counter_baselines (server_id, sqlserver_start_time, sample_time, "
                    "batch_requests_total, waits_json) VALUES (?,?,?,?,?) ON CONFLICT (server_id) DO UPDATE SET "
                    "sample_time=excluded.sample_time, batch_requests_total=excluded.batch_requests_total, "
                    "waits_json=excluded.waits_json")
    cpu = 0.0
    for chunk in chunks:
        cpu0 = time.process_time()
        db.execute("BEGIN")
        waits = []
        for item in chunk:
            row = item.snapshot
            snapshot_id = db.execute(snapshot_sql, (
                row.server_id, str(row.collected_at), row.cpu_percent, row.system_cpu_percent, row.memory_percent,
                row.sql_memory_mb, row.sql_target_memory_mb, row.connection_count, row.batch_requests_per_sec,
                row.interval_seconds, row.duration_ms)).lastrowid
            waits += [(snapshot_id, name, w.waiting_tasks_count, w.wait_time_ms, w.signal_wait_time_ms)
                      for name, w in row.waits.items()]
        db.executemany(wait_sql, waits)
        db.executemany(status_sql, [
            (i.status.status, str(i.status.checked_at), i.status.consecutive_failures, i.status.error,
             i.status.error_class, str(i.status.checked_at) if i.status.success else None, i.server_id)
            for i in chunk])
        db.executemany(baseline_sql, [
            (i.server_id, str(i.baseline.sqlserver_start_time), str(i.baseline.sample_time),
             i.baseline.batch_requests_total, i.baseline.waits_json()) for i in chunk if i.baseline is not None])
        db.execute("COMMIT")
        cpu += time.process_time() - cpu0
    db.close()
    return cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.collection_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--drivers", default=",".join(ALL_DRIVERS))
    parser.add_argument("--modes", default=",".join(ALL_MODES))
    parser.add_argument("--tls", action="store_true",
                        help="also measure each driver/mode with encryption on, against servers that speak TLS")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    drivers = [d for d in args.drivers.split(",") if d]
    modes = [m for m in args.modes.split(",") if m]
    if any(d not in ALL_DRIVERS for d in drivers) or any(m not in ALL_MODES for m in modes):
        parser.error(f"drivers from {ALL_DRIVERS}, modes from {ALL_MODES}")
    raise_fd_limit()
    logging.getLogger().addHandler(logging.NullHandler())
    logging.getLogger().setLevel(logging.INFO)  # as a child runs by default: per-collection DEBUG is off

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-cost-") as tmp:
        directory = Path(tmp)
        octet = run_octet()
        sets = [(PLAIN, make_servers(args.servers, octet, prefix="cost"))]
        if args.tls:  # as many again, speaking TLS
            sets.append((TLS, make_servers(args.servers, octet, prefix="cost-tls", tls=True, first=args.servers)))
        fleet = SimFleet(directory / "sim", [server for _, group in sets for server in group])
        fleet.start()
        ours = Ours(directory, [server for _, group in sets for server in group])
        ours.start()
        try:
            for driver in drivers:
                for encryption, servers in sets:
                    for mode in modes:
                        floor, mine = measure(driver, mode == "reuse", servers, ours, fleet.pids(), args.rounds,
                                              encryption)
                        results[pair_key(driver, mode, encryption)] = {"floor": floor.summary(),
                                                                       "ours": mine.summary()}
            results["login_and_tls"] = login_and_tls(results, drivers)
            results["stored_snapshots"] = ours.stored()
            recorded = getattr(ours.held, "recorded", [])
            results["storage_cpu_ms_per_collection_by_batch"] = storage_by_batch(directory, recorded, (1, 10, 50, 200))
        finally:
            ours.stop()
            fleet.stop()
    report(results, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"per-collection cost, {args.servers} simulated servers x {args.rounds} rounds each "
          "(floor and ours interleaved; CPU = client process CPU, ours with its share of a "
          f"{args.servers}-collection storage batch; sim = simulator CPU, separately)")
    header = (f"{'driver/mode':<18} {'who':<6} {'n':>5} {'fail':>4} {'cpu med':>8} {'cpu p95':>8} "
              f"{'cpu mean':>9} {'wall med':>9} {'wall p95':>9} {'sim cpu':>8}")
    print(header)
    for key, value in results.items():
        if not (isinstance(value, dict) and "floor" in value):
            continue
        for who in ("floor", "ours"):
            s = value[who]
            print(f"{key:<18} {who:<6} {s['collections']:>5} {s['failures']:>4} {fmt(s['cpu_ms_median']):>8} "
                  f"{fmt(s['cpu_ms_p95']):>8} {fmt(s['cpu_ms_mean']):>9} {fmt(s['wall_ms_median']):>9} "
                  f"{fmt(s['wall_ms_p95']):>9} {fmt(s['sim_cpu_ms_mean']):>8}")
        f, o = value["floor"], value["ours"]
        cpu_ratio = o["cpu_ms_mean"] / f["cpu_ms_mean"] if f["cpu_ms_mean"] else float("nan")
        cpu_med_ratio = o["cpu_ms_median"] / f["cpu_ms_median"] if f["cpu_ms_median"] else float("nan")
        wall_ratio = o["wall_ms_median"] / f["wall_ms_median"] if f["wall_ms_median"] else float("nan")
        value["ratio"] = {"cpu_mean": cpu_ratio, "cpu_median": cpu_med_ratio, "wall_median": wall_ratio}
        print(f"{key:<18} ratio  ours/floor: CPU mean {fmt(cpu_ratio)}x (target <= 1.5), "
              f"CPU median {fmt(cpu_med_ratio)}x, wall median {fmt(wall_ratio)}x (target <= 2)")
    print(f"snapshots stored by ours: {results.get('stored_snapshots')}")
    by_batch = results.get("storage_cpu_ms_per_collection_by_batch") or {}
    if by_batch:
        print("storage alone, CPU ms per collection by collections per transaction (persist.write_items through "
              "SQLAlchemy / bare sqlite3, same rows): "
              + ", ".join(f"{batch}: {fmt(ms['ours'])} / {fmt(ms['sqlite3'])}" for batch, ms in by_batch.items()))
    for key, value in results.items():
        if isinstance(value, dict) and "ours" in value:
            print(f"{key:<18} ours CPU median without storage (collect + record): "
                  f"{fmt(value['ours']['path_cpu_ms_median'])} ms vs floor {fmt(value['floor']['cpu_ms_median'])} ms")
    if any(per.get(name, {}).get("login") for per in results.get("login_and_tls", {}).values()
           for name in ("plain", "tls")) or args.tls:
        print("CPU per collection on a kept connection, and per login (fresh-connection median less kept-connection "
              "median):")
        print_login_and_tls(results.get("login_and_tls", {}), indent="  ")


if __name__ == "__main__":
    raise SystemExit(main())
