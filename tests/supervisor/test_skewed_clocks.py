"""Instances on hosts whose clocks disagree (skew, an NTP step) share a PostgreSQL system DB: heartbeats and lease
expiries are times of the DB's clock, so neither the host ahead nor the host behind takes live leases for expired
(before, a host 2 minutes ahead claimed every tenant of a live instance, and one 2 minutes behind wrote leases that
had run out already: two children of one tenant ran at once)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from supervisor.cli.context import CliContext
from supervisor.cli.status_cmd import collect_status
from supervisor.clock import utcnow
from supervisor.config import Settings
from supervisor.parent import system_sync
from supervisor.parent.instances import InstanceIdentity
from supervisor.parent.system_sync import PollResult, SystemDbSync
from supervisor.tenants import ACTIVE, insert_tenant

SKEW = dt.timedelta(minutes=2)


@contextmanager
def host_clock(monkeypatch: pytest.MonkeyPatch, offset: dt.timedelta) -> Iterator[None]:
    with monkeypatch.context() as patch:
        patch.setattr(system_sync, "utcnow", lambda: utcnow() + offset)
        yield


def poll(sync: SystemDbSync) -> PollResult:
    result = sync.poll([])
    assert result is not None, "the poll failed"
    return result


@pytest.mark.parametrize(("holder_offset", "newcomer_offset"), [(dt.timedelta(0), SKEW), (-SKEW, dt.timedelta(0))])
def test_no_instance_takes_a_live_instances_leases_whatever_the_clocks(
    pg_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch,
    holder_offset: dt.timedelta, newcomer_offset: dt.timedelta,
) -> None:  # fmt: skip
    settings = Settings(system_db=pg_database(), lease_duration=10, shutdown_timeout=2, poll_interval=1)
    holder = SystemDbSync(settings, InstanceIdentity("holder", "host-a", 1))
    newcomer = SystemDbSync(settings, InstanceIdentity("newcomer", "host-b", 2))
    try:
        poll(holder)
        ids = {insert_tenant(holder.engine, f"t{n}", f"T{n}", None, ACTIVE).id for n in range(4)}
        with host_clock(monkeypatch, holder_offset):
            assert poll(holder).runnable == ids
        with host_clock(monkeypatch, newcomer_offset):
            assert poll(newcomer).runnable == set(), "the newcomer took leases the holder renewed a moment ago"
        with host_clock(monkeypatch, holder_offset):
            assert poll(holder).runnable, "the holder lost its leases to the newcomer at once"
    finally:
        holder.engine.dispose()
        newcomer.engine.dispose()


def test_status_on_a_host_ahead_still_sees_the_live_instance_and_its_leases(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    url = pg_database()
    holder = SystemDbSync(Settings(system_db=url, lease_duration=10), InstanceIdentity("holder", "host-a", 1))
    try:
        poll(holder)
        insert_tenant(holder.engine, "acme", "Acme", None, ACTIVE)
        poll(holder)
    finally:
        holder.engine.dispose()
    config = tmp_path / "collector.ini"
    config.write_text(f"[collector]\nsystem_db = {url}\nlease_duration = 10\n", encoding="utf-8")
    report = collect_status(CliContext(str(config)), utcnow() + SKEW)
    [instance] = report["instances"]
    assert instance["alive"] and instance["heartbeat_age_s"] < 5
    [tenant] = report["tenants"]
    assert tenant["owner"] == "holder"
