"""Supervisor fixtures: a deployment folder (SQLite or PostgreSQL system DB) whose supervisors are killed
afterwards. The classes are in ``tests.helpers.deployment``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers.deployment import Deployment


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    deployment = Deployment(tmp_path)
    deployment.write_config()
    yield deployment
    deployment.stop_all()


@pytest.fixture
def pg_deployment(tmp_path: Path, pg_database: Callable[[], str]) -> Iterator[Deployment]:
    deployment = Deployment(tmp_path, system_db=pg_database())
    deployment.write_config()
    yield deployment
    deployment.stop_all()
