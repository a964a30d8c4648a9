"""Storing results on SQLite and PostgreSQL: idempotent batches, baselines, status, retention, writer outages."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.engine import make_url

from supervisor.children.deltas import Baseline
from supervisor.children.persist import write_items
from supervisor.children.records import SnapshotRow, WriteItem
from supervisor.children.retention import BATCH_SIZE as PURGE_BATCH
from supervisor.children.retention import purge_batch
from supervisor.children.sample import WaitCounts
from supervisor.children.spool import Spool
from supervisor.children.status import StatusUpdate
from supervisor.children.stored_state import load_baselines
from supervisor.children.writer import Writer
from supervisor.servers import ServerSpec, add_server
from supervisor.storage.engine import make_engine
from supervisor.storage.migrations import upgrade_tenant
from supervisor.storage.tenant_schema import (
    counter_baselines,
    metric_snapshots,
    server_status_events,
    servers,
    wait_stats,
)
from tests.helpers.postgres import POSTGRES_ADMIN_URL
from tests.helpers.waiting import wait_until

T0 = dt.datetime(2024, 5, 1, 10, 0, 0, 123456)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def tenant_url(request: pytest.FixtureRequest, tmp_path: Path, pg_database: Callable[[], str]) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/tenant.db"
    return pg_database()


def make_tenant(url: str) -> tuple[Engine, int]:
    engine = make_engine(url, pooled=False)
    upgrade_tenant(engine)
    server_id = add_server(engine, ServerSpec(name="s1", host="h"), None).id
    return engine, server_id


def item(server_id: int, seconds: float, *, ok: bool = True, changed: bool = False) -> WriteItem:
    at = T0 + dt.timedelta(seconds=seconds)
    status = StatusUpdate(
        server_id, at, "online" if ok else "offline", changed, ok, 0 if ok else 1, None if ok else "x", None
    )
    if not ok:
        return WriteItem(server_id, status)
    waits = {"WRITELOG": WaitCounts(3, 30, 1), "PAGEIOLATCH_SH": WaitCounts(1, 5, 0)}
    snapshot = SnapshotRow(server_id, at, 10, 20, 55.5, 1024, 2048, 7, 12.5, 2.0, 15, waits)
    return WriteItem(server_id, status, snapshot, Baseline(T0 - dt.timedelta(days=1), at, int(1000 + seconds), waits))


def counts(engine: Engine) -> tuple[int, int, int]:
    with engine.connect() as conn:
        return (
            conn.execute(select(func.count()).select_from(metric_snapshots)).scalar_one(),
            conn.execute(select(func.count()).select_from(wait_stats)).scalar_one(),
            conn.execute(select(func.count()).select_from(server_status_events)).scalar_one(),
        )


def test_batches_are_idempotent(tenant_url: str) -> None:
    engine, sid = make_tenant(tenant_url)
    batch = [item(sid, 0, changed=True), item(sid, 2), item(sid, 4, ok=False, changed=True), item(sid, 6, changed=True)]
    for _ in range(2):  # a replay of the same batch changes nothing
        with engine.begin() as conn:
            write_items(conn, batch)
        assert counts(engine) == (3, 6, 3)
    with engine.connect() as conn:
        row = conn.execute(select(servers).where(servers.c.id == sid)).one()
        stored = conn.execute(select(metric_snapshots.c.collected_at).order_by(metric_snapshots.c.id)).scalars().all()
        baseline = load_baselines(conn)[sid]
    assert row.status == "online" and row.last_checked_at == T0 + dt.timedelta(seconds=6)
    assert row.last_success_at == T0 + dt.timedelta(seconds=6) and row.consecutive_failures == 0
    assert stored[0] == T0  # microseconds survive
    assert baseline.batch_requests_total == 1006 and baseline.waits["WRITELOG"] == WaitCounts(3, 30, 1)
    with engine.begin() as conn:  # an older result never moves status or baseline back
        write_items(conn, [item(sid, 1, ok=False, changed=True)])
    with engine.connect() as conn:
        assert conn.execute(select(servers.c.status).where(servers.c.id == sid)).scalar() == "online"
        assert conn.execute(select(counter_baselines.c.batch_requests_total)).scalar() == 1006
    engine.dispose()


def test_retention_deletes_old_snapshots_in_batches(tenant_url: str) -> None:
    """More expired rows than a batch: each call deletes at most BATCH_SIZE of them with their wait rows, until
    none is left; the newer ones stay."""
    engine, sid = make_tenant(tenant_url)
    expired = 2 * PURGE_BATCH + 100
    days = 30 * 86400
    with engine.begin() as conn:
        write_items(conn, [item(sid, 2 * n) for n in range(expired)])
        write_items(conn, [item(sid, days + 2 * n) for n in range(expired, expired + 10)])
    # The cutoff, 30 days before the newest snapshot, falls between the last expired snapshot and the first kept.
    now = T0 + dt.timedelta(seconds=days + 2 * (expired + 10))
    assert [purge_batch(engine, 30, now) for _ in range(4)] == [PURGE_BATCH, PURGE_BATCH, 100, 0]
    assert purge_batch(engine, 0, now + dt.timedelta(days=365)) == 0  # 0 days keeps everything
    assert counts(engine)[:2] == (10, 20)
    with engine.connect() as conn:
        oldest = conn.execute(select(func.min(metric_snapshots.c.collected_at))).scalar_one()
    assert oldest == T0 + dt.timedelta(seconds=days + 2 * expired)
    engine.dispose()


def test_retention_counts_from_the_newest_snapshot_not_from_a_clock_stepped_ahead(tenant_url: str) -> None:
    """A host clock a year ahead stores nothing (every sample is a day off it): it purges nothing either, and a
    snapshot dated after now (another program's row) does not move the cutoff."""
    engine, sid = make_tenant(tenant_url)
    with engine.begin() as conn:
        write_items(conn, [item(sid, 86400 * day) for day in range(10)])
    stepped_ahead = T0 + dt.timedelta(days=375)
    assert purge_batch(engine, 30, stepped_ahead) == 0
    with engine.begin() as conn:
        write_items(conn, [item(sid, 86400 * 400)])  # after now: ignored
    assert purge_batch(engine, 5, T0 + dt.timedelta(days=9)) == 4  # 5 days before day 9: days 0-3
    assert counts(engine)[0] == 7
    engine.dispose()


def test_writer_spools_on_stop_and_replays(tmp_path: Path, tenant_url: str) -> None:
    engine, sid = make_tenant(tenant_url)
    spool = Spool(str(tmp_path / "spool"), "acme")
    spool.write([item(sid, 0), item(sid, 2)])
    assert spool.newest_baselines()[sid].batch_requests_total == 1002
    writer = Writer(make_engine(tenant_url), spool, "acme")
    writer.start()
    writer.put(item(sid, 2))  # also in the spool: stored once
    writer.put(item(sid, 4))
    wait_until(lambda: counts(engine)[0] == 3 and not spool.files(), 20, "3 snapshots stored and the spool empty")
    writer.stop(5.0)
    assert counts(engine)[0] == 3 and not spool.files()
    engine.dispose()


@pytest.mark.postgres
def test_writer_survives_a_postgresql_outage(tmp_path: Path, pg_database: Callable[[], str]) -> None:
    url = pg_database()
    engine, sid = make_tenant(url)
    name = make_url(url).database
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    spool = Spool(str(tmp_path / "spool"), "acme")
    writer = Writer(make_engine(url), spool, "acme")
    writer.start()
    try:
        writer.put(item(sid, 0))
        wait_until(lambda: counts(engine)[0] == 1, 10, "the first snapshot stored")
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false'))
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
        for seconds in range(2, 12, 2):
            writer.put(item(sid, seconds))
        time.sleep(3.0)
        assert writer.pending() == 5
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true'))
        wait_until(lambda: writer.pending() == 0, 30, "the writer to catch up")
        assert counts(engine)[0] == 6
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true'))
        writer.stop(5.0)
        admin.dispose()
        engine.dispose()


@pytest.mark.postgres
def test_a_revoked_privilege_is_an_outage_not_a_rejection(
    tmp_path: Path, pg_database: Callable[[], str], caplog: pytest.LogCaptureFixture
) -> None:
    """INSERT on metric_snapshots revoked from the collector's role (SQLSTATE 42501): results are kept and stored
    once it is granted again (they used to be dropped for good, one writer.rejected line each)."""
    url = pg_database()
    engine, sid = make_tenant(url)
    role = f"collector_{make_url(url).database}"
    with engine.begin() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        conn.execute(text(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"'))
        conn.execute(text(f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO "{role}"'))
        conn.execute(text(f'REVOKE INSERT ON metric_snapshots FROM "{role}"'))
    role_url = make_url(url).set(username=role).render_as_string(hide_password=False)
    writer = Writer(make_engine(role_url), Spool(str(tmp_path / "spool"), "acme"), "acme")
    writer.start()
    try:
        for seconds in range(0, 6, 2):
            writer.put(item(sid, seconds))
        verdicts = ("writer.db_unavailable", "writer.rejected")
        wait_until(lambda: [r for r in caplog.records if getattr(r, "event", None) in verdicts], 20, "a first try")
        assert [getattr(r, "event", None) for r in caplog.records if getattr(r, "event", None) in verdicts] == [
            "writer.db_unavailable"]  # fmt: skip
        assert writer.pending() == 3 and counts(engine)[0] == 0
        with engine.begin() as conn:
            conn.execute(text(f'GRANT INSERT ON metric_snapshots TO "{role}"'))
        wait_until(lambda: writer.pending() == 0, 30, "the writer to catch up")
        assert counts(engine)[0] == 3
    finally:
        writer.stop(5.0)
        with engine.begin() as conn:
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))
        engine.dispose()


def test_one_batch_for_many_servers_keeps_every_change(tenant_url: str) -> None:
    """Plain status updates go in runs, changes one by one: the result must be as if applied one by one in order."""
    engine, first = make_tenant(tenant_url)
    second = add_server(engine, ServerSpec(name="s2", host="h"), None).id
    batch = [
        item(first, 0),  # success, then a failure that is not a change: last_success_at stays at 0
        item(second, 0, changed=True),
        item(first, 2, ok=False),
        item(second, 4),  # a plain update newer than the change before it
        item(second, 6, ok=False, changed=True),
    ]
    with engine.begin() as conn:
        assert write_items(conn, batch) == 3
    with engine.connect() as conn:
        rows = {row.id: row for row in conn.execute(select(servers))}
        events = conn.execute(
            select(server_status_events.c.server_id, server_status_events.c.status).order_by(server_status_events.c.at)
        ).all()
    assert rows[first].status == "offline" and rows[first].last_checked_at == T0 + dt.timedelta(seconds=2)
    assert rows[first].last_success_at == T0 and rows[first].consecutive_failures == 1
    assert rows[second].status == "offline" and rows[second].last_success_at == T0 + dt.timedelta(seconds=4)
    assert rows[second].status_changed_at == T0 + dt.timedelta(seconds=6)
    assert events == [(second, "online"), (second, "offline")]
    engine.dispose()


def test_baselines_without_an_upsert_move_only_forward(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The portable path for tenant DBs other than SQLite and PostgreSQL, run on SQLite."""
    from supervisor.children import persist

    monkeypatch.setattr(persist, "conflict_insert", lambda _dialect: None)
    engine, sid = make_tenant(f"sqlite:///{tmp_path}/tenant.db")
    for seconds in (4, 2, 6):
        with engine.begin() as conn:
            write_items(conn, [item(sid, seconds)])
    with engine.connect() as conn:
        assert load_baselines(conn)[sid].batch_requests_total == 1006
        assert conn.execute(select(func.count()).select_from(counter_baselines)).scalar_one() == 1
    engine.dispose()


def test_a_check_time_ahead_of_our_clock_holds_back_no_status(tenant_url: str) -> None:
    """The stored ``last_checked_at`` came from a clock ahead of ours (this host's before NTP stepped it back an hour,
    or the previous owner's): a check now still moves the status (it stayed 'online' for the hour, the server down)."""
    engine, sid = make_tenant(tenant_url)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with engine.begin() as conn:
        conn.execute(servers.update().values(status="online", last_checked_at=now + dt.timedelta(hours=1)))
        down = StatusUpdate(sid, now, "offline", True, False, 1, "connect failed", "connect")
        write_items(conn, [WriteItem(sid, down)])
    with engine.connect() as conn:
        row = conn.execute(select(servers).where(servers.c.id == sid)).one()
        events = conn.execute(select(server_status_events.c.status)).scalars().all()
    assert (row.status, row.last_checked_at, events) == ("offline", now, ["offline"])
    with engine.begin() as conn:  # an older result (a replayed spool) still never moves it back
        write_items(conn, [item(sid, 0)])
    with engine.connect() as conn:
        assert conn.execute(select(servers.c.status).where(servers.c.id == sid)).scalar() == "offline"
    engine.dispose()


def clocked_item(server_id: int, sample_seconds: float, checked_seconds: float, total: int) -> WriteItem:
    """A result whose server clock read ``sample_seconds`` after T0 when this host's read ``checked_seconds``."""
    checked_at = T0 + dt.timedelta(seconds=checked_seconds)
    status = StatusUpdate(server_id, checked_at, "online", False, True, 0, None, None)
    baseline = Baseline(T0 - dt.timedelta(days=1), T0 + dt.timedelta(seconds=sample_seconds), total, {}, checked_at)
    return WriteItem(server_id, status, baseline=baseline)


@pytest.mark.parametrize("upsert", [True, False], ids=["upsert", "portable"])
def test_baselines_move_forward_by_this_hosts_clock(
    tenant_url: str, upsert: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server clock an hour ahead, then set right: its next baseline has an earlier sample time but a later check,
    and replaces the stored one (before, that stayed an hour ahead, and every restart's first rate and every
    ``collect-once`` for the hour was computed against it); a replayed older result still moves nothing."""
    from supervisor.children import persist

    if not upsert:
        monkeypatch.setattr(persist, "conflict_insert", lambda _dialect: None)
    engine, sid = make_tenant(tenant_url)
    for result in (clocked_item(sid, 3600, 0, 1), clocked_item(sid, 40, 30, 2), clocked_item(sid, 3000, 5, 3)):
        with engine.begin() as conn:
            write_items(conn, [result])
    with engine.connect() as conn:
        stored = load_baselines(conn)[sid]
    assert (stored.batch_requests_total, stored.checked_at) == (2, T0 + dt.timedelta(seconds=30))
    engine.dispose()
