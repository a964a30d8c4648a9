"""A stop or reload signal that arrives while ``run`` is still importing (about half a second) is acted on
once the supervisor is ready, instead of killing it with the default action: SIGTERM, SIGINT and SIGQUIT stop it
gracefully (exit 0, every line of its output JSON: no ``KeyboardInterrupt`` traceback), SIGHUP is a reload.

The signal is sent at the first moment the process either holds TERM (the entry point's first act) or has
loaded SQLAlchemy: without the early hold, the second comes first, and the signal kills it."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.deployment import Deployment
from tests.helpers.waiting import wait_until


def holds_term(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigBlk:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def importing_sqlalchemy(pid: int) -> bool:
    return "sqlalchemy" in Path(f"/proc/{pid}/maps").read_text()


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[Deployment]:
    """No tenants, and no stand-in runtime: its ``sitecustomize`` would import SQLAlchemy before the entry point."""
    deployment = Deployment(tmp_path, fake_runtime=False)
    deployment.write_config()
    deployment.cli("init-db")
    yield deployment
    deployment.stop_all()


def send_while_starting(pid: int, signo: int) -> None:
    deadline = time.monotonic() + 30
    while not (holds_term(pid) or importing_sqlalchemy(pid)):
        assert time.monotonic() < deadline, "the supervisor neither held TERM nor imported SQLAlchemy"
        time.sleep(0.001)
    os.kill(pid, signo)


@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT], ids=["TERM", "INT", "QUIT"])
def test_a_stop_during_start_up_is_a_graceful_stop(plain: Deployment, signo: int) -> None:
    supervisor = plain.start()
    send_while_starting(supervisor.pid, signo)
    assert supervisor.wait_exit(60) == 0
    assert supervisor.events("supervisor.stopped") or supervisor.events("supervisor.stopping")


def test_a_reload_during_start_up_does_not_kill(plain: Deployment) -> None:
    supervisor = plain.start()
    send_while_starting(supervisor.pid, signal.SIGHUP)
    supervisor.wait_event("config.reloaded", timeout=60)
    assert supervisor.popen.poll() is None
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait_exit(60) == 0
    wait_until(lambda: supervisor.events("supervisor.stopping"), 10)


def test_user_signals_are_ignored_and_quit_is_a_graceful_stop(plain: Deployment) -> None:
    """Before: SIGUSR1, SIGUSR2, SIGALRM and SIGQUIT killed the parent at once (exit 138, 140, 142, 131) without a
    line; its children died with it, their last records lost and their rows left ``running``."""
    supervisor = plain.start()
    supervisor.wait_event("supervisor.started", timeout=60)
    for signo in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM):
        supervisor.signal(signo)
    time.sleep(1)  # a poll and more: the loop turned with them delivered
    assert supervisor.popen.poll() is None
    supervisor.signal(signal.SIGQUIT)
    assert supervisor.wait_exit(60) == 0
    assert supervisor.events("supervisor.stopped")
