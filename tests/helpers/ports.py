"""Local TCP ports for the servers tests start, safe with several pytest-xdist workers running at once.

Probing for a free port and using it later is a race: two workers probing at the same moment both find the
same port free, one simulator then cannot listen (a real failure: an empty "ready" line). So each worker
owns a block of its own: ``PORT_RANGE`` is cut into ``PYTEST_XDIST_WORKER_COUNT`` equal blocks and worker
``gwN`` takes block N (without xdist: the whole range). Within its block a worker hands out ports in turn
from a random starting point, never one it handed out before until the block wraps, and skips any port it
cannot bind right now (a program on this machine, or another test run of someone else). A port can still be
taken between the check and the server's bind by such an outsider: the server then fails to listen and
``Simulator.start`` retries with fresh ports.

The range lies below the kernel's ephemeral ports (32768+ on Linux, so no outgoing connection sits on one)
and apart from the range the ``demo`` command (20000-32000) picks from. Every test under ``tests/`` takes its
ports here: ``free_ports`` for any ports, ``free_port_run`` for consecutive ones (a ``--base-port`` fleet).
"""

from __future__ import annotations

import os
import random
import socket

PORT_RANGE = range(10000, 15000)


def worker_block(worker: str | None = None, worker_count: str | None = None) -> range:
    """This worker's own ports: block N of ``PORT_RANGE`` for ``gwN`` of the run's workers."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "") if worker is None else worker
    worker_count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "") if worker_count is None else worker_count
    if not (worker.startswith("gw") and worker[2:].isdigit() and worker_count.isdigit()):
        return PORT_RANGE
    count, index = max(1, int(worker_count)), int(worker[2:])
    size = len(PORT_RANGE) // count
    start = PORT_RANGE.start + (index % count) * size
    return range(start, start + size)


class PortAllocator:
    """Hands out the ports of one block in turn, each one bindable on 127.0.0.1 when handed out."""

    def __init__(self, block: range, rng: random.Random | None = None) -> None:
        self.block = block
        self._next = (rng or random.Random()).randrange(len(block))

    def take(self, count: int) -> list[int]:
        ports: list[int] = []
        for _ in range(len(self.block)):
            if len(ports) == count:
                return ports
            port = self.block[self._next]
            self._next = (self._next + 1) % len(self.block)
            if bindable(port):
                ports.append(port)
        if len(ports) == count:
            return ports
        raise RuntimeError(f"only {len(ports)} of {count} ports free in {self.block}")

    def take_run(self, count: int) -> range:
        """``count`` consecutive ports of the block, each bindable now, from where ``take`` would go on."""
        for _ in range(len(self.block)):
            start = self._next
            self._next = (self._next + 1) % len(self.block)
            if start + count > len(self.block):
                continue  # a run does not wrap around the block's end
            run = self.block[start:start + count]
            if all(bindable(port) for port in run):
                self._next = (start + count) % len(self.block)
                return run
        raise RuntimeError(f"no {count} consecutive ports free in {self.block}")


def bindable(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind: TIME_WAIT is no owner
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


_allocator: PortAllocator | None = None


def _worker_allocator() -> PortAllocator:
    global _allocator
    if _allocator is None:
        _allocator = PortAllocator(worker_block())
    return _allocator


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports of this worker's block, free right now."""
    return _worker_allocator().take(count)


def free_port_run(count: int) -> range:
    """``count`` consecutive ports of this worker's block, free right now."""
    return _worker_allocator().take_run(count)
