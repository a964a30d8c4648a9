"""Shared by the stall tests: the stall fleet, a simulator fixture body, raw-socket helpers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sqlserver_sim import packets
from tests.helpers.simulator import SIM_PASSWORD, SIM_USER, Simulator
from tests.helpers.waiting import wait_until
from tests.sim import rawtds

PROCEDURE = "collector.usp_collect_snapshot"
PROCEDURE_CALL = f"{{CALL {PROCEDURE}}}"
QUIET_S = 0.5
SERVERS: list[dict[str, Any]] = [
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


def stall_simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    """Body of a module-scoped ``sim`` fixture: the SERVERS fleet in a simulator process."""
    simulator = Simulator(Path(tmp_path_factory.mktemp("stalls")), [dict(s) for s in SERVERS])
    simulator.start()
    yield simulator
    assert simulator.stop() == 0


def assert_ok_answers(sim: Simulator, name: str = "ok") -> None:
    """Another server of the same simulator logs in and answers, at once."""
    started = time.monotonic()
    client = rawtds.RawClient(sim.ports[name], timeout=2)
    try:
        client.login(SIM_USER, SIM_PASSWORD)
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
    wait_until(lambda: not rawtds.server_side_open(client.port, local_port), 5, "session leaked", 0.02)


def logged_in(sim: Simulator, name: str) -> rawtds.RawClient:
    client = rawtds.RawClient(sim.ports[name])
    client.login(SIM_USER, SIM_PASSWORD)
    client.send(packets.SQL_BATCH, rawtds.batch_payload("SELECT @@VERSION"))
    _type, payload = client.read_message()
    assert "Microsoft SQL Server".encode("utf-16-le") in payload
    return client
