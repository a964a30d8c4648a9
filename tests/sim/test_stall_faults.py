"""The stall / ignore_attention faults: fleet validation, changes on SIGHUP, and no session or task
left behind in the simulator once a stalled client goes (checked in-process)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from sqlserver_sim import login, packets
from sqlserver_sim.faults import STALL_PHASES, Faults
from sqlserver_sim.fleet import FleetError, parse_fleet
from sqlserver_sim.server import FleetRunner
from sqlserver_sim.tls import CertificateStore
from tests.helpers.ports import free_ports
from tests.helpers.simulator import SIM_PASSWORD, SIM_USER, StartSimulator
from tests.helpers.waiting import wait_until
from tests.sim import rawtds
from tests.sim.stallkit import PROCEDURE, QUIET_S, assert_ok_answers, logged_in


def faults_of(faults: dict[str, Any], **server: Any) -> Faults:
    fleet = parse_fleet({"servers": [{"name": "a", "port": 15000, **server, "faults": faults}]})
    return fleet.servers[0].faults


# Fleet validation


def test_stall_and_ignore_attention_default_off() -> None:
    assert faults_of({}) == Faults()
    assert Faults().stall is None and Faults().ignore_attention is False


@pytest.mark.parametrize("phase", [p for p in STALL_PHASES if p != "tls"])
def test_every_stall_phase_is_accepted(phase: str) -> None:
    assert faults_of({"stall": phase}).stall == phase
    assert faults_of({"stall": None}).stall is None


def test_tls_stall_needs_a_tls_server() -> None:
    assert faults_of({"stall": "tls"}, tls=True).stall == "tls"
    with pytest.raises(FleetError, match=r"servers\[0\]\.faults\.stall: 'tls' needs"):
        faults_of({"stall": "tls"})


@pytest.mark.parametrize("value", ["hang", "", "QUERY", 1, True, ["query"], {"phase": "query"}])
def test_unknown_stall_value_is_a_fleet_error_naming_the_key(value: object) -> None:
    with pytest.raises(FleetError, match=r"^servers\[0\]\.faults\.stall: expected null or one of 'connect'"):
        faults_of({"stall": value})


@pytest.mark.parametrize("value", [1, "yes", None])
def test_ignore_attention_must_be_a_bool(value: object) -> None:
    assert faults_of({"ignore_attention": True}).ignore_attention is True
    with pytest.raises(FleetError, match=r"^servers\[0\]\.faults\.ignore_attention: expected true or false"):
        faults_of({"ignore_attention": value})


def test_stall_from_defaults_is_merged_and_checked() -> None:
    document = {"defaults": {"faults": {"stall": "login"}},
                "servers": [{"name": "a", "port": 15000}, {"name": "b", "port": 15001, "faults": {"stall": None}}]}
    assert [s.faults.stall for s in parse_fleet(document).servers] == ["login", None]
    document["defaults"] = {"faults": {"stall": "tls"}}
    with pytest.raises(FleetError, match=r"servers\[0\]\.faults\.stall"):
        parse_fleet(document)


# Changes at run time (SIGHUP)


def connect_outcome(port: int, timeout: float = 1.0) -> str:
    try:
        socket.create_connection((rawtds.HOST, port), timeout=timeout).close()
    except TimeoutError:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    return "accepted"


def test_query_stall_switched_on_and_off_by_sighup(simulator: StartSimulator) -> None:
    sim = simulator([{"name": "a"}, {"name": "ok"}])
    before = logged_in(sim, "a")  # a session opened before the change
    sim.set_faults("a", stall="query")
    assert "1 changed" in sim.stderr_lines[-1]
    before.send(packets.RPC, rawtds.rpc_payload(PROCEDURE))  # a new request of an old session stalls
    assert before.read_available(QUIET_S) == b""
    after = logged_in(sim, "a")  # new sessions log in, then the collection stalls
    after.send(packets.RPC, rawtds.rpc_payload(PROCEDURE))
    assert after.read_available(QUIET_S) == b""
    assert_ok_answers(sim)
    sim.set_faults("a", stall=None)
    fresh = logged_in(sim, "a")
    fresh.send(packets.RPC, rawtds.rpc_payload(PROCEDURE))
    assert fresh.read_message()[1][-13] == 0xFE  # answered in full, up to its DONEPROC
    assert before.read_available(QUIET_S) == b""  # stalled sessions stay stalled
    for client in (before, after, fresh):
        client.close()


def test_connect_and_login_stalls_switched_by_sighup_affect_new_connections_only(
        simulator: StartSimulator) -> None:
    sim = simulator([{"name": "a"}, {"name": "ok"}])
    port = sim.ports["a"]
    old = logged_in(sim, "a")
    sim.set_faults("a", stall="connect")
    assert connect_outcome(port) == "timeout"
    old.send(packets.SQL_BATCH, rawtds.batch_payload("SELECT 1"))  # the open session still works
    assert old.read_message()[0] == packets.TABULAR_RESULT
    assert_ok_answers(sim)
    sim.set_faults("a", stall="login")
    assert connect_outcome(port) == "accepted"
    client = rawtds.RawClient(port)
    client.prelogin()
    client.send(packets.LOGIN7, rawtds.login7_payload(SIM_USER, SIM_PASSWORD))
    assert client.read_available(QUIET_S) == b""
    sim.set_faults("a", stall=None)
    logged_in(sim, "a").close()
    assert client.read_available(0.1) == b""  # the stalled login stays stalled
    sim.set_faults("a", down=True, stall="connect")  # down wins: refused; stalled sessions dropped
    assert connect_outcome(port) == "refused"
    with pytest.raises(ConnectionError):
        client.read_available(2)
    sim.set_faults("a", down=False)  # faults {"stall": "connect"} again
    assert connect_outcome(port) == "timeout"
    assert_ok_answers(sim)
    old.close()


def test_ignore_attention_switched_by_sighup(simulator: StartSimulator) -> None:
    sim = simulator([{"name": "a"}])
    client = logged_in(sim, "a")
    sim.set_faults("a", ignore_attention=True)
    client.attention()
    assert client.read_available(QUIET_S) == b""
    sim.set_faults("a", ignore_attention=False)  # no fault again
    client.attention()
    assert rawtds.is_attention_ack(client.read_message()[1])
    client.close()


# In-process: nothing left behind


class InProcessFleet:
    """A FleetRunner on an event loop in a thread, so that its sessions and tasks can be counted."""

    def __init__(self, servers: list[dict[str, Any]], cert_dir: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner = FleetRunner(CertificateStore(cert_dir))
        self.servers = servers
        for _attempt in range(5):  # a port of this worker's may be taken by an outsider meanwhile: fresh ones
            self.ports = dict(zip([s["name"] for s in servers], free_ports(len(servers)), strict=True))
            if not self.apply().errors:
                return
            self.call(self.runner.stop())
            self.runner.servers.clear()
        raise RuntimeError("no free ports")

    def apply(self) -> Any:
        entries = [{"port": self.ports[s["name"]], "user": SIM_USER, "password": SIM_PASSWORD, **s}
                   for s in self.servers]
        specs = parse_fleet({"servers": entries}).servers
        return self.call(self.runner.apply(specs))

    def call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    def tasks(self) -> int:
        async def count() -> int:
            return len(asyncio.all_tasks()) - 1  # not this one
        return int(self.call(count()))

    def sessions(self, name: str) -> int:
        return len(self.runner.servers[name].sessions)

    def close(self) -> None:
        self.call(self.runner.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def in_process(tmp_path: Path) -> Iterator[InProcessFleet]:
    fleet = InProcessFleet([{"name": phase, "tls": phase == "tls", "faults": {"stall": phase}}
                            for phase in STALL_PHASES if phase != "connect"] + [{"name": "ok"}], tmp_path)
    yield fleet
    fleet.close()


def stalled_client(fleet: InProcessFleet, phase: str) -> rawtds.RawClient:
    """A raw client driven into the stall of ``phase``, with an ATTENTION sent."""
    client = rawtds.RawClient(fleet.ports[phase])
    if phase == "prelogin":
        client.send(packets.PRELOGIN, rawtds.prelogin_payload())
    elif phase == "tls":
        client.prelogin(login.ENCRYPT_ON)
        client.send(packets.PRELOGIN, client.client_hello())
    elif phase == "login":
        client.prelogin()
        client.send(packets.LOGIN7, rawtds.login7_payload(SIM_USER, SIM_PASSWORD))
    else:
        client.login(SIM_USER, SIM_PASSWORD)
        client.send(packets.RPC, rawtds.rpc_payload(PROCEDURE))
        if phase != "query":
            assert client.read_available(QUIET_S)  # the part let through
    client.attention()
    assert client.read_available(QUIET_S) == b""
    return client


@pytest.mark.parametrize("phase", [p for p in STALL_PHASES if p != "connect"])
def test_stalled_session_is_cleaned_up_when_the_client_closes(in_process: InProcessFleet, phase: str) -> None:
    baseline = in_process.tasks()
    client = stalled_client(in_process, phase)
    assert in_process.sessions(phase) == 1 and in_process.tasks() > baseline
    client.close()
    wait_until(lambda: in_process.sessions(phase) == 0 and in_process.tasks() == baseline, 5,
               lambda: repr((in_process.sessions(phase), in_process.tasks(), baseline)), 0.02)


def test_stalled_sessions_are_dropped_when_their_server_goes_down(in_process: InProcessFleet) -> None:
    baseline = in_process.tasks()
    clients = [stalled_client(in_process, phase) for phase in ("login", "mid_result")]
    for server in in_process.servers:
        if server["name"] in ("login", "mid_result"):
            server["faults"] = {**server["faults"], "down": True}
    in_process.apply()
    for client in clients:
        with pytest.raises(ConnectionError):
            client.read_available(2)
        client.close()
    wait_until(lambda: in_process.tasks() == baseline, 5, "the tasks of the dropped sessions to end", 0.02)
    ok = rawtds.RawClient(in_process.ports["ok"])
    ok.login(SIM_USER, SIM_PASSWORD)
    ok.close()
