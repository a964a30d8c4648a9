"""The test helpers' port allocation: disjoint blocks per xdist worker, no port handed out twice, busy ones skipped."""

from __future__ import annotations

import random
import socket

import pytest

from tests.helpers.ports import PORT_RANGE, PortAllocator, worker_block


def test_each_worker_of_a_run_owns_a_block_of_its_own() -> None:
    blocks = [worker_block(f"gw{n}", "4") for n in range(4)]
    for i, block in enumerate(blocks):
        assert len(block) == len(PORT_RANGE) // 4 and set(block) <= set(PORT_RANGE)
        for other in blocks[i + 1 :]:
            assert not set(block) & set(other)
    assert worker_block("", "") == PORT_RANGE  # no xdist: the whole range
    assert max(PORT_RANGE) < 15000  # apart from tests/sim (15000+), the demo (20000+), ephemeral ports (32768+)


def test_a_worker_never_hands_out_a_port_twice_until_its_block_wraps() -> None:
    # Outside PORT_RANGE: ports of its blocks may be in use by the other workers meanwhile (then skipped, and the
    # block wraps sooner than this test expects).
    allocator = PortAllocator(range(8700, 8750), random.Random(5))
    taken = allocator.take(20) + allocator.take(20)
    assert len(set(taken)) == 40 and all(8700 <= port < 8750 for port in taken)


def test_a_port_someone_listens_on_is_never_handed_out() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        busy = listener.getsockname()[1]
        with pytest.raises(RuntimeError, match="only 0 of 1 ports free"):
            PortAllocator(range(busy, busy + 1)).take(1)
    assert PortAllocator(range(busy, busy + 1)).take(1) == [busy]  # free again once closed
