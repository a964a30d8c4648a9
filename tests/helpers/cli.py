"""The real command line, in a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

#: The installed console script: on PATH, else beside this interpreter (``.venv/bin/python -m pytest``).
CLI = [shutil.which("collector-supervisor") or str(Path(sys.executable).parent / "collector-supervisor")]


def run_cli(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m supervisor`` with ``args``; ``env`` is added to this process's environment."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        cwd=cwd,
        env=full_env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
