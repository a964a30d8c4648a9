"""A quick real run of ``bench.peer_sql_exporter``: 20 servers in 2 tenants, a short window, a small login phase.

Checks that both sides collected, that the peer's collections were counted consistently from its sockets, that
the per-login figures exist, and the exact shape of the last line. Never checks speed.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.peer_sql_exporter import EXECUTABLE

REPO = Path(__file__).resolve().parents[2]
LAST_LINE = re.compile(
    r"^ours / prometheus-sql-exporter: CPU per collection \d+\.\d\dx, memory \(PSS\) per 1,000 servers \d+\.\d\dx$"
)


@pytest.mark.timeout(180)
@pytest.mark.skipif(not EXECUTABLE.exists(), reason="prometheus-sql-exporter is not installed")
def test_quick_peer_sql_exporter_run(tmp_path: Path) -> None:
    out = tmp_path / "peer.json"
    args = ["--servers", "20", "--tenants", "2", "--interval", "4", "--warmup", "6", "--seconds", "8",
            "--login-servers", "4", "--login-repeats", "1", "--login-rounds", "2", "--login-interval", "2",
            "--json", str(out)]
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # its folders where a failed test's cleanup looks
    result = subprocess.run([sys.executable, "-m", "bench.peer_sql_exporter", *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=170, stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert LAST_LINE.match(result.stdout.splitlines()[-1]), result.stdout[-1000:]
    figures = json.loads(out.read_text())
    ours, theirs, logins = figures["ours"], figures["theirs"], figures["logins"]
    assert ours["collections"] > 0 and theirs["collections"] > 0, figures
    assert ours["failed"] == theirs["failed"] == 0, figures
    # Every socket of the peer was open across the window and sent the same bytes per collection.
    assert theirs["sockets"] == 20 and theirs["opened_in_window"] == theirs["closed_in_window"] == 0, theirs
    assert theirs["odd_segment_counts"] == 0 and len(theirs["bytes_sent_per_collection"]) == 1, theirs
    for side in ("plain", "tls", "tls_adds"):
        assert math.isfinite(logins["peer"][side]["login"]), logins
        assert math.isfinite(logins["ours"][side]["login"]["ours"]), logins
    assert logins["ours"]["failures"] == 0
