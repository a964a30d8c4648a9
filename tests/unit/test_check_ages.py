"""``targets.check_ages``: what the scheduler's catch-up decides on, read from ``servers.last_checked_at``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import text

from supervisor.children.stored_state import check_ages
from supervisor.storage.engine import make_engine
from supervisor.storage.migrations import upgrade_tenant
from supervisor.storage.tenant_schema import servers

NOW = dt.datetime(2026, 11, 28, 12, 0, 0)


def test_ages_of_the_servers_asked_for_with_a_stored_time_and_nothing_for_other_values(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/tenant.db", pooled=False)
    upgrade_tenant(engine)
    checks: dict[int, object] = {
        1: NOW - dt.timedelta(seconds=42.5),
        2: None,  # never checked
        3: NOW + dt.timedelta(seconds=3),  # a host clock ahead: a negative age, never overdue
        4: NOW - dt.timedelta(hours=1),  # not asked for
    }
    with engine.begin() as conn:
        rows = [{"id": sid, "last_checked_at": checked} for sid, checked in [*checks.items(), (5, None)]]
        conn.execute(servers.insert(), [{**row, "name": f"s{row['id']}", "host": "h", "port": 1433,
                                         "status": "online", "consecutive_failures": 0, "created_at": NOW}
                                        for row in rows])  # fmt: skip
        conn.execute(text("UPDATE servers SET last_checked_at = 'yesterday' WHERE id = 5"))  # another program's
        assert check_ages(conn, [1, 2, 3, 5, 99], NOW) == {1: 42.5, 3: -3.0}
    engine.dispose()
