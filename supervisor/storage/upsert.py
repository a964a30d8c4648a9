"""INSERT .. ON CONFLICT for the dialects that have it, imported only when a connection uses one."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

#: Dialects with INSERT .. ON CONFLICT (DO NOTHING / DO UPDATE) in SQLAlchemy.
ON_CONFLICT_DIALECTS = ("sqlite", "postgresql")


def conflict_insert(dialect: str) -> Callable[..., Any] | None:
    """The dialect's ``insert`` construct with ``on_conflict_do_*``; None for other dialects."""
    if dialect not in ON_CONFLICT_DIALECTS:
        return None
    module = importlib.import_module(f"sqlalchemy.dialects.{dialect}")
    return module.insert
