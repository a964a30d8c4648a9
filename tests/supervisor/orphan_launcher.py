"""A parent that dies right after forking a tenant child, before the child runs: ``python -m
tests.supervisor.orphan_launcher CONFIG TENANT`` prints the child's pid, then SIGKILLs itself.

The child waits until it has been re-parented (its parent is dead) and only then enters the real child
entry (``run_child``): the window in which a supervisor SIGKILLed mid-fork leaves a child behind.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from multiprocessing.connection import Connection

from supervisor import databases
from supervisor.config import load_settings
from supervisor.ipc import ChildSpec
from supervisor.parent.fork import run_child
from supervisor.tenants import get_tenant


def enter_late(spec: ChildSpec, conn: Connection, launcher_pid: int) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):  # the test reads the launcher's output to its end
        os.dup2(devnull, fd)
    while os.getppid() == launcher_pid:
        time.sleep(0.01)
    run_child(spec, conn, [], [])


def main(config: str, slug: str) -> None:
    settings = load_settings(config)
    tenant = get_tenant(databases.system_engine(settings), slug)
    spec = ChildSpec(
        tenant_id=tenant.id, slug=tenant.slug, db_url=databases.tenant_url(settings, tenant),
        instance_id=f"orphan-launcher-{os.getpid()}", settings=settings,
    )  # fmt: skip
    _reader, child_end = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.get_context("fork").Process(target=enter_late, args=(spec, child_end, os.getpid()))
    process.start()
    print(process.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
