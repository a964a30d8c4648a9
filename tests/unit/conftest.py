"""Fixtures the unit tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from supervisor.storage.engine import make_engine
from supervisor.storage.migrations import upgrade_system


@pytest.fixture
def system(tmp_path: Path) -> Iterator[Engine]:
    """A system DB at the current schema (SQLite in ``tmp_path``)."""
    engine = make_engine(f"sqlite:///{tmp_path}/system.db", pooled=False)
    upgrade_system(engine)
    yield engine
    engine.dispose()
