"""CI smoke test of the benchmarks: the quick fleet run, the quick fault soak and the quick stalled fleet,
as subprocesses.

Checks that the scripts work end to end against the real supervisor and simulator, that the soak's
audit passes and that nothing is lost. Never checks speed: the figures are printed, not judged. The
stalled fleet's verdict is behaviour (deadlines, a pool that stalled servers cannot hold), so it is checked.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.children.runtime import START_AHEAD

REPO = Path(__file__).resolve().parents[2]


def bench_env(tmp_path: Path) -> dict[str, str]:
    """A benchmark's temporary folders in ``tmp_path``: there the harness finds what it leaves running when its
    test fails (a timeout kills the benchmark, not the supervisors it started in sessions of their own)."""
    return {**os.environ, "TMPDIR": str(tmp_path)}


def run_script(tmp_path: Path, module: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=bench_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.mark.timeout(600)
def test_quick_fleet_run_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "fleet.json"
    result = run_script(tmp_path, "bench.fleet_run", "--quick", "--json", str(out), timeout=540)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(out.read_text())
    plan = figures["plan"]
    slots = math.floor(figures["window_s"] / plan["interval"])
    # Every server fills every slot of the window once (a partial slot at one edge aside); duplicates are
    # counted apart and never as collections.
    assert figures["duplicates"] == 0, figures
    assert plan["servers"] * slots <= figures["collections"] <= plan["servers"] * (slots + 1), figures
    assert figures["missed_slots"] == 0, figures
    assert figures["failed_collections_logged"] == 0, figures
    assert figures["stop_exit_code"] == 0, figures
    assert figures["fds_end"] > 0 and figures["parent_rss_mib"] > 0


@pytest.mark.timeout(600)
def test_quick_soak_audit_passes(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    result = run_script(tmp_path, "bench.soak", "--quick", "--json", str(out), timeout=540)
    report = json.loads(out.read_text()) if out.exists() else {}
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    assert report["passed"], report
    assert report["figures"]["snapshots_lost_beyond_tolerance"] == 0
    assert report["figures"]["duplicates"] == 0
    assert report["figures"]["snapshots_stored"] > 0


@pytest.mark.timeout(300)
def test_collection_cost_runs_both_paths_and_stores_every_collection(tmp_path: Path) -> None:
    out = tmp_path / "cost.json"
    args = ("--servers", "3", "--rounds", "2", "--drivers", "freetds", "--modes", "reuse,noreuse")
    result = run_script(tmp_path, "bench.collection_cost", *args, "--json", str(out), timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(out.read_text())
    for mode in ("reuse", "noreuse"):
        pair = figures[f"freetds/{mode}"]
        assert pair["floor"]["collections"] == pair["ours"]["collections"] == 6
        assert pair["floor"]["failures"] == pair["ours"]["failures"] == 0
    assert figures["stored_snapshots"] == 2 * 3 * (1 + 2)  # per mode a warm-up and two rounds, every one stored
    assert set(figures["storage_cpu_ms_per_collection_by_batch"]) == {"1", "10", "50", "200"}


@pytest.mark.timeout(400)
def test_quick_stall_fleet_keeps_healthy_servers_on_time(tmp_path: Path) -> None:
    out = tmp_path / "stall.json"
    result = run_script(tmp_path, "bench.stall_fleet", "--quick", "--json", str(out), timeout=360)
    assert out.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(out.read_text())
    plan, healthy, pool, timeouts, faulty = (
        figures[key] for key in ("plan", "healthy", "pool", "timeouts", "faulty")
    )
    assert result.returncode == 0 and figures["verdict"]["passed"], result.stdout[-3000:]
    assert set(figures["verdict"]) == {
        "healthy_late_ok", "timeouts_ok", "threads_flat", "fds_flat", "clock_steady", "passed"
    }
    slots_in_window = int(figures["window_s"] // plan["interval"])
    # Healthy servers: every one counted, none failed, no slot missed (the pool always had a free thread).
    assert healthy["slots"] >= figures["servers_by_kind"]["healthy"] * slots_in_window
    assert healthy["failures"] == 0 and healthy["missed_slots"] == 0, healthy
    assert healthy["late_or_missed_share"] <= 0.01, healthy
    # Faulty servers: each one fails every slot and never stores a snapshot; at collection_timeout 2 s (login
    # timeout 2 s, the drivers' timeouts rounded up past the deadline) every failure is the deadline's timeout.
    assert faulty["servers_failed_in_window"] == faulty["servers"] > 0
    assert faulty["servers_with_snapshots"] == []
    assert faulty["failures"] >= faulty["servers"] * (slots_in_window - 1), faulty
    assert timeouts["count"] == faulty["failures"], figures["by_kind"]
    assert plan["collection_timeout"] <= timeouts["min_s"] <= timeouts["max_s"] <= plan["collection_timeout"] + 0.3
    # ... and over by then after its grid slot, as the log sees it: a collection starts up to START_AHEAD before
    # its slot, never after it.
    earliest = plan["collection_timeout"] - START_AHEAD
    assert earliest <= timeouts["end_p50_s"] <= timeouts["end_max_s"] <= timeouts["target_s"]
    # Where the pool's time goes: a faulty collection holds its slot until the deadline, not longer.
    held = pool["stalled_slot_s"] + pool["blackhole_slot_s"]
    assert faulty["failures"] * plan["collection_timeout"] <= held <= faulty["failures"] * timeouts["target_s"]
    assert pool["healthy_slot_s"] > 0 and 0 < pool["idle_share"] < 1
    assert pool["peak_faulty_in_flight_per_tenant"] < plan["concurrency"]
    # Children: one per tenant, none restarted, threads and fds flat.
    assert len(figures["children"]) == plan["tenants"]
    for slug, child in figures["children"].items():
        assert not child["restarted"] and child["threads_flat"] and child["fds_flat"], (slug, child)
    assert figures["stop"]["exit_code"] == 0
