"""Fixtures every test folder shares; what they build lives in ``tests/helpers`` (see its docstring)."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.deployment import STARTED, children, kill_strays
from tests.helpers.drivers import DRIVERS
from tests.helpers.postgres import PostgresDatabases
from tests.helpers.simulator import Simulator, StartSimulator

FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        item.stash[FAILED] = True
    return report


@pytest.fixture(scope="session", autouse=True)
def stray_processes_of_the_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """What module fixtures left running: their supervisors and children, then any process naming this run's
    temporary folders."""
    mark = STARTED.mark()
    yield
    STARTED.stop_since(mark)
    kill_strays(tmp_path_factory.getbasetemp())


@pytest.fixture(autouse=True)
def stray_processes(request: pytest.FixtureRequest) -> Iterator[int]:
    """Every supervisor and tenant child the test started (``tests.helpers.deployment.STARTED``) is killed after
    it; after a failure, so is every other process it started (its own ``Popen``s, and what names its ``tmp_path``:
    a demo's supervisor). Yields the mark of ``STARTED`` at the start, for ``simulator``'s teardown."""
    mark, children_before = STARTED.mark(), children()
    yield mark
    STARTED.stop_since(mark)
    if request.node.stash.get(FAILED, False):
        kill_strays(request.node.funcargs.get("tmp_path", Path("/nonexistent")), children_before)


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    """Each ODBC driver of ``DRIVERS`` in turn (``driver_setting`` gives its ``odbc_driver`` setting)."""
    return str(request.param)


@pytest.fixture
def pg_database() -> Iterator[Callable[[], str]]:
    """A factory of fresh PostgreSQL databases: each call returns a new database's URL. Every database made,
    and the ``<name>_<slug>`` tenant databases made from one as a template, are dropped afterwards."""
    databases = PostgresDatabases()
    yield databases.create
    databases.drop_all()


@pytest.fixture
def simulator(tmp_path: Path, stray_processes: int) -> Iterator[StartSimulator]:
    """A factory of running simulators (``Simulator``) for a list of server entries; all stopped afterwards, after
    the supervisors and children the test started."""
    started: list[Simulator] = []

    def start(servers: list[dict[str, Any]]) -> Simulator:
        sim = Simulator(tmp_path, servers)
        started.append(sim)
        sim.start()
        return sim

    yield start
    STARTED.stop_since(stray_processes)
    for sim in started:
        sim.stop()
