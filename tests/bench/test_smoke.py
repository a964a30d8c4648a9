"""CI smoke test of the benchmarks: the quick fleet run and the quick fault soak, as subprocesses.

Checks that the scripts work end to end against the real supervisor and simulator, that the soak's
audit passes and that nothing is lost. Never checks speed: the figures are printed, not judged.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_script(module: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.mark.timeout(600)
def test_quick_fleet_run_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "fleet.json"
    result = run_script("bench.fleet_run", "--quick", "--json", str(out), timeout=540)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(out.read_text())
    plan = figures["plan"]
    assert figures["collections"] > 0.5 * plan["servers"] * figures["window_s"] / plan["interval"], figures
    assert figures["missed_slots"] == 0, figures
    assert figures["failed_collections_logged"] == 0, figures
    assert figures["stop_exit_code"] == 0, figures
    assert figures["fds_end"] > 0 and figures["parent_rss_mib"] > 0


@pytest.mark.timeout(600)
def test_quick_soak_audit_passes(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    result = run_script("bench.soak", "--quick", "--json", str(out), timeout=540)
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
    result = run_script("bench.collection_cost", *args, "--json", str(out), timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(out.read_text())
    for mode in ("reuse", "noreuse"):
        pair = figures[f"freetds/{mode}"]
        assert pair["floor"]["collections"] == pair["ours"]["collections"] == 6
        assert pair["floor"]["failures"] == pair["ours"]["failures"] == 0
    assert figures["stored_snapshots"] == 2 * 3 * (1 + 2)  # per mode a warm-up and two rounds, every one stored
    assert set(figures["storage_cpu_ms_per_collection_by_batch"]) == {"1", "10", "50", "200"}
