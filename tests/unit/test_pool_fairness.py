"""The jobs of servers whose last collection failed wait behind the others and never hold the pool's last
``reserved`` threads: a tenant with half its servers behind a dead link had every thread held by their timeouts,
and its healthy servers missed 70 % of their slots (a probe with ``tc``-shaped links, 100 + 100 servers)."""

from __future__ import annotations

import threading
import time

from supervisor.children.pool import CollectionPool
from tests.helpers.waiting import wait_until


def test_suspect_jobs_never_take_the_reserved_threads_and_come_after_the_others() -> None:
    pool = CollectionPool(5, name="t")
    assert pool.reserved == 1
    stuck = threading.Event()
    running: list[int] = []
    lock = threading.Lock()

    def suspect(n: int) -> None:
        with lock:
            running.append(n)
        stuck.wait(10)

    for n in range(8):
        pool.submit(lambda n=n: suspect(n), suspect=True)
    wait_until(lambda: len(running) == 4, 5, "four suspect jobs running")
    time.sleep(0.1)
    assert len(running) == 4, "a suspect job took the reserved thread"

    healthy_done = threading.Event()
    started = time.monotonic()
    pool.submit(healthy_done.set)
    assert healthy_done.wait(5), "a healthy job waited behind the suspect ones"
    assert time.monotonic() - started < 1.0

    stuck.set()
    wait_until(lambda: len(running) == 8, 5, "the queued suspect jobs ran once threads were free")
    pool.shutdown()


def test_a_pool_of_one_runs_suspect_jobs_too() -> None:
    pool = CollectionPool(1, name="t")
    assert pool.reserved == 0
    done = threading.Event()
    pool.submit(done.set, suspect=True)
    assert done.wait(5)
    pool.shutdown()


def test_healthy_jobs_queued_before_run_before_suspect_ones_queued_before() -> None:
    pool = CollectionPool(2, name="t")  # one thread for suspect jobs, one reserved
    hold = threading.Event()
    pool.submit(lambda: hold.wait(10))  # a healthy job holds one thread
    pool.submit(lambda: hold.wait(10), suspect=True)  # a suspect one the other
    order: list[str] = []
    pool.submit(lambda: order.append("suspect"), suspect=True)
    pool.submit(lambda: order.append("healthy"))
    hold.set()
    wait_until(lambda: len(order) == 2, 5, "both ran")
    assert order == ["healthy", "suspect"]
    pool.shutdown()
