"""``status``'s view of an instance on another host: alive while its heartbeat is as recent as its peers require
(leases.shared_term), the window within which they would not yet take its tenants over."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine

from supervisor.cli.status_cmd import _instances
from supervisor.clock import utcnow
from supervisor.config import Settings
from supervisor.parent import leases
from supervisor.storage.system_schema import supervisor_instances


def test_a_remote_instance_is_alive_until_its_heartbeat_is_older_than_the_shared_term(system: Engine) -> None:
    settings = Settings(lease_duration=30)
    now = utcnow()
    term = leases.shared_term(settings.lease_duration)
    ages = {"fresh": 1.0, "within-term": term - 0.5, "past-term": term + 0.5}
    with system.begin() as conn:
        for name, age in ages.items():
            conn.execute(supervisor_instances.insert().values(
                id=name, host="elsewhere.invalid", pid=1, started_at=now - dt.timedelta(hours=1),
                heartbeat_at=now - dt.timedelta(seconds=age), status="running",
            ))  # fmt: skip
    alive = {row["id"]: row["alive"] for row in _instances(system, settings, now)}
    assert alive == {"fresh": True, "within-term": True, "past-term": False}
