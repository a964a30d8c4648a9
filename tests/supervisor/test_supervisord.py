"""The shipped ``deploy/supervisord.conf`` entry under the real supervisord: ``supervisorctl stop`` is graceful."""

from __future__ import annotations

import configparser
import json
import subprocess
import time
from pathlib import Path

from supervisor.config import Settings, load_settings
from tests.helpers.cli import CLI
from tests.helpers.deployment import Deployment, pids_gone
from tests.helpers.waiting import wait_until

SUPERVISORD = "/usr/bin/supervisord"
SUPERVISORCTL = "/usr/bin/supervisorctl"
REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "deploy" / "supervisord.conf"


#: What the shipped entry's comment promises: supervisord waits shutdown_timeout plus this before its SIGKILL.
STOP_MARGIN_S = 15


def _shipped_program() -> dict[str, str]:
    shipped = configparser.ConfigParser(interpolation=None)
    shipped.read(SHIPPED)
    return dict(shipped["program:collector-supervisor"])


def test_shipped_stopwaitsecs_covers_the_shipped_shutdown_timeout() -> None:
    """supervisord's SIGKILL must not cut the parent's own graceful stop (up to shutdown_timeout, then its KILL
    of stragglers): the shipped value is the shipped and default shutdown_timeout plus the documented margin."""
    stopwaitsecs = int(_shipped_program()["stopwaitsecs"])
    shipped_timeout = load_settings(REPO / "collector.ini").shutdown_timeout
    assert shipped_timeout == Settings().shutdown_timeout
    assert stopwaitsecs == shipped_timeout + STOP_MARGIN_S, (stopwaitsecs, shipped_timeout)
    assert f"stopwaitsecs = shutdown_timeout + {STOP_MARGIN_S}" in SHIPPED.read_text()


def _program_section(deployment: Deployment, log_file: Path) -> str:
    """The shipped entry with this test's paths; every other setting stays as shipped, stopwaitsecs too."""
    program = _shipped_program()
    assert program["stopsignal"] == "TERM" and program["stopasgroup"] == "false" and program["killasgroup"] == "true"
    assert program["redirect_stderr"] == "true"
    program.pop("user")
    program["command"] = f"{CLI[0]} -c {deployment.config} run"
    program["directory"] = str(deployment.root)
    program["stdout_logfile"] = str(log_file)
    env = deployment.env()
    program["environment"] = ",".join(
        f'{key}="{env[key]}"' for key in ("PATH", "PYTHONPATH", "COLLECTOR_FAKE_RUNTIME") if key in env
    )
    return "[program:collector-supervisor]\n" + "\n".join(f"{k}={v}" for k, v in program.items()) + "\n"


def test_supervisorctl_stop_is_graceful(deployment: Deployment, tmp_path: Path) -> None:
    for slug in ("one", "two", "stubborn-three"):
        deployment.add_tenant(slug)
    deployment.write_config(shutdown_timeout=3)
    log_file = tmp_path / "collector.log"
    socket = tmp_path / "supervisor.sock"
    conf = tmp_path / "supervisord.conf"
    conf.write_text(
        f"[unix_http_server]\nfile={socket}\n\n"
        f"[supervisord]\nlogfile={tmp_path / 'supervisord.log'}\npidfile={tmp_path / 'supervisord.pid'}\n"
        f"childlogdir={tmp_path}\nnodaemon=false\n\n"
        "[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n"
        f"[supervisorctl]\nserverurl=unix://{socket}\n\n" + _program_section(deployment, log_file)
    )
    ctl = [SUPERVISORCTL, "-c", str(conf)]
    subprocess.run([SUPERVISORD, "-c", str(conf)], check=True, timeout=30)
    try:

        def started_children() -> list[dict]:
            if not log_file.exists():
                return []
            lines = [json.loads(line) for line in log_file.read_text().splitlines()]
            return [r for r in lines if r["event"] == "fake.started"]

        wait_until(lambda: len(started_children()) == 3, 30, "three children under supervisord")
        pid = int(subprocess.run([*ctl, "pid", "collector-supervisor"], capture_output=True, text=True).stdout)
        children = {r["pid"] for r in started_children()}
        stopwaitsecs = int(_shipped_program()["stopwaitsecs"])  # as shipped: not overridden
        assert stopwaitsecs >= 3 + STOP_MARGIN_S
        stopping = time.monotonic()
        stop = subprocess.run(
            [*ctl, "stop", "collector-supervisor"], capture_output=True, text=True, timeout=stopwaitsecs + 10
        )
        assert "stopped" in stop.stdout, stop.stdout + stop.stderr
        # The parent's stop: its shutdown_timeout (3 s) for the stubborn child, its KILL, the exit; far from
        # supervisord's own SIGKILL at stopwaitsecs.
        assert time.monotonic() - stopping < 3 + STOP_MARGIN_S
        assert pids_gone(children | {pid})
        records = [json.loads(line) for line in log_file.read_text().splitlines()]  # all JSON
        assert records[-1]["event"] == "supervisor.stopped"
        assert [r["tenant"] for r in records if r["event"] == "child.killed"] == ["stubborn-three"]
        supervisord_log = (tmp_path / "supervisord.log").read_text()
        assert "stopped: collector-supervisor (exit status 0)" in supervisord_log
        recorded = json.loads(deployment.cli("status", "--json").stdout)
        assert [i["status"] for i in recorded["instances"]] == ["stopped"]
        assert {t["state"] for t in recorded["tenants"]} == {"STOPPED"}
    finally:
        subprocess.run([*ctl, "shutdown"], capture_output=True, timeout=60)
