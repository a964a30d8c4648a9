"""Which process an instance or child row names (``process_identity``, ``instances.process_alive``), on real
processes: a wall-clock step (start times in wall-clock seconds move with it) and another machine or PID namespace
with our hostname (same PIDs, other processes) no longer make a live peer look dead."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from supervisor import process_identity
from supervisor.clock import utcnow
from supervisor.parent import instances
from supervisor.parent.instances import InstanceIdentity, process_alive, take_over_dead_peers
from supervisor.storage.engine import make_engine
from supervisor.storage.migrations import upgrade_system
from supervisor.storage.system_schema import supervisor_instances

HOST = socket.gethostname()


def test_a_live_process_is_alive_by_its_key_after_a_wall_clock_step() -> None:
    me = os.getpid()
    key = process_identity.key(me)
    assert key is not None and process_identity.same_process_runs(key, me) is True
    stepped = utcnow() - dt.timedelta(minutes=5)  # the clock stepped 5 minutes ahead since this process started
    assert process_alive(HOST, me, stepped, key) is True
    assert process_alive(HOST, me, stepped) is False  # by start time alone: taken for a reused PID


def test_an_exited_or_reused_pid_is_dead_and_another_machine_cannot_tell() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    key = process_identity.key(child.pid)
    assert key is not None and process_alive(HOST, child.pid, utcnow(), key) is True
    child.kill()
    child.wait()
    assert process_alive(HOST, child.pid, utcnow(), key) is False
    space, _, ticks = key.rpartition("/")
    assert process_alive(HOST, os.getpid(), utcnow(), f"{space}/{int(ticks) + 1}") is False  # a reused PID
    other_boot = "0" * 8 + space[8:]
    assert process_alive(HOST, os.getpid(), utcnow(), f"{other_boot}/{ticks}") is None  # same hostname, other host


def test_a_peer_with_our_hostname_on_another_machine_is_not_taken_over(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/system.db")
    upgrade_system(engine)
    now = utcnow()
    space = process_identity.namespace()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone_key = process_identity.key(gone.pid)
    gone.wait()
    rows = [
        ("elsewhere", 999_999, f"0{space[1:]}/123"),  # a cloned VM or a container: our hostname, its own PIDs
        ("crashed", gone.pid, gone_key),  # this machine, its process gone
    ]
    with engine.begin() as conn:
        for instance_id, pid, key in rows:
            conn.execute(supervisor_instances.insert().values(
                id=instance_id, host=HOST, pid=pid, started_at=now, heartbeat_at=now, status="running",
                process_key=key,
            ))  # fmt: skip
        me = InstanceIdentity("me", HOST, os.getpid(), process_identity.key(os.getpid()))
        assert take_over_dead_peers(conn, me, now) == ["crashed"]
    with engine.connect() as conn:
        status = dict(conn.execute(select(supervisor_instances.c.id, supervisor_instances.c.status)).all())
    assert status == {"elsewhere": instances.RUNNING, "crashed": instances.GONE}
    engine.dispose()
