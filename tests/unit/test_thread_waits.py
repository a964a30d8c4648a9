"""``thread_waits.blocked_fds`` on real threads of this process, each blocked in one kind of system call."""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from supervisor.children.thread_waits import blocked_fds, still_blocked
from tests.helpers.waiting import wait_until


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    made = [socket.socketpair() for _ in range(3)]
    yield made
    for a, b in made:
        a.close()
        b.close()


def blocked_in(call: Callable[[], object], expected: set[int]) -> tuple[threading.Thread, int, list[int]]:
    """Run ``call`` on a thread until it blocks on ``expected``: the thread, its native id, what blocked_fds says."""
    ids: list[int] = []
    thread = threading.Thread(target=lambda: (ids.append(threading.get_native_id()), call()), daemon=True)
    thread.start()
    wait_until(lambda: ids and set(blocked_fds(ids[0])) == expected, 5, f"the thread to block on {expected}")
    return thread, ids[0], blocked_fds(ids[0])


def test_a_receive_names_its_socket(pairs: list[tuple[socket.socket, socket.socket]]) -> None:
    a, b = pairs[0]
    thread, thread_id, found = blocked_in(lambda: a.recv(1), {a.fileno()})
    assert found == [a.fileno()] and still_blocked(thread_id, found)
    b.send(b"x")
    thread.join(5)
    assert not still_blocked(thread_id, found)  # returned (and gone): nothing to cut any more


def test_poll_names_every_descriptor_it_waits_on(pairs: list[tuple[socket.socket, socket.socket]]) -> None:
    poller = select.poll()
    for a, _ in pairs[:2]:
        poller.register(a, select.POLLIN)
    blocked_in(lambda: poller.poll(), {pairs[0][0].fileno(), pairs[1][0].fileno()})
    pairs[0][1].send(b"x")


def test_select_names_its_read_and_write_sets(pairs: list[tuple[socket.socket, socket.socket]]) -> None:
    blocked_in(lambda: select.select([pairs[0][0], pairs[2][0]], [], []), {pairs[0][0].fileno(), pairs[2][0].fileno()})
    pairs[2][1].send(b"x")


def test_epoll_names_its_targets(pairs: list[tuple[socket.socket, socket.socket]]) -> None:
    epoll = select.epoll()
    epoll.register(pairs[1][0].fileno(), select.EPOLLIN)
    try:
        blocked_in(lambda: epoll.poll(), {pairs[1][0].fileno()})
        pairs[1][1].send(b"x")
    finally:
        epoll.close()


def test_an_unknown_thread_names_nothing() -> None:
    assert blocked_fds(2**31 - 1) == []
