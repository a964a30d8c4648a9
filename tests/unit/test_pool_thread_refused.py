"""The pool when the system refuses a thread ("can't start new thread": a cgroup's pids.max, RLIMIT_NPROC). Before,
the RuntimeError left ``submit`` and crashed the child (7 restarts a minute, 149 of 200 servers never collected)."""

from __future__ import annotations

import logging
import threading

import pytest

from supervisor.children.pool import CollectionPool


def test_jobs_wait_for_the_threads_there_are_and_the_refusal_is_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pool = CollectionPool(4, name="collect-acme")
    release = threading.Event()
    done: list[int] = []
    pool.submit(lambda: (release.wait(10), done.append(0)))  # the one thread there will be
    real_start = threading.Thread.start

    def refuse(thread: threading.Thread) -> None:
        if thread.name.startswith("collect-acme"):
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", refuse)
    with caplog.at_level(logging.WARNING, logger="supervisor.child.pool"):
        for i in range(1, 4):
            pool.submit(lambda i=i: done.append(i))  # each finds no idle thread and asks for one
    release.set()
    for _ in range(200):
        if len(done) == 4:
            break
        threading.Event().wait(0.05)
    assert sorted(done) == [0, 1, 2, 3]  # all run, one after the other, on the first thread
    refused = [r for r in caplog.records if getattr(r, "event", None) == "pool.thread_refused"]
    assert len(refused) == 1 and "1 threads collect" in refused[0].getMessage(), [r.getMessage() for r in refused]
    pool.shutdown()
