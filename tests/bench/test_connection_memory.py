"""A quick real run of ``bench.connection_memory`` (--quick: 20 connections per worker, both drivers, with and
without TLS). Checks that every worker collected on every connection, that a figure came out for each row and
that a wrong password is still reported as a login failure with the default options. Checks only that memory
was measured (above 0 per connection: the written pages, which other processes cannot change), not how much."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LOGIN_FAILED = {"msodbc18": "28000", "freetds": "42000"}


@pytest.mark.timeout(60)
def test_quick_connection_memory_run(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # its folders where a failed test's cleanup looks
    result = subprocess.run([sys.executable, "-m", "bench.connection_memory", "--quick", "--json", str(out)], env=env,
                            cwd=REPO, capture_output=True, text=True, timeout=55, stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert {(row["driver"], row["tls"], row["options"]) for row in rows.values()} == {
        (driver, tls, options) for driver in LOGIN_FAILED for tls in (False, True)
        for options in ("default", "packet-512")}  # fmt: skip
    for row in rows.values():
        assert row["failures"] == 0 and row["collections"] == 20 * 2, row
        assert row["private_kib_median"] > 0, row
        if row["options"] == "default":
            assert row["wrong_password_sqlstates"] == [LOGIN_FAILED[row["driver"]]], row
