"""Stalls: a server that stops answering in one phase of a connection and never acknowledges ATTENTION.

Raw sockets show exactly what is (not) sent; pyodbc with both drivers shows what a collector meets.
Driver calls that may block run in daemon threads; a test unblocks them by shutting the driver's own
socket down (never by waiting out a driver's long timeout).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyodbc
import pytest

from sqlserver_sim import login, packets, tokens
from sqlserver_sim.requests import ADHOC_BATCH_MARKER
from tests.sim import rawtds
from tests.sim.conftest import PASSWORD, USER, Simulator, connection_string

PROCEDURE = "collector.usp_collect_snapshot"
PROCEDURE_CALL = f"{{CALL {PROCEDURE}}}"
QUIET_S = 0.5
SERVERS = [
    {"name": "ok"},
    {"name": "connect", "faults": {"stall": "connect"}},
    {"name": "prelogin", "faults": {"stall": "prelogin"}},
    {"name": "tls", "tls": True, "faults": {"stall": "tls"}},
    {"name": "login", "faults": {"stall": "login"}},
    {"name": "query", "faults": {"stall": "query"}},
    {"name": "mid_result", "faults": {"stall": "mid_result"}},
    {"name": "before_done", "faults": {"stall": "before_done"}},
    {"name": "deaf", "faults": {"ignore_attention": True}},
    {"name": "slow-deaf", "faults": {"slow_query_ms": 2500, "ignore_attention": True}},
    {"name": "raw-slow-deaf", "faults": {"slow_query_ms": 700, "ignore_attention": True}},
]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    simulator = Simulator(Path(tmp_path_factory.mktemp("stalls")), [dict(s) for s in SERVERS])
    simulator.start()
    yield simulator
    assert simulator.stop() == 0


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def assert_ok_answers(sim: Simulator, name: str = "ok") -> None:
    """Another server of the same simulator logs in and answers, at once."""
    started = time.monotonic()
    client = rawtds.RawClient(sim.port(name), timeout=2)
    try:
        client.login(USER, PASSWORD)
        client.send(packets.SQL_BATCH, rawtds.batch_payload("SELECT @@SERVERNAME"))
        _type, payload = client.read_message(timeout=2)
        assert name.encode("utf-16-le") in payload
    finally:
        client.close()
    assert time.monotonic() - started < 2


def assert_stalled(client: rawtds.RawClient, sim: Simulator) -> None:
    """Nothing comes, not even after an ATTENTION; the socket stays open; other servers answer;
    once the client closes, the server closes its end (the session is gone)."""
    assert client.read_available(QUIET_S) == b""
    client.attention()
    assert client.read_available(QUIET_S) == b"", "ATTENTION was answered"
    assert_ok_answers(sim)
    assert client.read_available(0.1) == b""  # still open: read_available raises on a closed socket
    local_port = client.local_port
    assert rawtds.server_side_open(client.port, local_port)
    client.close()
    assert wait_until(lambda: not rawtds.server_side_open(client.port, local_port)), "session leaked"


def logged_in(sim: Simulator, name: str) -> rawtds.RawClient:
    client = rawtds.RawClient(sim.port(name))
    client.login(USER, PASSWORD)
    client.send(packets.SQL_BATCH, rawtds.batch_payload("SELECT @@VERSION"))
    _type, payload = client.read_message()
    assert "Microsoft SQL Server".encode("utf-16-le") in payload
    return client


# Raw sockets: each phase


def test_connect_stall_times_out_not_refused_not_accepted(sim: Simulator) -> None:
    outcome: list[BaseException | str] = []

    def connect() -> None:
        try:
            socket.create_connection((rawtds.HOST, sim.port("connect")), timeout=2).close()
            outcome.append("accepted")
        except OSError as exc:
            outcome.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    assert_ok_answers(sim)
    thread.join(5)
    assert len(outcome) == 1 and isinstance(outcome[0], TimeoutError), outcome
    assert time.monotonic() - started >= 1.9


def test_prelogin_stall_reads_prelogin_never_answers(sim: Simulator) -> None:
    client = rawtds.RawClient(sim.port("prelogin"))
    client.send(packets.PRELOGIN, rawtds.prelogin_payload())
    assert_stalled(client, sim)


def test_tls_stall_answers_prelogin_with_encryption_then_not_the_client_hello(sim: Simulator) -> None:
    client = rawtds.RawClient(sim.port("tls"))
    assert client.prelogin(login.ENCRYPT_ON)[login.PL_ENCRYPTION] == bytes((login.ENCRYPT_ON,))
    client.send(packets.PRELOGIN, client.client_hello())
    assert_stalled(client, sim)


def test_tls_stall_does_not_answer_a_strict_client_hello(sim: Simulator) -> None:
    client = rawtds.RawClient(sim.port("tls"))
    client.sock.sendall(client.client_hello())  # TDS 8.0: TLS from the first byte
    assert_stalled(client, sim)


def test_login_stall_answers_prelogin_not_login7(sim: Simulator) -> None:
    client = rawtds.RawClient(sim.port("login"))
    assert client.prelogin()[login.PL_ENCRYPTION] == bytes((login.ENCRYPT_NOT_SUP,))
    client.send(packets.LOGIN7, rawtds.login7_payload(USER, PASSWORD))
    assert_stalled(client, sim)


def test_query_stall_answers_login_and_probes_not_the_collection(sim: Simulator) -> None:
    client = logged_in(sim, "query")
    client.send(packets.RPC, rawtds.rpc_payload("sp_datatype_info_100"))  # a probe: answered (an error)
    assert client.read_message()[0] == packets.TABULAR_RESULT
    client.send(packets.RPC, rawtds.rpc_payload(PROCEDURE))
    assert client.read_available(QUIET_S) == b""
    client.send(packets.SQL_BATCH, rawtds.batch_payload("SELECT 1"))  # nothing more is answered
    assert_stalled(client, sim)


def test_query_stall_also_for_the_adhoc_batch_and_exec(sim: Simulator) -> None:
    for text in (f"{ADHOC_BATCH_MARKER}\nSELECT 1", f"EXEC {PROCEDURE}"):
        client = logged_in(sim, "query")
        client.send(packets.SQL_BATCH, rawtds.batch_payload(text))
        assert_stalled(client, sim)


def read_partial_response(client: rawtds.RawClient) -> bytes:
    data = client.read_available(QUIET_S)
    payload, statuses = rawtds.unframe(data)
    assert payload and not any(status & packets.STATUS_EOM for status in statuses), statuses
    return payload


def test_mid_result_stall_sends_the_first_result_set_only(sim: Simulator) -> None:
    client = logged_in(sim, "mid_result")
    client.send(packets.RPC, rawtds.rpc_payload(PROCEDURE))
    payload = read_partial_response(client)
    assert payload[0] == tokens.COLMETADATA
    assert "mid_result".encode("utf-16-le") in payload  # the instance row
    status, _cmd, rows = struct.unpack_from("<HHQ", payload, len(payload) - 12)
    assert payload[-13] == tokens.DONEINPROC and status & tokens.DONE_MORE and rows == 1
    assert "PAGEIOLATCH_SH".encode("utf-16-le") not in payload  # the waits set, the last one
    assert_stalled(client, sim)


def test_before_done_stall_sends_every_set_but_not_the_final_doneproc(sim: Simulator) -> None:
    client = logged_in(sim, "before_done")
    client.send(packets.RPC, rawtds.rpc_payload(PROCEDURE))
    payload = read_partial_response(client)
    assert "PAGEIOLATCH_SH".encode("utf-16-le") in payload  # the waits set, the last one
    assert payload[-5:] == bytes((tokens.RETURNSTATUS,)) + bytes(4)  # what precedes DONEPROC
    assert_stalled(client, sim)


# ignore_attention


def test_ignore_attention_never_acks_but_still_answers(sim: Simulator) -> None:
    for name, acked in (("ok", True), ("deaf", False)):
        client = logged_in(sim, name)
        client.attention()  # on an idle connection
        reply = client.read_available(QUIET_S)
        assert rawtds.is_attention_ack(rawtds.unframe(reply)[0]) == acked, (name, reply)
        client.send(packets.SQL_BATCH, rawtds.batch_payload("SELECT 1"))
        assert not rawtds.is_attention_ack(client.read_message()[1])
        client.close()


def test_ignore_attention_with_slow_query_answers_in_full_without_ack(sim: Simulator) -> None:
    client = logged_in(sim, "raw-slow-deaf")
    started = time.monotonic()
    client.send(packets.RPC, rawtds.rpc_payload(PROCEDURE))
    time.sleep(0.1)
    client.attention()
    _type, payload = client.read_message(timeout=5)
    assert time.monotonic() - started >= 0.6  # the slow query was not cut short
    assert payload[-13] == tokens.DONEPROC and not rawtds.is_attention_ack(payload)
    assert "PAGEIOLATCH_SH".encode("utf-16-le") in payload
    assert client.read_available(QUIET_S) == b""  # and no ack after it either
    client.close()


# Drivers


def driver_connection_string(sim: Simulator, driver: str, name: str) -> str:
    text = connection_string(driver, sim.port(name))
    if name == "tls":
        return (text.replace("Encrypt=no", "Encrypt=yes;TrustServerCertificate=yes") if driver == "msodbc18"
                else text + ";Encryption=require")
    return text


def assert_driver_answers(sim: Simulator, driver: str, name: str = "ok") -> None:
    connection = pyodbc.connect(connection_string(driver, sim.port(name)), timeout=5)
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
        assert rawtds.shut_down_own_sockets_to(sim.port(name)) >= 1
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
        assert wait_until(lambda: rawtds.server_side_connections(sim.port(phase)) == 0), "session leaked"


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
    connection = pyodbc.connect(connection_string(driver, sim.port(phase)), timeout=5)
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
    assert wait_until(lambda: rawtds.server_side_connections(sim.port(phase)) == 0), "session leaked"


def test_driver_slow_query_that_ignores_the_cancel(sim: Simulator, driver: str) -> None:
    connection = pyodbc.connect(connection_string(driver, sim.port("slow-deaf")), timeout=5)
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
