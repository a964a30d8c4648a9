"""A supervisor whose log reader stops reading (its stderr a pipe nobody reads: a stopped ``tail``, a hung
process manager) keeps supervising and obeys SIGTERM: its loop never waits on the log (``log_writer``)."""

from __future__ import annotations

import fcntl
import struct
import subprocess
import termios
import time

from tests.helpers.cli import CLI
from tests.helpers.deployment import Deployment
from tests.helpers.waiting import wait_until

F_SETPIPE_SZ = 1031
PIPE_BYTES = 4096  # the smallest a pipe can be


def unread_bytes(fd: int) -> int:
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


def test_sigterm_stops_a_supervisor_whose_log_nobody_reads(deployment: Deployment) -> None:
    deployment.logging = {"level": "DEBUG", "format": "json", "file": "-"}
    deployment.write_config()
    deployment.cli("init-db")
    for slug in ("chatty-1", "quiet-1", "quiet-2"):  # chatty: 300 lines with tracebacks as it stops
        deployment.add_tenant(slug)
    process = subprocess.Popen(
        [*CLI, "-c", str(deployment.config), "run"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=deployment.env(), start_new_session=True,
    )  # fmt: skip
    assert process.stderr is not None
    try:
        fcntl.fcntl(process.stderr.fileno(), F_SETPIPE_SZ, PIPE_BYTES)
        # Its first line is in the pipe, and the pipe (one page) takes little more: the chatty child's 300 lines at
        # stop overflow it, and a blocking write of the parent would then hold its loop for good.
        wait_until(lambda: unread_bytes(process.stderr.fileno()) > 0, 60, "the supervisor's first line")
        time.sleep(2)  # its children start
        process.terminate()
        code = process.wait(60)
    finally:
        if process.poll() is None:
            subprocess.run(["pkill", "-KILL", "-s", str(process.pid)], check=False)
            process.wait(10)
        process.stderr.close()
    assert code == 0
