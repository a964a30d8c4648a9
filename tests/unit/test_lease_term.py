"""How long a lease runs from its renewal (leases.lease_term, as system_sync writes it): ``lease_duration`` for a
lone instance, TAKEOVER_ALLOWANCE less while others are live, so one of them can take a dead instance's tenants
over and have them collected again within ``lease_duration`` of its death; the fence follows the term."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select

from supervisor.clock import utcnow
from supervisor.config import Settings
from supervisor.lease_term import TAKEOVER_ALLOWANCE
from supervisor.parent import leases
from supervisor.parent.instances import InstanceIdentity
from supervisor.parent.system_sync import SystemDbSync
from supervisor.storage.system_schema import supervisor_instances, tenant_leases
from supervisor.tenants import ACTIVE, insert_tenant


def test_the_term_is_shorter_only_while_another_instance_could_take_over() -> None:
    assert leases.lease_term(30.0, 1) == 30.0
    assert leases.lease_term(30.0, 2) == 30.0 - TAKEOVER_ALLOWANCE == leases.shared_term(30.0)
    assert leases.lease_term(8.0, 3) == pytest.approx(7.2)  # at most a tenth of a short lease
    assert leases.lease_term(1.0, 2) == pytest.approx(0.9)


def test_a_poll_writes_the_term_and_fences_by_it(tmp_path: Path) -> None:
    settings = Settings(system_db=f"sqlite:///{tmp_path}/system.db", lease_duration=30, shutdown_timeout=5)
    sync = SystemDbSync(settings, InstanceIdentity("me", "host-a", 1))
    assert sync.poll([]) is not None
    insert_tenant(sync.engine, "acme", "Acme", None, ACTIVE)

    def renewed_for() -> float:
        assert sync.poll([]) is not None
        with sync.engine.connect() as conn:
            [expires] = conn.execute(select(tenant_leases.c.expires_at)).scalars()
        return (expires - utcnow()).total_seconds()

    assert 29 < renewed_for() <= 30 and sync.lease_term == 30
    now = utcnow()
    with sync.engine.begin() as conn:  # another instance, live: it would take our tenants over if we died
        conn.execute(supervisor_instances.insert().values(id="other", host="host-b", pid=2, started_at=now,
                                                          heartbeat_at=now, status="running"))  # fmt: skip
    assert 26 < renewed_for() <= 27 and sync.lease_term == 27
    assert sync.lease_renewed_at is not None
    assert sync.fence_at() == pytest.approx(sync.lease_renewed_at + 27 - 5)
    with sync.engine.begin() as conn:  # its heartbeat is older than the shared term: not live any more
        stale = now - dt.timedelta(seconds=27.5)
        conn.execute(supervisor_instances.update().where(supervisor_instances.c.id == "other"), {"heartbeat_at": stale})
    assert 29 < renewed_for() <= 30 and sync.lease_term == 30
    sync.engine.dispose()
