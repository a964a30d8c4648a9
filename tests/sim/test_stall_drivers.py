"""Stalls met by pyodbc with Microsoft ODBC Driver 18 and with FreeTDS: calls that never complete and
cancels that are never acknowledged. Driver calls that may block run in daemon threads; a test unblocks
them by shutting the driver's own socket down, never by waiting out a driver's long timeout."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pyodbc
import pytest

from tests.helpers.simulator import Simulator
from tests.helpers.waiting import wait_until
from tests.sim import rawtds
from tests.sim.odbc import connection_string
from tests.sim.stallkit import PROCEDURE_CALL, stall_simulator


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    yield from stall_simulator(tmp_path_factory)


def driver_connection_string(sim: Simulator, driver: str, name: str) -> str:
    text = connection_string(driver, sim.ports[name])
    if name == "tls":
        return (text.replace("Encrypt=no", "Encrypt=yes;TrustServerCertificate=yes") if driver == "msodbc18"
                else text + ";Encryption=require")
    return text


def assert_driver_answers(sim: Simulator, driver: str, name: str = "ok") -> None:
    connection = pyodbc.connect(connection_string(driver, sim.ports[name]), timeout=5)
    try:
        assert connection.cursor().execute("SELECT @@SERVERNAME").fetchone()[0] == name
    finally:
        connection.close()


def in_thread(body: Callable[[list[Any]], None]) -> tuple[threading.Thread, list[Any]]:
    events: list[Any] = []

    def run() -> None:
        try:
            body(events)
        except Exception as exc:
            events.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, events


def finish(thread: threading.Thread, sim: Simulator, name: str, wait: float) -> None:
    """Give the driver ``wait`` s to give up on its own, then unblock it through its socket."""
    thread.join(wait)
    if thread.is_alive():
        assert rawtds.shut_down_own_sockets_to(sim.ports[name]) >= 1
        thread.join(5)
    assert not thread.is_alive()


@pytest.mark.parametrize("phase", ["connect", "prelogin", "tls", "login"])
def test_driver_login_never_completes(sim: Simulator, driver: str, phase: str) -> None:
    def body(events: list[Any]) -> None:
        pyodbc.connect(driver_connection_string(sim, driver, phase), timeout=1).close()
        events.append("connected")

    thread, events = in_thread(body)
    time.sleep(0.5)
    assert thread.is_alive(), events  # no answer (a refusal or an error would end FreeTDS's call at once)
    assert_driver_answers(sim, driver)
    finish(thread, sim, phase, wait=2.5)  # Driver 18 ignores the login timeout in the TLS handshake
    assert len(events) == 1 and isinstance(events[0], pyodbc.Error), events
    assert events[0].args[0] in ("HYT00", "08001", "08S01"), events[0]
    if phase != "connect":
        wait_until(lambda: rawtds.server_side_connections(sim.ports[phase]) == 0, 5, "session leaked", 0.02)


def read_sets(cursor: pyodbc.Cursor, events: list[Any]) -> None:
    """Record ("row", set index) per row as it arrives, then "done"."""
    index = 0
    while True:
        if cursor.description is not None:
            while cursor.fetchone() is not None:
                events.append(("row", index))
        index += 1
        if not cursor.nextset():
            events.append("done")
            return


@pytest.mark.parametrize(("phase", "sets_seen"), [("query", set()), ("mid_result", {0}),
                                                  ("before_done", {0, 1, 2, 3})])
def test_driver_collection_stalls_and_the_cancel_is_never_acknowledged(
        sim: Simulator, driver: str, phase: str, sets_seen: set[int]) -> None:
    connection = pyodbc.connect(connection_string(driver, sim.ports[phase]), timeout=5)
    connection.timeout = 1  # the drivers send ATTENTION after 1 s, then wait for its ack
    cursor = connection.cursor()
    assert cursor.execute("SELECT 42").fetchone()[0] == 42  # login and ordinary requests work

    def body(events: list[Any]) -> None:
        try:
            read_sets(cursor.execute(PROCEDURE_CALL), events)
        except pyodbc.Error as exc:
            events.append(exc)
        cursor.close()
        try:  # after an acknowledged cancel the connection stays usable; without the ack it is dead
            events.append(connection.cursor().execute("SELECT 1").fetchone()[0])
        except pyodbc.Error as exc:
            events.append(exc)

    thread, events = in_thread(body)
    time.sleep(0.5)
    assert thread.is_alive()
    assert_driver_answers(sim, driver)
    finish(thread, sim, phase, wait=6)  # both drivers give up waiting for the ack after 2-3.5 s
    connection.close()
    rows = [event for event in events if isinstance(event, tuple)]
    assert {index for _row, index in rows} == sets_seen, events
    assert "done" not in events and len(events) == len(rows) + 2, events
    call_error, next_error = events[-2:]
    assert isinstance(call_error, pyodbc.Error) and call_error.args[0] in ("HYT00", "08S01"), events
    assert isinstance(next_error, pyodbc.Error) and next_error.args[0] == "08S01", events
    wait_until(lambda: rawtds.server_side_connections(sim.ports[phase]) == 0, 5, "session leaked", 0.02)


def test_driver_slow_query_that_ignores_the_cancel(sim: Simulator, driver: str) -> None:
    connection = pyodbc.connect(connection_string(driver, sim.ports["slow-deaf"]), timeout=5)
    connection.timeout = 1
    cursor = connection.cursor()

    def body(events: list[Any]) -> None:
        for statement in (PROCEDURE_CALL, "SELECT 1"):
            try:
                cursor.execute(statement).fetchall()
                events.append("answered")
            except pyodbc.Error as exc:
                events.append(exc.args[0])

    thread, events = in_thread(body)
    finish(thread, sim, "slow-deaf", wait=8)
    connection.close()
    # HYT00: the query timed out; 08S01: the ATTENTION was never acknowledged, the connection is dead
    # (with an acknowledged cancel the next statement works, see test_drivers.py).
    assert events == ["HYT00", "08S01"]
