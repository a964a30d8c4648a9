"""UTC time as stored in the databases: naive ``datetime`` values that mean UTC."""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def stored_utc(value: object) -> dt.datetime | None:
    """A time read back from a UTC column: a ``datetime`` (PostgreSQL) or its ISO text (SQLite), naive UTC;
    None for a value that is no time (another program's text, a number). An offset, if any, is honoured."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, dt.datetime):
        return None
    return value if value.tzinfo is None else value.astimezone(dt.UTC).replace(tzinfo=None)
