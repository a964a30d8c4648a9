"""Answers no SQL Server gives, through real pyodbc and both real drivers, from a hostile TDS server
(``tests/sim/hostile_server.py``): each fails that server's collection as ``protocol`` with a message naming
what is wrong, within bounded memory; a tenant child with such a server keeps collecting its other servers."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from sqlalchemy import func, select

from supervisor.children.collect import ServerSession
from supervisor.children.connection_string import Endpoint
from supervisor.children.flights import collect_within_deadline
from supervisor.children.odbc_driver import OdbcDriver, kind_of
from supervisor.children.result_reader import MAX_ROWS
from supervisor.children.targets import Target
from supervisor.procedures.resultsets import WAITS
from supervisor.storage.tenant_schema import metric_snapshots, servers
from tests.helpers.cli import run_cli
from tests.helpers.deployment import Child, TenantDeployment
from tests.helpers.drivers import driver_setting
from tests.helpers.ports import free_ports
from tests.helpers.responders import responder
from tests.helpers.waiting import wait_until
from tests.sim.hostile_server import ROUTE, SCENARIOS, SPECIAL

#: scenario → the collection's whole error message (protocol).
REFUSED = {
    "text_batch_requests": "counters.batch_requests_total is '1000' (str), expected bigint",
    "negative_batch_requests": "counters.batch_requests_total is -1000, expected bigint of 0 or more",
    "negative_connections": "counters.user_connections is -5, expected bigint from 0 to 2147483647",
    "huge_connections": "counters.user_connections is 4611686018427387904, expected bigint from 0 to 2147483647",
    "fraction_connections": "counters.user_connections is 12.75 (float), expected bigint",
    "text_connections": "counters.user_connections is 'forty-two' (str), expected bigint",
    "bit_connections": "counters.user_connections is True (bool), expected bigint",
    "huge_memory": "counters.total_server_memory_kb is 4611686018427387904, expected bigint of at most 2199023255551",
    "float_huge_memory": "counters.total_server_memory_kb is 1e+30, expected bigint of at most 2199023255551",
    "float_infinite_memory": "counters.total_server_memory_kb is inf (float), expected bigint",
    "text_cpu": "cpu.sql_cpu_percent is 'abc' (str), expected int",
    "text_contract": "instance.contract_version is '2' (str), expected int",
    "ancient_time": "sample_time_utc is 0001-01-01 00:00:00, before 2000: check the server's clock",
    "duplicate_waits": "result set 'waits' has wait type 'LCK_M_X' more than once",
    "long_wait_type": f"waits.wait_type has 64 characters, expected nvarchar(60): {'W' * 60!r}… (64 characters)",
    "integer_wait_type": "waits.wait_type is 7 (int), expected nvarchar(60)",
    "text_wait_count": "waits.waiting_tasks_count is 'many' (str), expected bigint",
    "negative_waits": "waits.waiting_tasks_count is -5, expected bigint of 0 or more",
    "invalid_utf16": "server sent invalid UTF-16 in result set 4",
    "error_without_message": "the server reported an error without a message",
}
#: Generous: the capped wait rows (a few MB) and the driver's buffers, far below an unbounded read (the
#: endless server sends some 100 MB of rows per second).
RSS_GROWTH_BOUND = 60 * 1024 * 1024


@pytest.fixture(scope="module")
def hostile() -> Iterator[dict[str, int]]:
    """Every scenario on a port of its own: scenario → port."""
    names = [*SCENARIOS, *SPECIAL, "routed_to_tls_stall"]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    scenarios = {name: name for name in names} | {"routed_to_tls_stall": f"{ROUTE}{ports['tls_stall']}"}
    with responder("tests.sim.hostile_server", *(f"{p}={scenarios[name]}" for name, p in ports.items())):
        yield ports


def session(driver: str, port: int, encrypt: str = "no") -> ServerSession:
    name = driver_setting(driver)
    target = Target(1, "hostile", Endpoint("127.0.0.1", port, "monitor", "pw", encrypt, False), 2.0, "procedure")
    return ServerSession(target, OdbcDriver(name, kind_of(name)), 1.0, keep_connection=False)


def collect(driver: str, port: int, timeout: float = 3.0):  # type: ignore[no-untyped-def]
    return collect_within_deadline(session(driver, port), timeout)


def test_a_plain_answer_is_collected(driver: str, hostile: dict[str, int]) -> None:
    outcome = collect(driver, hostile["good"])
    assert outcome.failure is None and outcome.sample is not None
    assert outcome.sample.batch_requests_total == 1100 and set(outcome.sample.waits) == {"LCK_M_X", "PAGEIOLATCH_SH"}


@pytest.mark.parametrize("scenario", REFUSED)
def test_a_broken_answer_is_that_collections_protocol_failure(driver: str, hostile: dict[str, int],
                                                              scenario: str) -> None:  # fmt: skip
    outcome = collect(driver, hostile[scenario])
    assert outcome.sample is None and outcome.failure is not None
    assert (outcome.failure.error_class, outcome.failure.message) == ("protocol", REFUSED[scenario])


def test_a_sample_time_far_from_the_collectors_clock_is_refused(driver: str, hostile: dict[str, int]) -> None:
    outcome = collect(driver, hostile["future_time"])
    assert outcome.failure is not None and outcome.failure.error_class == "protocol"
    assert outcome.failure.message.startswith(
        "sample_time_utc is 9999-12-31 23:59:59, more than a day from the collector's clock ("
    ), outcome.failure.message


class PeakRss:
    """This process's RSS growth over a block, sampled every 10 ms by a thread."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._stop = threading.Event()
        self.start = self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.start


def test_endless_wait_rows_are_refused_in_bounded_memory(driver: str, hostile: dict[str, int]) -> None:
    collect(driver, hostile["good"])  # the driver's own first-use allocations, before measuring
    with PeakRss() as rss:
        outcome = collect(driver, hostile["endless_waits"], timeout=5.0)
    assert outcome.failure is not None, outcome
    limit = MAX_ROWS[WAITS.name]
    assert (outcome.failure.error_class, outcome.failure.message) == (
        "protocol", f"result set 'waits' has more than {limit} rows"), outcome.failure.message  # fmt: skip
    assert rss.growth < RSS_GROWTH_BOUND, f"RSS grew by {rss.growth / 2**20:.0f} MiB"


def test_a_stalled_tls_handshake_is_named_with_encrypt_no(hostile: dict[str, int]) -> None:
    """Driver 18 encrypts the login when the server asks, even with encrypt = no (FreeTDS refuses at once)."""
    outcome = collect_within_deadline(session("msodbc18", hostile["tls_stall"]), 1.0)
    assert outcome.failure is not None and outcome.failure.error_class == "timeout"
    assert "(during TLS handshake or login (PRELOGIN or LOGIN7))" in outcome.failure.message


def test_a_stall_at_the_address_a_login_routed_to_is_cut_too(hostile: dict[str, int]) -> None:
    """Driver 18 follows a routing answer (an Azure gateway's redirect) to another port, whose TLS handshake stalls:
    the deadline cuts the socket the collection thread waits on there, and the thread returns (it used to stay in
    the driver for ever, its socket being to no address of the server's; a tenant's pool ran out of threads)."""
    before = {t.ident for t in threading.enumerate()}
    outcome = collect_within_deadline(session("msodbc18", hostile["routed_to_tls_stall"]), 1.0)
    assert outcome.failure is not None and outcome.failure.error_class == "timeout", outcome
    assert "(during TLS handshake or login (PRELOGIN or LOGIN7))" in outcome.failure.message
    threads = [t for t in threading.enumerate() if t.ident not in before and t.name.startswith("collect-once")]
    for thread in threads:  # the written-off one and its replacement, if not gone already
        thread.join(timeout=10)  # the driver's call returns once its socket is shut down
        assert not thread.is_alive(), f"{thread.name} is still inside the driver"


def _snapshots(deployment: TenantDeployment) -> dict[str, int]:
    query = (select(servers.c.name, func.count(metric_snapshots.c.id))
             .select_from(servers.outerjoin(metric_snapshots)).group_by(servers.c.name))  # fmt: skip
    with deployment.engine.connect() as conn:
        return {name: count for name, count in conn.execute(query)}


def _server(deployment: TenantDeployment, name: str):  # type: ignore[no-untyped-def]
    with deployment.engine.connect() as conn:
        return conn.execute(select(servers).where(servers.c.name == name)).one()


def test_a_child_with_a_broken_server_keeps_collecting_the_others(tmp_path: Path, driver: str,
                                                                  hostile: dict[str, int]) -> None:  # fmt: skip
    deployment = TenantDeployment(tmp_path, driver, f"sqlite:///{tmp_path}/tenant.db", collection_interval=1)
    for name in ("good-1", "good-2"):
        deployment.add(name, hostile["good"])
    deployment.add("text-counter", hostile["text_batch_requests"])
    child = Child(deployment)
    try:
        def settled() -> bool:
            collected = _snapshots(deployment)
            return _server(deployment, "text-counter").consecutive_failures >= 3 and min(
                collected["good-1"], collected["good-2"]) >= 3  # fmt: skip

        wait_until(settled, 30, lambda: f"snapshots {_snapshots(deployment)}, log {deployment.log_events()[-5:]}")
        assert child.process.poll() is None, "the child exited"
        bad = _server(deployment, "text-counter")
        assert (bad.status, bad.last_error_class) == ("online", "protocol")
        assert bad.last_error == REFUSED["text_batch_requests"]
        assert _snapshots(deployment)["text-counter"] == 0
        events = {event.get("event") for event in deployment.log_events()}
        assert not events & {"child.crashed", "pool.job_failed", "collection.record_failed"}, events
        code, _took = child.terminate()
        assert code == 0
    finally:
        child.kill()


def test_a_server_whose_collection_the_driver_still_holds_gets_no_second_thread(
    tmp_path: Path, driver: str, hostile: dict[str, int]
) -> None:
    """10,000 messages before the answer keep the driver manager walking its diagnostic list for seconds of CPU
    after the deadline, with no socket left to cut. Before, each slot started one more thread on that server,
    every one burning CPU (a child went past 500 MB and 1 core)."""
    deployment = TenantDeployment(tmp_path, driver, f"sqlite:///{tmp_path}/tenant.db", collection_interval=1,
                                  collection_timeout=1)  # fmt: skip
    deployment.add("good", hostile["good"])
    deployment.add("flood", hostile["info_flood"])
    child = Child(deployment)
    try:
        def skipped() -> bool:
            error = _server(deployment, "flood").last_error or ""
            return "has not returned from the ODBC driver yet" in error

        wait_until(skipped, 30, lambda: f"flood: {_server(deployment, 'flood').last_error}")
        before = _snapshots(deployment)["good"]
        threads = []
        for _ in range(35):  # 7 s: slots of the flood server while a collection of it is held, past a writer batch
            threads.append(len(os.listdir(f"/proc/{child.process.pid}/task")))
            time.sleep(0.2)
        # A held collection's thread and its replacement overlap for a moment, so a single sample may be one or two
        # above the rest; what must not happen is growth (before: one more thread for every slot, 1 a second).
        assert min(threads[-10:]) <= min(threads[:10]) + 1, threads
        assert _snapshots(deployment)["good"] >= before + 2  # written in batches of up to 5 s
        assert _server(deployment, "flood").status == "online"  # it answered the login: reachable
        code, _took = child.terminate()
        assert code == 0
    finally:
        child.kill()


def test_an_answer_without_end_is_cut_before_the_child_runs_out_of_memory(
    tmp_path: Path, driver: str, hostile: dict[str, int]
) -> None:
    """A TEXT value announcing 2 GB, then its bytes for ever: the driver keeps all of it (1.9 GB in 2 s), so the
    parent's watchdog killed the child at ``max_child_rss_mb`` at every collection of that server, the tenant's
    other collections lost with it. Now the child cuts that collection first, as the server's protocol error."""
    limit_mb = 512  # the default max_child_rss_mb: the parent's watchdog kills a child above it
    deployment = TenantDeployment(tmp_path, driver, f"sqlite:///{tmp_path}/tenant.db", collection_interval=2,
                                  collection_timeout=5, max_child_rss_mb=limit_mb)  # fmt: skip
    deployment.add("good", hostile["good"])
    deployment.add("endless", hostile["endless_text"])
    child = Child(deployment)
    process = psutil.Process(child.process.pid)
    peak = 0
    try:
        def cut_twice() -> bool:
            nonlocal peak
            peak = max(peak, process.memory_info().rss)
            failures = [e for e in deployment.log_events() if e.get("event") == "collection.failed"]
            return _server(deployment, "endless").consecutive_failures >= 2 and bool(failures)

        wait_until(cut_twice, 60, lambda: f"endless: {_server(deployment, 'endless').last_error}", interval=0.02)
        endless = _server(deployment, "endless")
        assert endless.last_error_class == "protocol" and "answer too large" in endless.last_error, endless.last_error
        assert peak < limit_mb * 2**20, f"the child reached {peak / 2**20:.0f} MiB"
        assert _snapshots(deployment)["good"] >= 1
        assert child.terminate()[0] == 0
    finally:
        child.kill()


@pytest.mark.postgres
def test_a_server_error_with_control_characters_is_stored_and_shown_escaped(
    tmp_path: Path, driver: str, hostile: dict[str, int], pg_database: Callable[[], str]
) -> None:
    """Its NUL once made the failure unstorable on PostgreSQL (two ``writer.rejected`` lines, class ``storage``
    instead of the server's error), and its escapes reached the operator's terminal from ``collect-once`` and
    ``server show``."""
    deployment = TenantDeployment(tmp_path, driver, pg_database())
    deployment.add("controls", hostile["error_with_control_characters"])
    config = str(deployment.config)
    result = run_cli("-c", config, "collect-once", "acme", "controls", cwd=tmp_path, timeout=60)
    escaped = "broken \\x1b[31mred\\x1b]0;owned\\x07 back\\x08space nul"
    if driver == "msodbc18":  # FreeTDS ends the text at the NUL; Driver 18 passes it on
        escaped += "\\x00end"
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert escaped in result.stderr, result.stderr
    assert not any(ch in result.stderr for ch in "\x00\x1b\x07\x08"), result.stderr
    row = _server(deployment, "controls")
    assert escaped in row.last_error and row.last_error_class != "storage", (row.last_error_class, row.last_error)
    shown = run_cli("-c", config, "server", "show", "acme", "controls", cwd=tmp_path, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert escaped in " ".join(shown.stdout.split()), shown.stdout
    assert not any(ch in shown.stdout for ch in "\x00\x1b\x07\x08"), shown.stdout
    with deployment.engine.begin() as conn:  # as another program (the web app, an older collector) may store it
        conn.execute(servers.update().where(servers.c.name == "controls").values(last_error="web \x1b[2J\x07app"))
    shown = run_cli("-c", config, "server", "show", "acme", "controls", cwd=tmp_path, timeout=60)
    assert "web \\x1b[2J\\x07app" in shown.stdout and "\x1b" not in shown.stdout, shown.stdout
