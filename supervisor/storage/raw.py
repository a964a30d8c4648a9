"""Columns read as they are stored, without SQLAlchemy's result processing.

The tables are input: the product's web app writes them too, and SQLite stores any value in any column. Its
processing would turn ``'bogus'`` in a boolean column into ``True`` and raise on text in a DateTime column; the
reader checks the value itself instead (``supervisor.rules``, ``supervisor.clock.stored_utc``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Label, type_coerce
from sqlalchemy.types import NullType


def raw(column: ColumnElement[Any]) -> Label[Any]:
    """``column`` as stored, labelled with its own name."""
    return type_coerce(column, NullType()).label(column.key)
