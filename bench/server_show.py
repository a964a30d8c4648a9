"""How long ``server show --since 30d`` takes on a tenant DB holding a year of 30-s snapshots of one server.

    python -m bench.server_show [--days 365] [--interval 30] [--since 30d] [--runs 5] [--dir DIR] [--rebuild]

Builds (once; reused while its newest snapshot is less than a day old) a deployment in DIR: a system DB, tenant
``bench`` with server ``sql01``, and ``--days`` of snapshots every ``--interval`` seconds ending now, with
``--waits`` wait rows each and a few outages as status events (written with bare ``sqlite3``: the build is not
what is measured). Then runs the real command line ``collector-supervisor server show bench sql01 --since 30d``
``--runs`` times (also with ``--json`` and ``--png``), and prints the median wall time of each, process start
included, against the target of 1 s, with its CPU time, the time of the queries alone, how close the top waits
read from a sample of the window come to those of every snapshot, and the query plans.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import math
import os
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

from sqlalchemy import true

from supervisor import history_waits
from supervisor.cli.context import CliContext
from supervisor.cli.main import main as cli_main
from supervisor.cli.show_cmd import TEXT_COLUMNS, ServerHistory, load

TENANT, SERVER = "bench", "sql01"
WAIT_TYPES = [
    "PAGEIOLATCH_SH", "WRITELOG", "CXPACKET", "LCK_M_X", "SOS_SCHEDULER_YIELD", "ASYNC_NETWORK_IO",
    "PAGELATCH_EX", "LCK_M_S", "RESOURCE_SEMAPHORE", "THREADPOOL", "IO_COMPLETION", "CXCONSUMER",
]  # fmt: skip
TARGET_S = 1.0


def stored(moment: dt.datetime) -> str:
    """SQLAlchemy's text form of a DateTime on SQLite."""
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def build(folder: Path, days: float, interval: float, waits: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("system.db", f"{TENANT}.db", f"{TENANT}.db-wal", f"{TENANT}.db-shm"):
        (folder / name).unlink(missing_ok=True)
    (folder / "collector.ini").write_text(
        f"[collector]\nsystem_db = sqlite:///{folder}/system.db\ntenant_db_url = sqlite:///{folder}/{{slug}}.db\n"
        f"secret_key_file = {folder}/secret.key\n"
    )
    for command in (["tenant", "add", TENANT], ["server", "add", TENANT, SERVER, "--host", "db1.example"]):
        with redirect_stdout(io.StringIO()):
            assert cli_main(["-c", str(folder / "collector.ini"), *command]) == 0, command
    db = sqlite3.connect(folder / f"{TENANT}.db")
    server_id = db.execute("SELECT id FROM servers WHERE name = ?", (SERVER,)).fetchone()[0]
    count = int(days * 86400 / interval)
    end = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    start = end - dt.timedelta(seconds=count * interval)
    rng = random.Random(14)
    outages = {rng.randrange(count) for _ in range(max(1, int(days / 15)))}
    snapshots, wait_rows, events = [], [], []
    down_until = -1
    for i in range(count):
        at = start + dt.timedelta(seconds=i * interval)
        if i in outages:
            down_until = i + rng.randrange(20, 200)
            events.append((server_id, stored(at), "offline", "[08001] Unable to connect to data source"))
        if i < down_until:
            if i + 1 == down_until:
                events.append((server_id, stored(at), "online", None))
            continue
        day = math.sin((at.hour * 3600 + at.minute * 60) / 86400 * 2 * math.pi - 2)
        cpu = max(0, min(100, round(35 + 25 * day + rng.gauss(0, 6))))
        memory = round(min(99.0, 70 + 8 * day + rng.gauss(0, 1.5)), 2)
        connections = max(1, round(120 + 80 * day + rng.gauss(0, 10)))
        batch = round(max(0.0, 900 + 700 * day + rng.gauss(0, 60)), 2)
        snapshots.append((i + 1, server_id, stored(at), cpu, None, memory, 12000, 16000, connections, batch,
                          interval, 12))  # fmt: skip
        for wait_type in rng.sample(WAIT_TYPES, waits):
            tasks = rng.randrange(1, 500)
            # A few wait types dominate, as on a real server: mean wait per task 60 ms / rank.
            wait_ms = int(tasks * rng.expovariate((1 + WAIT_TYPES.index(wait_type)) / 60))
            wait_rows.append((i + 1, wait_type, tasks, wait_ms, wait_ms // 10))
    with db:
        db.executemany("INSERT INTO metric_snapshots VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", snapshots)
        db.executemany("INSERT INTO wait_stats VALUES (?,?,?,?,?)", wait_rows)
        db.executemany("INSERT INTO server_status_events (server_id, at, status, error) VALUES (?,?,?,?)", events)
        db.execute("UPDATE servers SET status = 'online', last_success_at = ?", (stored(end),))
    db.execute("ANALYZE")
    db.close()


def fresh(folder: Path) -> bool:
    if not (folder / f"{TENANT}.db").exists():
        return False
    db = sqlite3.connect(folder / f"{TENANT}.db")
    try:
        newest = db.execute("SELECT max(collected_at) FROM metric_snapshots").fetchone()[0]
    except sqlite3.Error:
        return False
    finally:
        db.close()
    return newest is not None and dt.datetime.fromisoformat(newest) > dt.datetime.now() - dt.timedelta(days=1)


def timed_cli(folder: Path, *extra: str, runs: int) -> tuple[float, float]:
    """Median wall time and median CPU time (user + system) of the CLI process."""
    command = [
        sys.executable,
        "-m",
        "supervisor",
        "-c",
        str(folder / "collector.ini"),
        "server",
        "show",
        TENANT,
        SERVER,
    ]
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        result = subprocess.run([*command, *extra], capture_output=True, text=True, check=False)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if result.returncode != 0:
            raise SystemExit(f"server show failed: {result.stderr.strip()}")
    return statistics.median(walls), statistics.median(cpus)


def plans(folder: Path, since_days: float) -> list[str]:
    db = sqlite3.connect(folder / f"{TENANT}.db")
    start = stored(dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=since_days))
    queries = {
        "series": "SELECT CAST((julianday(collected_at) - 2460000) * 2 AS INTEGER) AS b, count(*), avg(cpu_percent) "
        "FROM metric_snapshots WHERE server_id = 1 AND collected_at >= ? GROUP BY b",
        "waits": "SELECT wait_type, sum(wait_time_ms) FROM metric_snapshots JOIN wait_stats "
        "ON wait_stats.snapshot_id = metric_snapshots.id WHERE server_id = 1 AND collected_at >= ? GROUP BY wait_type",
    }
    out = []
    for name, sql in queries.items():
        steps = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, (start,))]
        out.append(f"  plan of {name}: " + "; ".join(steps))
    db.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="/tmp/collector-bench-server-show")
    parser.add_argument("--days", type=float, default=365)
    parser.add_argument("--interval", type=float, default=30)
    parser.add_argument("--waits", type=int, default=6, help="wait rows per snapshot")
    parser.add_argument("--since", default="30d")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    folder = Path(args.dir).resolve()
    if args.rebuild or not fresh(folder):
        started = time.perf_counter()
        build(folder, args.days, args.interval, args.waits)
        print(f"built {folder / (TENANT + '.db')} in {time.perf_counter() - started:.0f} s", flush=True)
    db = sqlite3.connect(folder / f"{TENANT}.db")
    snapshots = db.execute("SELECT count(*) FROM metric_snapshots").fetchone()[0]
    waits = db.execute("SELECT count(*) FROM wait_stats").fetchone()[0]
    size = (folder / f"{TENANT}.db").stat().st_size
    db.close()
    context = CliContext(str(folder / "collector.ini"))
    started = time.perf_counter()
    data = load(context, TENANT, SERVER, args.since, TEXT_COLUMNS)
    queries = time.perf_counter() - started
    exact, exact_s = exact_top_waits(context, data)
    (text, text_cpu) = timed_cli(folder, "--since", args.since, runs=args.runs)
    (as_json, _) = timed_cli(folder, "--since", args.since, "--json", runs=args.runs)
    (png, _) = timed_cli(folder, "--since", args.since, "--png", str(folder / "show.png"), runs=max(1, args.runs // 2))
    verdict = "met" if text <= TARGET_S else "MISSED"
    print(
        f"server show --since {args.since}: {text:.2f} s [target <= {TARGET_S:g} s: {verdict}] "
        f"(median wall time of {args.runs} runs of the CLI, process start included; CPU {text_cpu:.2f} s; "
        f"the queries alone {queries:.2f} s); --json {as_json:.2f} s; --png {png:.2f} s; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(
        f"  tenant DB: {snapshots:,} snapshots ({args.days:g} days every {args.interval:g} s), {waits:,} wait rows, "
        f"{size / 2**20:,.0f} MiB; window: {data.summary['snapshots']:,} snapshots"
    )
    sampled = data.waits_sampled
    estimated = {w["wait_type"]: w["wait_time_ms"] for w in data.top_waits}
    errors = [abs(estimated[t] - ms) / ms for t, ms in exact.items() if t in estimated and ms]
    same = list(estimated) == list(exact)
    same_set = set(estimated) == set(exact)
    print(
        f"  top waits: from {sampled['sampled']:,} of {sampled['snapshots']:,} snapshots "
        f"({'exact' if sampled['exact'] else 'estimated'}); against all of them (the exact query: {exact_s:.2f} s): "
        f"same top {len(exact)}: {'yes' if same_set else 'NO'}, in the same order: {'yes' if same else 'no'}, "
        f"largest error of a total {max(errors, default=0):.1%}"
    )
    for line in plans(folder, parse_days(args.since)):
        print(line)


def exact_top_waits(context: CliContext, data: ServerHistory) -> tuple[dict[str, int], float]:
    """The top waits from every snapshot of the window, and how long that query takes."""
    engine = context.tenant_engine(context.tenant(TENANT))
    everything = history_waits.WaitSample(data.summary["snapshots"], data.summary["snapshots"], true())
    with engine.connect() as conn:
        started = time.perf_counter()
        rows = history_waits.top_waits(conn, data.info.id, data.window, everything)
        elapsed = time.perf_counter() - started
    engine.dispose()
    return {row["wait_type"]: row["wait_time_ms"] for row in rows}, elapsed


def parse_days(since: str) -> float:
    from supervisor.cli.show_cmd import parse_since

    return parse_since(since).total_seconds() / 86400


if __name__ == "__main__":
    main()
