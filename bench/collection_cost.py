"""Per-collection cost of the collector vs the floor, against the same simulated servers, in one run.

    python -m bench.collection_cost [--servers 10] [--rounds 30] [--drivers msodbc18,freetds]
                                    [--modes reuse,noreuse] [--json FILE]

*floor*: a bare pyodbc loop: ``{CALL collector.usp_collect_snapshot}`` and every result set fetched,
on an open connection (reuse) or on a fresh connection per collection (noreuse).
*ours*: the collector's own path: ``ServerSession.collect`` (connect, query timeout, the call,
``read_result_sets``, ``parse_sample``), then ``TenantRuntime._record`` (deltas, status, snapshot
row, logging) and the real ``Writer`` thread storing into a real SQLite tenant DB.

Floor and ours alternate server by server, round by round, so machine noise hits both alike.
CPU is this process's CPU time (``time.process_time``: all threads, the writer included); the
simulator's CPU is measured separately with psutil.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyodbc

from bench.common import (
    SIM_PASSWORD,
    SIM_USER,
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
    cpu_total_s: float = 0.0  # includes work after the loop (writer flush)
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


def floor_connection_string(driver: str, server: SimServer) -> str:
    name = driver_name(driver)
    if driver == "freetds":
        return (f"DRIVER={{{name}}};SERVER={server.host};PORT={server.port};TDS_Version=7.4;"
                f"UID={SIM_USER};PWD={SIM_PASSWORD};APP=bench-floor")
    return (f"DRIVER={{{name}}};SERVER={server.host},{server.port};Encrypt=no;"
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


def _recording_writer() -> type:
    from supervisor.children.writer import Writer

    class Recording(Writer):
        """The real writer; keeps the last items it was given for the storage-by-batch figures."""

        recorded: list[Any]

        def put(self, item: Any) -> None:
            recorded = self.__dict__.setdefault("recorded", [])
            recorded.append(item)
            del recorded[:-400]
            super().put(item)

    return Recording


class Ours:
    """The collector's per-server path for one tenant DB: sessions, runtime bookkeeping, writer."""

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
        self.runtime: Any = None

    def start(self) -> None:
        from supervisor.children import writer as writer_module
        from supervisor.children.runtime import TenantRuntime
        from supervisor.children.spool import Spool
        from supervisor.ipc import ChildSpec
        from supervisor.storage.engine import make_engine

        # One collection per transaction, the writer's worst case (a trickle of collections): the storage
        # cost by batch size is measured separately (storage_by_batch); the fleet run shows real batching.
        writer_module.BATCH_WINDOW = 0.0
        RecordingWriter = _recording_writer()
        spec = ChildSpec(tenant_id=1, slug="bench", db_url=self.db_url, instance_id="bench", settings=self.settings)
        runtime = TenantRuntime(spec, threading.Event(), lambda _beat: None, lambda: True)
        runtime.engine = make_engine(self.db_url, pooled=True)
        runtime.writer = RecordingWriter(runtime.engine, Spool(self.settings.spool_dir, "bench"), "bench")
        runtime.writer.start()
        self.runtime = runtime

    def session(self, driver: str, server: SimServer, reuse: bool) -> Any:
        from supervisor.children.collect import ServerSession
        from supervisor.children.connection_string import Endpoint
        from supervisor.children.odbc_driver import OdbcDriver, kind_of
        from supervisor.children.targets import Target

        name = driver_name(driver)
        endpoint = Endpoint(server.host, server.port, SIM_USER, SIM_PASSWORD, "no", False)
        target = Target(self.server_ids[server.name], server.name, endpoint, 30.0, "procedure")
        return ServerSession(target, OdbcDriver(name, kind_of(name)), self.settings.login_timeout, reuse)

    def collect(self, session: Any) -> bool:
        outcome = session.collect(time.monotonic() + self.settings.collection_timeout)
        self.runtime._record(outcome)  # deltas, status, snapshot row, logging, writer.put
        return outcome.failure is None

    def flush(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.runtime.writer.pending() and time.monotonic() < deadline:
            time.sleep(0.002)

    def stop(self) -> None:
        if self.runtime is not None:
            self.runtime.writer.stop(10.0)
            self.runtime.engine.dispose()

    def stored(self) -> int:
        import sqlite3

        with sqlite3.connect(self.directory / "bench.db") as db:
            return int(db.execute("SELECT count(*) FROM metric_snapshots").fetchone()[0])


def timed(series: Series, action: Callable[[], bool], after: Callable[[], None] | None = None,
          path_only: list[float] | None = None) -> None:
    """Wall = ``action``; CPU = ``action`` + ``after`` (the writer's share, which runs in its thread)."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    ok = action()
    wall1, cpu1 = time.perf_counter(), time.process_time()
    if after is not None:
        after()
    cpu2 = time.process_time()
    series.cpu_ms.append(1000 * (cpu2 - cpu0))
    series.wall_ms.append(1000 * (wall1 - wall0))
    series.cpu_total_s += cpu2 - cpu0
    if path_only is not None:
        path_only.append(1000 * (cpu1 - cpu0))
    if not ok:
        series.failures += 1


def measure(driver: str, reuse: bool, servers: list[SimServer], ours: Ours, sim_pids: list[int],
            rounds: int) -> tuple[Series, Series]:
    floors = [Floor(floor_connection_string(driver, s), reuse) for s in servers]
    sessions = [ours.session(driver, s, reuse) for s in servers]
    floor, mine = Series(), Series()
    try:
        # Warm-up (pyodbc's per-connection-string type-info probe, first logins): not counted.
        for f, s in zip(floors, sessions, strict=True):
            f.collect()
            ours.collect(s)
        ours.flush()
        for round_index in range(rounds):
            # Blocks of one round over every server, floor and ours alternating which goes first.
            order = ("floor", "ours") if round_index % 2 == 0 else ("ours", "floor")
            for who in order:
                sim0 = cpu_of(sim_pids)
                if who == "floor":
                    for f in floors:
                        timed(floor, f.collect)
                    floor.sim_cpu_s += cpu_of(sim_pids) - sim0
                else:
                    for s in sessions:
                        timed(mine, lambda s=s: ours.collect(s), ours.flush, mine.path_cpu_ms)
                    mine.sim_cpu_s += cpu_of(sim_pids) - sim0
    finally:
        for f in floors:
            f.close()
        for s in sessions:
            s.close()
    return floor, mine


def storage_by_batch(directory: Path, items: list[Any], batch_sizes: tuple[int, ...]) -> dict[int, float]:
    """CPU ms per stored collection when the writer commits ``batch`` collections per transaction."""
    import dataclasses
    import datetime as dt

    from supervisor.children.persist import write_items
    from supervisor.servers import ServerSpec, add_server
    from supervisor.storage.engine import make_engine
    from supervisor.storage.migrations import upgrade_tenant

    results: dict[int, float] = {}
    snapshots = [item for item in items if item.snapshot is not None]
    if not snapshots:
        return results
    for batch in batch_sizes:
        engine = make_engine(f"sqlite:///{directory}/storage-{batch}.db", pooled=True)
        upgrade_tenant(engine)
        for index in range(max(item.server_id for item in snapshots)):  # ids 1..N as in the run's DB
            add_server(engine, ServerSpec(name=f"s{index + 1}", host="h"), None)
        total = 0
        cpu = 0.0
        for start in range(0, 20 * batch, batch):
            chunk = []
            for offset in range(batch):
                item = snapshots[(start + offset) % len(snapshots)]
                shift = dt.timedelta(seconds=start + offset + 1)
                snapshot = dataclasses.replace(item.snapshot, collected_at=item.snapshot.collected_at + shift)
                status = dataclasses.replace(item.status, checked_at=item.status.checked_at + shift)
                chunk.append(dataclasses.replace(item, snapshot=snapshot, status=status))
            cpu0 = time.process_time()
            with engine.begin() as conn:
                total += write_items(conn, chunk)
            cpu += time.process_time() - cpu0
        engine.dispose()
        results[batch] = 1000 * cpu / max(1, total)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.collection_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--drivers", default=",".join(ALL_DRIVERS))
    parser.add_argument("--modes", default=",".join(ALL_MODES))
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
        servers = make_servers(args.servers, run_octet(), prefix="cost")
        fleet = SimFleet(directory / "sim", servers)
        fleet.start()
        ours = Ours(directory, servers)
        ours.start()
        try:
            for driver in drivers:
                for mode in modes:
                    floor, mine = measure(driver, mode == "reuse", servers, ours, fleet.pids(), args.rounds)
                    ours.flush()
                    results[f"{driver}/{mode}"] = {"floor": floor.summary(), "ours": mine.summary()}
            ours.flush()
            results["stored_snapshots"] = ours.stored()
            recorded = getattr(ours.runtime.writer, "recorded", [])
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
          "(floor and ours interleaved; CPU = client process CPU; sim = simulator CPU, separately)")
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
        print("storage path alone (persist.write_items into SQLite), CPU ms per collection by collections per "
              "transaction: " + ", ".join(f"{batch}: {fmt(ms)}" for batch, ms in by_batch.items()))
    for key, value in results.items():
        if isinstance(value, dict) and "ours" in value:
            print(f"{key:<18} ours CPU median without storage (collect + record): "
                  f"{fmt(value['ours']['path_cpu_ms_median'])} ms vs floor {fmt(value['floor']['cpu_ms_median'])} ms")


if __name__ == "__main__":
    raise SystemExit(main())
