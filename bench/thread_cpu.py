"""Where the supervisor's CPU goes, by thread role: per-thread CPU and wake-ups of a running deployment.

    python -m bench.thread_cpu [--servers 1000] [--tenants 5] [--interval 30] [--seconds 60] [--warmup 45]
                               [--driver msodbc18|freetds] [--tls] [--json FILE]

The real supervisor against a simulated fleet (the simulators' own CPU is left out). Over the window after
``--warmup``, each thread's user+system CPU and voluntary context switches (wake-ups) are read from
``/proc/<pid>/task/<tid>/`` (``stat``, ``status``), and the collections from the snapshots stored in the window.
A thread's role comes from its kernel name (the children name theirs: ``collect``, ``writer``) or, for code that
does not, from ``py-spy dump`` when py-spy is installed; the parent is the tree's root, a child's main thread
the one whose tid is its pid. Figures: CPU ms and wake-ups per collection, per role and in all.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from bench.common import (
    PLAIN,
    TLS,
    Deployment,
    SimFleet,
    fmt,
    make_servers,
    raise_fd_limit,
    run_octet,
    split_tenants,
    stop_process_group,
)
from bench.peers import snapshots_between, utc_text

ROLES = ("parent", "child main", "collect", "writer", "other")
_TICKS = os.sysconf("SC_CLK_TCK")
_PY_SPY_THREAD = re.compile(r'^Thread (\d+) \([^)]*\): "([^"]+)"', re.MULTILINE)


def tasks(root: int) -> Iterator[tuple[int, int]]:
    """(pid, tid) of every thread of the tree under ``root``."""
    processes = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
    for process in processes:
        try:
            for tid in os.listdir(f"/proc/{process.pid}/task"):
                yield process.pid, int(tid)
        except FileNotFoundError:
            continue


def read_task(pid: int, tid: int) -> tuple[str, float, int] | None:
    """(kernel name, CPU seconds, voluntary context switches) of one thread; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    switches = int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.MULTILINE).group(1))  # type: ignore[union-attr]
    return name, (int(fields[11]) + int(fields[12])) / _TICKS, switches


def python_thread_names(pids: list[int]) -> dict[int, str]:
    """tid -> Python thread name, from ``py-spy dump`` (empty without py-spy)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        return {}
    names: dict[int, str] = {}
    for pid in pids:
        result = subprocess.run([py_spy, "dump", "--pid", str(pid)], capture_output=True, text=True, check=False,
                                timeout=30)
        names.update({int(tid): name for tid, name in _PY_SPY_THREAD.findall(result.stdout)})
    return names


def role_of(root: int, pid: int, tid: int, kernel_name: str, python_name: str | None) -> str:
    if pid == root:
        return "parent"
    if tid == pid:
        return "child main"
    for role in ("collect", "writer"):  # the kernel names are exact; Python's are "collect-<tenant>-<n>", ...
        if kernel_name == role or (python_name or "").startswith(f"{role}-"):
            return role
    return "other"


def snapshot(root: int) -> dict[tuple[int, int], tuple[str, float, int]]:
    found = {}
    for pid, tid in tasks(root):
        task = read_task(pid, tid)
        if task is not None:
            found[(pid, tid)] = task
    return found


def measure(root: int, seconds: float) -> dict[str, dict[str, float]]:
    before = snapshot(root)
    time.sleep(seconds)
    after = snapshot(root)
    python_names = python_thread_names(sorted({pid for pid, _ in after if pid != root}))
    totals = {role: {"cpu_s": 0.0, "wakeups": 0.0, "threads": 0.0} for role in ROLES}
    for key, (name, cpu, switches) in after.items():
        _, cpu0, switches0 = before.get(key, (name, 0.0, 0))
        role = role_of(root, key[0], key[1], name, python_names.get(key[1]))
        totals[role]["cpu_s"] += cpu - cpu0
        totals[role]["wakeups"] += switches - switches0
        totals[role]["threads"] += 1
    return totals


def run(directory: Path, args: argparse.Namespace) -> dict[str, Any]:
    from bench.collection_cost import driver_name

    raise_fd_limit()
    encryption = TLS if args.tls else PLAIN
    servers = make_servers(args.servers, run_octet(), prefix="cpu", tls=args.tls)
    fleet = SimFleet(directory / "sim", servers)
    deployment = Deployment(directory / "ours", odbc_driver=driver_name(args.driver),
                            collection_interval=args.interval, encrypt=encryption.encrypt)
    fleet.start()
    try:
        deployment.register(split_tenants(servers, args.tenants), None, use_cli=False, encryption=encryption)
        process = deployment.start()
        time.sleep(args.warmup)
        if process.poll() is not None:
            raise RuntimeError(f"the supervisor exited with {process.returncode}")
        start = utc_text()
        roles = measure(process.pid, args.seconds)
        end = utc_text()
        deployment.terminate(30.0)
    finally:
        stop_process_group(deployment.process, 10.0)
        fleet.stop()
    collections = snapshots_between(deployment, start, end)
    return {"plan": vars(args) | {"json": None}, "collections": collections, "window_s": args.seconds,
            "roles": roles}


def report(result: dict[str, Any]) -> None:
    plan, roles, collections = result["plan"], result["roles"], max(1, result["collections"])
    print(f"thread CPU: {plan['servers']} servers in {plan['tenants']} tenants, interval {plan['interval']} s, "
          f"driver {plan['driver']}, TLS {'on' if plan['tls'] else 'off'}; {result['collections']} collections "
          f"in {result['window_s']:g} s")
    header = f"{'role':<12} {'threads':>7} {'CPU s':>7} {'CPU ms/collection':>18} {'share':>6}"
    print(f"{header} {'wake-ups/collection':>20}")
    total_cpu = sum(r["cpu_s"] for r in roles.values()) or 1.0
    for role in ROLES:
        r = roles[role]
        per_collection = fmt(r["cpu_s"] * 1000 / collections, 3)
        print(f"{role:<12} {int(r['threads']):>7} {fmt(r['cpu_s'])!s:>7} {per_collection!s:>18}"
              f" {fmt(100 * r['cpu_s'] / total_cpu, 1)!s:>5}% {fmt(r['wakeups'] / collections, 2)!s:>20}")
    wakeups = sum(r["wakeups"] for r in roles.values())
    print(f"{'all':<12} {int(sum(r['threads'] for r in roles.values())):>7} {fmt(total_cpu)!s:>7} "
          f"{fmt(total_cpu * 1000 / collections, 3)!s:>18} {'100':>5}% {fmt(wakeups / collections, 2)!s:>20}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.thread_cpu", description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--tenants", type=int, default=5)
    parser.add_argument("--interval", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=45.0)
    parser.add_argument("--driver", choices=("msodbc18", "freetds"), default="msodbc18")
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="thread-cpu-") as folder:
        result = run(Path(folder), args)
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
