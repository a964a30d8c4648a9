"""Fixtures every test folder shares; what they build lives in ``tests/helpers`` (see its docstring)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.drivers import DRIVERS
from tests.helpers.postgres import PostgresDatabases
from tests.helpers.simulator import Simulator, StartSimulator


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
def simulator(tmp_path: Path) -> Iterator[StartSimulator]:
    """A factory of running simulators (``Simulator``) for a list of server entries; all stopped afterwards."""
    started: list[Simulator] = []

    def start(servers: list[dict[str, Any]]) -> Simulator:
        sim = Simulator(tmp_path, servers)
        started.append(sim)
        sim.start()
        return sim

    yield start
    for sim in started:
        sim.stop()
