"""One server session against the simulator: hostile values are harmless, abandoning is a timeout, reuse."""

from __future__ import annotations

import threading
import time

from supervisor.children.collect import ServerSession
from supervisor.children.connection_string import Endpoint
from supervisor.children.flights import collect_within_deadline
from supervisor.children.odbc_driver import FREETDS, MSODBC, OdbcDriver, kind_of
from supervisor.children.targets import Target
from tests.helpers.drivers import driver_setting
from tests.helpers.simulator import SIM_PASSWORD, SIM_USER

HOSTILE_PASSWORD = "pw};Trusted_Connection=yes;UID={sa"


def session(driver: str, port: int, *, host: str = "127.0.0.1", password: str = SIM_PASSWORD) -> ServerSession:
    name = driver_setting(driver)
    odbc = OdbcDriver(name, kind_of(name))
    target = Target(1, "t", Endpoint(host, port, SIM_USER, password, "no", False), 2.0, "auto")
    return ServerSession(target, odbc, 1.0, keep_connection=True)


def test_hostile_values_are_harmless(driver: str, simulator) -> None:
    sim = simulator([{"name": "hostile", "password": HOSTILE_PASSWORD}, {"name": "plain"}])
    hostile = session(driver, sim.ports["hostile"], password=HOSTILE_PASSWORD)
    outcome = hostile.collect(time.monotonic() + 2)
    if hostile._driver.kind == MSODBC:
        assert outcome.failure is None  # the exact password arrived, nothing else changed
    else:
        assert hostile._driver.kind == FREETDS
        assert outcome.failure is not None and outcome.failure.error_class == "config"
        assert "Trusted" not in outcome.failure.message
    hostile.close()
    wrong = session(driver, sim.ports["plain"], password="x};PWD={S3cret;pw}x")
    outcome = wrong.collect(time.monotonic() + 2)
    assert outcome.failure is not None and outcome.failure.error_class in ("login", "config")
    bad_host = session(driver, sim.ports["plain"], host="127.0.0.1;Trusted_Connection=yes")
    outcome = bad_host.collect(time.monotonic() + 2)
    assert outcome.failure is not None and outcome.failure.error_class == "connect"


def test_reuse_and_abandon(driver: str, simulator) -> None:
    sim = simulator([{"name": "ok"}, {"name": "slow", "faults": {"slow_query_ms": 20000}}])
    ok = session(driver, sim.ports["ok"])
    first = ok.collect(time.monotonic() + 2)
    connection = ok._conn
    second = ok.collect(time.monotonic() + 2)
    assert first.sample and second.sample and ok._conn is connection
    ok.close()

    slow = session(driver, sim.ports["slow"])
    canceller = threading.Timer(0.5, slow.abandon)
    canceller.start()
    outcome = slow.collect(time.monotonic() + 10)
    canceller.join()
    assert outcome.failure is not None and outcome.failure.error_class == "timeout"
    assert outcome.duration_ms < 3000 and slow._conn is None  # never reused after abandonment
    again = collect_within_deadline(session(driver, sim.ports["slow"]), 1.5)  # the collector's deadline
    assert again.failure is not None and again.failure.error_class == "timeout"
    assert 1500 <= again.duration_ms <= 1800


def test_a_stale_kept_connection_costs_no_sample(driver: str, simulator) -> None:
    sim = simulator([{"name": "ok"}])
    ok = session(driver, sim.ports["ok"])
    assert ok.collect(time.monotonic() + 2).sample is not None
    stale = ok._conn
    sim.set_faults("ok", restart=1)  # the instance restarts: its open sessions are dropped
    outcome = ok.collect(time.monotonic() + 2)
    assert outcome.failure is None and outcome.sample is not None, outcome.failure
    assert ok._conn is not None and ok._conn is not stale  # reconnected within the same collection
    ok.close()

    down = session(driver, sim.ports["ok"])
    assert down.collect(time.monotonic() + 2).sample is not None
    sim.set_faults("ok", down=True)
    failed = down.collect(time.monotonic() + 2.5)
    assert failed.failure is not None and failed.failure.error_class == "connect"  # the retry failed: offline
