"""Side by side with a Go peer: prometheus-sql-exporter (sql_exporter 0.4.5, go-mssqldb) on the same fleet.

    python -m bench.peer_sql_exporter [--servers 1000] [--tenants 5] [--interval 30] [--seconds 150]
                                      [--warmup 70] [--driver msodbc18|freetds] [--tls]
                                      [--repeats 1] [--login-servers 100] [--login-repeats 3] [--go-defaults]
                                      [--json FILE]

The peer is Debian's ``prometheus-sql-exporter`` (justwatchcom sql_exporter 0.4.5, built with go-mssqldb):
``/usr/bin/prometheus-sql-exporter``, installed with ``apt-get install -y prometheus-sql-exporter`` when it
is missing (the benchmark says so). A yardstick, never a dependency. Ours (the real supervisor) runs first,
then the peer, against the same simulator processes, with the same SQL and interval; figures as in
``bench.peer_query_exporter`` (shared code in ``bench.peers``): collections/s and CPU ms per collection over
the window after ``--warmup``, memory (PSS; RSS and USS too) per 1,000 servers at its end. ``--repeats N``
runs the two sides N times, alternating, and compares each side's median: on a shared machine our CPU per
collection moves with the neighbours' load (Python more than Go), so one pair of runs is one sample.

The peer's configuration, as its documentation describes it (YAML; written as JSON, which is YAML): one job
per tenant, each with the tenant's servers as ``connections`` (go-mssqldb URLs ``sqlserver://user:password@
host:port?database=master&encrypt=disable``, or ``encrypt=true&TrustServerCertificate=true`` with ``--tls``),
``interval`` and one query, ``EXEC collector.usp_collect_snapshot``. The peer keeps what Prometheus can take
from the first result set: the string columns as ``labels``, the integer columns as ``values``. Its two
datetime columns are neither (it takes text labels and numeric values), and go-mssqldb, on closing the rows,
cancels the unread result sets with an ATTENTION. A job runs all its connections at once, waits for the last,
then sleeps ``interval``; connections stay open (sql.DB with one idle connection, no lifetime for MS SQL). It
runs in the environment Debian's service gives it (``/etc/default/prometheus-sql-exporter``: ``GOGC=40``,
``GOMAXPROCS=4``, ``LOGLEVEL=WARN``); ``--go-defaults`` drops ``GOGC``/``GOMAXPROCS``.

Counting the peer's collections: 0.4.5 exposes no per-query counter (only a gauge,
``sql_exporter_last_scrape_failed``), and its gauges carry no sample time. So they are counted in the kernel:
the TCP counters of the peer's sockets (``ss -ti``). On a kept connection a collection sends exactly two TDS
packets, in two segments (the SQL batch, then the ATTENTION), so a socket's collections in the window are its
``data_segs_out`` difference / 2. Checked and printed: every socket's bytes sent per collection are the same
(108 bytes without TLS), no socket was opened during the window, and none has an odd difference. The window's
two ends are taken between the peer's bursts: when the counters have not moved for 0.3 s, CPU is read (the
kernel's CPU clock of its process, in ns), and the counters again. Failures: the lines the peer logs in the
window (it logs each failed connect or query at WARN).

What encryption costs per login (and per collection on a kept connection), after the fleet runs: on
``--login-servers`` L plain and L TLS servers of the same simulator processes.

- Ours: the collector's own per-server path in this process, as ``bench.collection_cost`` times it
  (``ServerSession.collect`` with the record and its share of storage, next to the bare pyodbc loop), with
  kept connections and with a fresh connection per collection; a login is the difference (medians).
- The peer: fresh processes, each with one job of n servers and a ``--login-interval`` (3 s), watched
  through the same TCP counters: its CPU (the kernel's CPU clock of the process, in ns) when the first round
  is over (start-up, n logins, n first collections), then after two more rounds. With n = L and n = 1
  (``--login-repeats`` pairs, medians), start-up and idle cancel out: a login with its first collection is
  (CPU(L) - CPU(1)) / (L - 1) at the end of round one, a collection on a kept connection the same over
  rounds two and three / 2, and a login the difference.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    PLAIN,
    SIM_PASSWORD,
    SIM_USER,
    TLS,
    Encryption,
    SimFleet,
    SimServer,
    fmt,
    make_servers,
    process_cpu,
    raise_fd_limit,
    run_octet,
    split_tenants,
    stop_process_group,
)
from bench.peers import add_arguments, encryption_of, instance_columns, measure_peer, print_runs, run_ours

PEER = "prometheus-sql-exporter"
EXECUTABLE = Path("/usr/bin/prometheus-sql-exporter")
PACKAGE_DEFAULTS = Path("/etc/default/prometheus-sql-exporter")
QUERY = "EXEC collector.usp_collect_snapshot"
#: The first (instance) result set: text columns become labels, numbers values (times are neither for this peer).
LABELS = instance_columns()["text"]
VALUES = instance_columns()["numbers"]
#: TDS packets (and TCP segments) a collection on a kept connection sends: the SQL batch, the ATTENTION.
SEGMENTS_PER_COLLECTION = 2
QUIET_S = 0.3


# --- the peer ------------------------------------------------------------------------------------------
def ensure_peer() -> Path:
    if EXECUTABLE.exists():
        return EXECUTABLE
    print(f"{EXECUTABLE} is missing: apt-get install -y {PEER} ...", flush=True)
    command = ["apt-get", "install", "-y", PEER]
    if os.geteuid() != 0 and shutil.which("sudo"):
        command = ["sudo", "-n", *command]
    subprocess.run(command, check=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if not EXECUTABLE.exists():
        raise FileNotFoundError(f"{EXECUTABLE} is still missing after apt-get install {PEER}")
    return EXECUTABLE


def peer_env(go_defaults: bool) -> dict[str, str]:
    """The environment Debian's service runs the peer in (GOGC, GOMAXPROCS, LOGLEVEL from its defaults file)."""
    settings = {"LOGLEVEL": "WARN"}
    with contextlib.suppress(OSError):
        for line in PACKAGE_DEFAULTS.read_text(encoding="utf-8").splitlines():
            key, _, value = line.strip().partition("=")
            if key in ("GOGC", "GOMAXPROCS", "LOGLEVEL") and value:
                settings[key] = value.strip().strip("\"'")
    if go_defaults:
        settings.pop("GOGC", None)
        settings.pop("GOMAXPROCS", None)
    env = {key: value for key, value in os.environ.items() if key not in ("CONFIG", "GOGC", "GOMAXPROCS")}
    return {**env, **settings}


def dsn(server: SimServer, encryption: Encryption) -> str:
    if encryption.on:
        trust = "&TrustServerCertificate=true" if encryption.trust_server_certificate else ""
        security = "encrypt=true" + trust
    else:
        security = "encrypt=disable"
    return (f"sqlserver://{SIM_USER}:{SIM_PASSWORD}@{server.host}:{server.port}?database=master&{security}"
            f"&app+name={PEER}")


def peer_config(jobs: dict[str, list[SimServer]], interval: int, encryption: Encryption) -> dict[str, Any]:
    query = {"name": "instance", "help": "instance result set of usp_collect_snapshot", "labels": LABELS,
             "values": VALUES, "query": QUERY}
    return {"jobs": [{"name": name, "interval": f"{interval}s", "connections": [dsn(s, encryption) for s in servers],
                      "queries": [query]} for name, servers in jobs.items()]}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_peer(directory: Path, name: str, document: dict[str, Any], env: dict[str, str]) -> tuple[
        subprocess.Popen[bytes], Path]:
    config = directory / f"{name}.yml"
    config.write_text(json.dumps(document), encoding="utf-8")
    log_path = directory / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(EXECUTABLE), "-config.file", str(config), "-web.listen-address", f"127.0.0.1:{free_port()}"],
            cwd=directory, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return process, log_path


# --- the kernel's TCP counters of the peer's sockets --------------------------------------------------------
@dataclass(frozen=True)
class Counters:
    data_segs_out: int
    bytes_sent: int


Sockets = dict[tuple[str, str], Counters]  # (local, remote) address -> counters
_FIELD = re.compile(r"\b(data_segs_out|bytes_sent):(\d+)")


def tcp_counters(prefix: str, remotes: set[str] | None = None) -> Sockets:
    """Established sockets to ``prefix``.0/24 (the peer's: the simulator's own have 127.0.0.1 as remote)."""
    out = subprocess.run(["ss", "-tinH", "state", "established", "dst", f"{prefix}.0/24"],
                         capture_output=True, text=True, check=True).stdout
    sockets: Sockets = {}
    local = remote = ""
    for line in out.splitlines():
        if not line[:1].isspace():
            fields = line.split()
            local, remote = (fields[2], fields[3]) if len(fields) >= 4 else ("", "")
            continue
        if not remote or (remotes is not None and remote not in remotes):
            continue
        values = dict(_FIELD.findall(line))
        sockets[(local, remote)] = Counters(int(values.get("data_segs_out", 0)), int(values.get("bytes_sent", 0)))
    return sockets


def total_segments(sockets: Sockets) -> int:
    return sum(c.data_segs_out for c in sockets.values())


def quiet_mark(pid: int, read: Callable[[], Sockets], quiet: float = QUIET_S, timeout: float = 30.0,
               ready: Callable[[Sockets], bool] = lambda _: True) -> tuple[Sockets, float]:
    """Counters and the peer's CPU read between bursts: once the counters stood still for ``quiet`` seconds
    (and ``ready`` accepts them), CPU, then the counters once more, which must not have moved either."""
    deadline = time.monotonic() + timeout
    last = read()
    while True:
        time.sleep(quiet)
        now = read()
        if total_segments(now) == total_segments(last) and ready(now):
            cpu = process_cpu(pid)
            after = read()
            if total_segments(after) == total_segments(now):
                return after, cpu
            now = after
        if time.monotonic() > deadline:
            raise TimeoutError(f"the peer's sockets were not quiet for {quiet} s within {timeout:.0f} s")
        last = now


def count_collections(before: Sockets, after: Sockets) -> dict[str, Any]:
    collections = odd = 0
    bytes_per: set[float] = set()
    for key, end in after.items():
        start = before.get(key)
        if start is None:
            continue
        segments = end.data_segs_out - start.data_segs_out
        odd += segments % SEGMENTS_PER_COLLECTION != 0
        done = segments // SEGMENTS_PER_COLLECTION
        collections += done
        if done:
            bytes_per.add((end.bytes_sent - start.bytes_sent) / done)
    return {"collections": collections, "sockets": len(after), "opened_in_window": len(set(after) - set(before)),
            "closed_in_window": len(set(before) - set(after)), "odd_segment_counts": odd,
            "bytes_sent_per_collection": sorted(bytes_per)}


def failure_lines(log_path: Path, start: int, end: int) -> int:
    with log_path.open("rb") as log:
        log.seek(start)
        text = log.read(max(0, end - start)).decode(errors="replace")
    return sum(1 for line in text.splitlines() if '"level":"warn"' in line or '"level":"error"' in line)


def run_peer(directory: Path, servers: list[SimServer], args: argparse.Namespace, env: dict[str, str],
             prefix: str, sim_pids: list[int]) -> dict[str, Any]:
    document = peer_config(split_tenants(servers, args.tenants), args.interval, encryption_of(args))
    process, log_path = start_peer(directory, "peer", document, env)
    remotes = {f"{s.host}:{s.port}" for s in servers}

    def mark(pid: int) -> tuple[tuple[Sockets, int], float]:
        sockets, cpu = quiet_mark(pid, lambda: tcp_counters(prefix, remotes), timeout=max(30.0, args.interval))
        return (sockets, log_path.stat().st_size), cpu

    window = measure_peer(process, PEER, log_path, args, sim_pids, mark)
    (before, log0), (after, log1) = window.before, window.after
    counted = count_collections(before, after)
    return {**counted, "failed": failure_lines(log_path, log0, log1), "cpu_s": window.cpu_s,
            "sim_cpu_s": window.sim_cpu_s, "memory": window.memory, "window_s": window.window_s,
            "env": {key: env[key] for key in ("GOGC", "GOMAXPROCS", "LOGLEVEL") if key in env}}


# --- what a login costs ------------------------------------------------------------------------------------
def peer_rounds(directory: Path, name: str, servers: list[SimServer], encryption: Encryption, env: dict[str, str],
                prefix: str, interval: int) -> tuple[float, float]:
    """A fresh peer on ``servers``: its CPU seconds when round one is over, and over rounds two and three."""
    document = peer_config({name: servers}, interval, encryption)
    quiet = min(1.0, interval / 3)
    process, log_path = start_peer(directory, name, document, env)
    remotes = {f"{s.host}:{s.port}" for s in servers}

    def read() -> Sockets:
        return tcp_counters(prefix, remotes)

    def all_equal(sockets: Sockets) -> bool:
        return len(sockets) == len(servers) and len({c.data_segs_out for c in sockets.values()}) == 1

    try:

        first, cpu1 = quiet_mark(process.pid, read, quiet=quiet, timeout=60.0, ready=all_equal)
        target = total_segments(first) + 2 * SEGMENTS_PER_COLLECTION * len(servers)
        third, cpu3 = quiet_mark(process.pid, read, quiet=quiet, timeout=60.0,
                                 ready=lambda sockets: total_segments(sockets) >= target)
        if total_segments(third) != target or set(third) != set(first):
            raise RuntimeError(f"{name}: rounds two and three sent {total_segments(third) - total_segments(first)} "
                               f"segments, not {target - total_segments(first)}: see {log_path}")
    finally:
        stop_process_group(process, 15.0)
    return cpu1, cpu3 - cpu1


def peer_logins(directory: Path, sets: list[tuple[Encryption, list[SimServer]]], repeats: int,
                env: dict[str, str], prefix: str, interval: int) -> dict[str, dict[str, float]]:
    figures: dict[str, dict[str, float]] = {}
    for encryption, servers in sets:
        label = "tls" if encryption.on else "plain"
        logins, kept = [], []
        for repeat in range(repeats):
            one_first, one_rest = peer_rounds(directory, f"logins-{label}-1-{repeat}", servers[:1], encryption,
                                              env, prefix, interval)
            many_first, many_rest = peer_rounds(directory, f"logins-{label}-{len(servers)}-{repeat}", servers,
                                                encryption, env, prefix, interval)
            extra = len(servers) - 1
            collection = (many_rest - one_rest) / (2 * extra)
            kept.append(collection)
            logins.append((many_first - one_first) / extra - collection)
        figures[label] = {"collection": 1000 * statistics.median(kept), "login": 1000 * statistics.median(logins)}
    if "plain" in figures and "tls" in figures:
        figures["tls_adds"] = {what: figures["tls"][what] - figures["plain"][what] for what in ("collection", "login")}
    return figures


def ours_logins(directory: Path, sets: list[tuple[Encryption, list[SimServer]]], driver: str, rounds: int,
                sim_pids: list[int]) -> dict[str, Any]:
    import logging

    from bench.collection_cost import ALL_MODES, Ours, login_and_tls, measure, pair_key

    logging.getLogger().addHandler(logging.NullHandler())
    logging.getLogger().setLevel(logging.INFO)  # as a child runs by default
    directory.mkdir(parents=True, exist_ok=True)
    ours = Ours(directory, [server for _, servers in sets for server in servers])
    ours.start()
    results: dict[str, Any] = {}
    try:
        for encryption, servers in sets:
            for mode in ALL_MODES:
                floor, mine = measure(driver, mode == "reuse", servers, ours, sim_pids, rounds, encryption)
                results[pair_key(driver, mode, encryption)] = {"floor": floor.summary(), "ours": mine.summary()}
    finally:
        ours.stop()
    failures = sum(pair[who]["failures"] for pair in results.values() for who in ("floor", "ours"))
    return {**login_and_tls(results, [driver]).get(driver, {}), "failures": failures}


# --- the run -----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peer_sql_exporter", description=__doc__.splitlines()[0])
    add_arguments(parser, interval=30, seconds=150.0, warmup=70.0)
    parser.add_argument("--repeats", type=int, default=1, help="run both sides this many times, alternating")
    parser.add_argument("--login-servers", type=int, default=100,
                        help="servers per encryption for the per-login figures (0: skip them)")
    parser.add_argument("--login-repeats", type=int, default=3, help="fresh-peer pairs per encryption")
    parser.add_argument("--login-rounds", type=int, default=5, help="ours: rounds per mode over the login servers")
    parser.add_argument("--login-interval", type=int, default=3, help="the fresh peers' interval, seconds (>= 1)")
    parser.add_argument("--go-defaults", action="store_true",
                        help="run the peer without the GOGC/GOMAXPROCS of Debian's service")
    args = parser.parse_args(argv)
    if args.login_servers == 1:
        parser.error("--login-servers must be 0 or at least 2")
    raise_fd_limit()
    try:
        ensure_peer()
    except (subprocess.CalledProcessError, OSError) as exc:
        print(f"{PEER} cannot be installed here: {exc}", file=sys.stderr)
        return 1
    env = peer_env(args.go_defaults)
    load = [os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="bench-peer-sql-") as tmp:
        directory = Path(tmp)
        octet = run_octet()
        prefix = f"127.77.{octet}"
        servers = make_servers(args.servers, octet, prefix="peer", tls=args.tls)
        login_sets = [
            (PLAIN, make_servers(args.login_servers, octet, prefix="login", first=args.servers)),
            (TLS, make_servers(args.login_servers, octet, prefix="login-tls", tls=True,
                               first=args.servers + args.login_servers)),
        ] if args.login_servers else []
        fleet = SimFleet(directory / "sim", servers + [s for _, group in login_sets for s in group])
        fleet.start()
        try:
            runs = []
            for repeat in range(max(1, args.repeats)):
                ours = run_ours(directory / f"run-{repeat}", servers, args, fleet.pids())
                load.append(os.getloadavg())
                theirs = run_peer(directory / f"run-{repeat}", servers, args, env, prefix, fleet.pids())
                load.append(os.getloadavg())
                runs.append((ours, theirs))
            logins: dict[str, Any] = {}
            if login_sets:
                logins["ours"] = ours_logins(directory / "logins", login_sets, args.driver, args.login_rounds,
                                             fleet.pids())
                logins["peer"] = peer_logins(directory, login_sets, args.login_repeats, env, prefix,
                                             args.login_interval)
                load.append(os.getloadavg())
        finally:
            fleet.stop()
    result = {"ours": runs[0][0], "theirs": runs[0][1], "runs": [list(pair) for pair in runs], "logins": logins,
              "load_average": load,
              "plan": {key: value for key, value in vars(args).items() if key != "json"}}
    report(result, args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    return 0


def _encryption_rows(who: str, figures: dict[str, Any]) -> Iterable[str]:
    for name, label in (("plain", "without TLS"), ("tls", "with TLS"), ("tls_adds", "TLS adds")):
        row = figures.get(name)
        if row:
            yield (f"  {who:<34} {label:<12} {fmt(row.get('collection', float('nan'))):>10} "
                   f"{fmt(row.get('login', float('nan'))):>10}")


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    logins = result["logins"]
    cpu_ratio, mem_ratio = print_runs([(ours, theirs) for ours, theirs in result["runs"]], PEER, args)
    env = " ".join(f"{key}={value}" for key, value in result["theirs"]["env"].items())
    for index, (ours, theirs) in enumerate(result["runs"]):
        run = f" #{index + 1}" if len(result["runs"]) > 1 else ""
        print(f"{PEER}{run}: {env or 'Go defaults'}; collections counted from its sockets' TCP counters: "
              f"{theirs['sockets']} sockets, bytes sent per collection {theirs['bytes_sent_per_collection']}, "
              f"{theirs['opened_in_window']} opened and {theirs['closed_in_window']} closed in the window, "
              f"{theirs['odd_segment_counts']} odd segment counts; {theirs['failed']} failures logged "
              f"(ours: {ours['failed']})")
    print(f"expected collections/s: ours {args.servers / args.interval:.1f} (servers / interval); the peer a little "
          f"less (it sleeps the interval after each job's round)")
    if logins:
        print(f"encryption, CPU ms (login servers: {args.login_servers} plain and {args.login_servers} TLS; ours "
              f"in this process, {args.login_rounds} rounds per mode, medians; the peer in fresh processes, "
              f"{args.login_repeats} pairs of n = {args.login_servers} and n = 1, medians):")
        print(f"  {'':<34} {'':<12} {'collection':>10} {'login':>10}")
        for who, key in ((f"ours ({args.driver}, collector's path)", "ours"), ("floor (bare pyodbc loop)", "floor")):
            rows = {name: {what: value.get(key, float("nan")) for what, value in figures.items()}
                    for name, figures in logins["ours"].items() if isinstance(figures, dict)}
            for line in _encryption_rows(who, rows):
                print(line)
        for line in _encryption_rows(PEER, logins["peer"]):
            print(line)
        if logins["ours"].get("failures"):
            print(f"  ours: {logins['ours']['failures']} failed collections in the login phase")
    samples = "; ".join(" ".join(f"{v:.2f}" for v in sample) for sample in result["load_average"])
    print(f"load average (1/5/15 min) at start, after ours, after the peer (each run){', at the end' * bool(logins)}: "
          f"{samples}")
    print(f"ours / {PEER}: CPU per collection {cpu_ratio:.2f}x, memory (PSS) per 1,000 servers {mem_ratio:.2f}x")


if __name__ == "__main__":
    raise SystemExit(main())
