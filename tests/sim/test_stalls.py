"""Stalls seen through raw sockets: a server that stops answering in one phase of a connection and
never acknowledges ATTENTION; and ignore_attention. Exactly what is (not) sent, and when."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from sqlserver_sim import login, packets, tokens
from sqlserver_sim.requests import ADHOC_BATCH_MARKER
from tests.helpers.simulator import SIM_PASSWORD, SIM_USER, Simulator
from tests.sim import rawtds
from tests.sim.stallkit import PROCEDURE, QUIET_S, assert_ok_answers, assert_stalled, logged_in, stall_simulator


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    yield from stall_simulator(tmp_path_factory)


# Raw sockets: each phase


def test_connect_stall_times_out_not_refused_not_accepted(sim: Simulator) -> None:
    outcome: list[BaseException | str] = []

    def connect() -> None:
        try:
            socket.create_connection((rawtds.HOST, sim.ports["connect"]), timeout=2).close()
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
    client = rawtds.RawClient(sim.ports["prelogin"])
    client.send(packets.PRELOGIN, rawtds.prelogin_payload())
    assert_stalled(client, sim)


def test_tls_stall_answers_prelogin_with_encryption_then_not_the_client_hello(sim: Simulator) -> None:
    client = rawtds.RawClient(sim.ports["tls"])
    assert client.prelogin(login.ENCRYPT_ON)[login.PL_ENCRYPTION] == bytes((login.ENCRYPT_ON,))
    client.send(packets.PRELOGIN, client.client_hello())
    assert_stalled(client, sim)


def test_tls_stall_does_not_answer_a_strict_client_hello(sim: Simulator) -> None:
    client = rawtds.RawClient(sim.ports["tls"])
    client.sock.sendall(client.client_hello())  # TDS 8.0: TLS from the first byte
    assert_stalled(client, sim)


def test_login_stall_answers_prelogin_not_login7(sim: Simulator) -> None:
    client = rawtds.RawClient(sim.ports["login"])
    assert client.prelogin()[login.PL_ENCRYPTION] == bytes((login.ENCRYPT_NOT_SUP,))
    client.send(packets.LOGIN7, rawtds.login7_payload(SIM_USER, SIM_PASSWORD))
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
