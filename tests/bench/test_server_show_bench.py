"""Smoke run of ``bench.server_show`` on two days of data: it builds its DB, runs the real CLI and prints its
figures. Never checks speed (the line says whether the 1 s target was met)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_server_show_bench_prints_its_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.server_show", "--days", "2", "--since", "1d", "--runs", "1", "--dir",
         str(tmp_path / "bench")],
        cwd=REPO, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "server show --since 1d:" in result.stdout and "[target <= 1 s:" in result.stdout
    assert "snapshots (2 days every 30 s)" in result.stdout
    assert "USING INDEX" in result.stdout and (tmp_path / "bench" / "show.png").stat().st_size > 10_000
