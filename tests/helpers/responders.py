"""A scripted TDS responder of the tests (``tests.sim.hostile_server``, ``tests.sim.implausible_server``) as a real
process: started, waited for until it says it listens, stopped afterwards."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tests.helpers.simulator import REPO


@contextmanager
def responder(module: str, *args: str) -> Iterator[None]:
    """``python -m module args…``, its first stdout line the JSON ``{"event": "ready"}``."""
    process = subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert json.loads(process.stdout.readline())["event"] == "ready"
        yield
    finally:
        process.terminate()
        process.wait(10)
