"""The system DB's clock, for the times instances compare with each other's: heartbeats, lease expiries.

Supervisors on several hosts share a PostgreSQL system DB; reading its clock, instead of each host's own,
keeps a host whose clock is skewed or was just stepped (NTP) from taking a live instance's leases as expired
or its heartbeat as stale. A SQLite system DB is one host's: its clock is this host's.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, text

from supervisor.clock import utcnow

_NOW = text("SELECT CAST(clock_timestamp() AT TIME ZONE 'UTC' AS timestamp)")


def db_utcnow(conn: Connection) -> dt.datetime:
    """The DB's time now, naive UTC (this host's for SQLite, or if the DB answers something that is no time)."""
    if conn.dialect.name != "postgresql":
        return utcnow()
    value = conn.execute(_NOW).scalar()
    return value if isinstance(value, dt.datetime) and value.tzinfo is None else utcnow()
