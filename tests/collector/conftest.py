"""Collector fixtures: a tenant child run as a real process, a SQLite tenant DB URL (``driver`` is shared)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers.deployment import Child, TenantDeployment


@pytest.fixture
def child_processes() -> Iterator[Callable[[TenantDeployment], Child]]:
    children: list[Child] = []

    def start(deployment: TenantDeployment) -> Child:
        child = Child(deployment)
        children.append(child)
        return child

    yield start
    for child in children:
        child.kill()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/tenant.db"
