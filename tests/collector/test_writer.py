"""The child's writer thread on a real SQLite tenant DB: a full buffer spills to the spool, corrupt spool lines
are skipped, a batch the DB rejects is retried item by item, and retention runs from the writer in batches."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from supervisor.children import writer as writer_module
from supervisor.children.persist import write_items
from supervisor.children.records import WriteItem
from supervisor.children.retention import BATCH_SIZE as PURGE_BATCH
from supervisor.children.spool import Spool
from supervisor.children.writer import Writer
from supervisor.clock import utcnow
from supervisor.storage.engine import make_engine
from supervisor.storage.tenant_schema import metric_snapshots, servers, wait_stats
from tests.collector.test_outage_and_stop import ExclusiveLock
from tests.collector.test_storage import T0, counts, item, make_tenant
from tests.helpers.waiting import wait_until


@pytest.fixture
def tenant(tmp_path: Path) -> Iterator[tuple[str, Engine, int]]:
    path = str(tmp_path / "tenant.db")
    engine, server_id = make_tenant(f"sqlite:///{path}")
    yield path, engine, server_id
    engine.dispose()


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == name]


def stored_times(engine: Engine) -> list[dt.datetime]:
    with engine.connect() as conn:
        return list(conn.execute(select(metric_snapshots.c.collected_at).order_by(metric_snapshots.c.collected_at))
                    .scalars())  # fmt: skip


def start_writer(url: str, spool: Spool, **kwargs: object) -> Writer:
    # A short busy timeout: a locked DB fails each attempt in 0.2 s instead of the default wait.
    writer = Writer(make_engine(url, call_timeout=0.2), spool, "acme", **kwargs)  # type: ignore[arg-type]
    writer.start()
    return writer


def test_a_full_buffer_spills_its_oldest_half_to_the_spool_and_nothing_is_lost(
    tmp_path: Path, tenant: tuple[str, Engine, int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    path, engine, sid = tenant
    spool = Spool(str(tmp_path / "spool"), "acme")
    max_buffer = 10
    writer = start_writer(f"sqlite:///{path}", spool, max_buffer=max_buffer)
    try:
        with ExclusiveLock(path):
            writer.put(item(sid, 0))  # taken in hand by the writer, which now fails and retries
            wait_until(lambda: events(caplog, "writer.db_unavailable"), 20, "the writer to find the DB locked")
            for n in range(1, 26):
                writer.put(item(sid, 2 * n))
            spilled = events(caplog, "writer.spooled")
            assert spilled and all("write buffer full" in r.getMessage() for r in spilled)
            on_disk = [i for f in spool.files() for i in spool.read(f)]
            # Each spill moves the oldest half of a buffer just over max_buffer: what stays is at most max_buffer.
            assert len(on_disk) >= 25 - max_buffer
            assert [i.snapshot.collected_at for i in on_disk] == sorted(i.snapshot.collected_at for i in on_disk)
            assert writer.pending() + len(on_disk) == 26
            assert not stored_times(engine)
        wait_until(lambda: writer.pending() == 0 and not spool.files() and len(stored_times(engine)) == 26, 30,
                   lambda: f"all 26 stored: {len(stored_times(engine))}, spool {spool.files()}")  # fmt: skip
    finally:
        writer.stop(5.0)
    assert stored_times(engine) == [item(sid, 2 * n).snapshot.collected_at for n in range(26)]  # each once
    assert not spool.files()


def test_corrupt_spool_lines_are_skipped_and_the_rest_replayed(
    tmp_path: Path, tenant: tuple[str, Engine, int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    path, engine, sid = tenant
    spool = Spool(str(tmp_path / "spool"), "acme")
    written = spool.write([item(sid, 0), item(sid, 2)])
    assert written is not None
    good = written.read_text().splitlines()
    broken_json = '{"server_id": 1, "status": '
    wrong_shape = json.dumps({"server_id": sid})  # JSON, but not a write item
    written.write_text("\n".join([good[0], broken_json, "", wrong_shape, good[1], "[1, 2]"]) + "\n")

    items = spool.read(written)
    assert [i.snapshot.collected_at for i in items] == [item(sid, 0).snapshot.collected_at,
                                                         item(sid, 2).snapshot.collected_at]  # fmt: skip
    corrupt = events(caplog, "spool.corrupt")
    assert [r.getMessage().split(":")[1] for r in corrupt] == ["2", "4", "6"]  # the line numbers, blank one skipped
    assert all(r.levelno == logging.ERROR and getattr(r, "error_class", None) == "storage" for r in corrupt)

    writer = start_writer(f"sqlite:///{path}", spool)
    try:
        wait_until(lambda: not spool.files(), 20, "the spool file replayed and removed")
    finally:
        writer.stop(5.0)
    assert len(stored_times(engine)) == 2
    [replayed] = events(caplog, "writer.replayed")
    assert "replayed 2 spooled results" in replayed.getMessage()
    kept = written.with_name(written.name + ".unread")  # the lines it could not read are results stored nowhere
    assert kept.read_text() == "\n".join([good[0], broken_json, "", wrong_shape, good[1], "[1, 2]"]) + "\n"
    assert [r.levelno for r in events(caplog, "spool.kept")] == [logging.WARNING]


def test_a_spool_line_of_a_newer_version_is_read_without_the_keys_this_one_lacks(tmp_path: Path) -> None:
    """A host rolled back to this version finds the newer version's spool: its results are stored, not lost."""
    spool = Spool(str(tmp_path / "spool"), "acme")
    original = item(1, 0)
    line = original.to_json()
    line["new_top_level"] = 1
    line["status"]["new_status_key"] = "x"
    line["snapshot"]["new_metric"] = 5.0
    if line["baseline"] is not None:
        line["baseline"]["new_baseline_key"] = []
    path = tmp_path / "spool" / "acme" / "20260101T000000-1-000000.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(line) + "\n")
    assert spool.read(path) == [original]


def test_a_rejected_batch_is_retried_item_by_item_keeping_every_good_row(
    tmp_path: Path, tenant: tuple[str, Engine, int], caplog: pytest.LogCaptureFixture
) -> None:
    """A row the DB refuses as data (here a snapshot of a server that does not exist: a foreign key) is not an
    outage: the batch is written again one item at a time, the good ones kept, the bad one dropped and logged."""
    caplog.set_level(logging.INFO)
    path, engine, sid = tenant
    spool = Spool(str(tmp_path / "spool"), "acme")
    writer = Writer(make_engine(f"sqlite:///{path}"), spool, "acme")
    for n, server in enumerate([sid, sid, 999_999, sid, sid]):  # one batch: put before the thread starts
        writer.put(item(server, 2 * n))
    writer.start()
    try:
        wait_until(lambda: writer.pending() == 0, 20, "the batch handled")
    finally:
        writer.stop(5.0)
    assert stored_times(engine) == [item(sid, 2 * n).snapshot.collected_at for n in (0, 1, 3, 4)]
    assert writer.written == 4
    [rejected] = events(caplog, "writer.rejected")
    assert rejected.levelno == logging.ERROR and "FOREIGN KEY" in rejected.getMessage().upper()
    assert not events(caplog, "writer.db_unavailable")  # a data error is no outage: nothing kept for a retry
    assert not spool.files()


T0_PLUS_2 = T0 + dt.timedelta(seconds=2)


def fresh_item(server_id: int, seconds_ago: float) -> WriteItem:
    """``item`` moved to now: a snapshot that retention must keep."""
    old = item(server_id, 0)
    assert old.snapshot is not None
    at = utcnow() - dt.timedelta(seconds=seconds_ago)
    return WriteItem(server_id, replace(old.status, checked_at=at), replace(old.snapshot, collected_at=at))


def test_the_writer_runs_retention_in_batches_until_nothing_is_expired(
    tmp_path: Path, tenant: tuple[str, Engine, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "RETENTION_FIRST_AFTER", 0.0)  # instead of 30 s after the start
    path, engine, sid = tenant
    expired = 2 * PURGE_BATCH + 200  # more than two purge batches
    with engine.begin() as conn:
        write_items(conn, [item(sid, 2 * n) for n in range(expired)])  # 2024: far beyond 30 days
        write_items(conn, [fresh_item(sid, 60 * n) for n in range(1, 4)])
    assert counts(engine)[:2] == (expired + 3, 2 * expired + 6)
    writer = start_writer(f"sqlite:///{path}", Spool(str(tmp_path / "spool"), "acme"), retention_days=30)
    try:
        wait_until(lambda: counts(engine)[0] == 3, 20, lambda: f"expired snapshots purged: {counts(engine)}")
    finally:
        writer.stop(5.0)
    assert counts(engine)[:2] == (3, 6)  # their wait rows went with them
    with engine.connect() as conn:
        oldest = conn.execute(select(func.min(metric_snapshots.c.collected_at))).scalar_one()
        orphans = conn.execute(
            select(func.count()).select_from(wait_stats).where(wait_stats.c.snapshot_id.not_in(
                select(metric_snapshots.c.id)))
        ).scalar_one()  # fmt: skip
    assert oldest > utcnow() - dt.timedelta(days=30) and orphans == 0


def test_a_result_that_cannot_be_stored_leaves_its_reason_on_the_server_row(
    tmp_path: Path, tenant: tuple[str, Engine, int], caplog: pytest.LogCaptureFixture
) -> None:
    """A snapshot no column can hold (an integer beyond SQLite's 64 bits) is dropped, and the server's row says
    so, instead of a success that stored nothing (or a stale status)."""
    caplog.set_level(logging.INFO)
    path, engine, sid = tenant
    spool = Spool(str(tmp_path / "spool"), "acme")
    writer = Writer(make_engine(f"sqlite:///{path}"), spool, "acme")
    good = item(sid, 0)
    assert good.snapshot is not None
    writer.put(good)
    writer.put(replace(item(sid, 2), snapshot=replace(good.snapshot, collected_at=T0_PLUS_2, connection_count=2**70)))
    writer.start()
    try:
        wait_until(lambda: writer.pending() == 0, 20, "the batch handled")
    finally:
        writer.stop(5.0)
    assert stored_times(engine) == [good.snapshot.collected_at]
    with engine.connect() as conn:
        row = conn.execute(select(servers.c.last_error, servers.c.last_error_class, servers.c.last_checked_at)).one()
    assert row.last_error_class == "storage"
    assert "could not be stored" in row.last_error and "OverflowError" in row.last_error
    assert row.last_checked_at == T0_PLUS_2
    [rejected] = events(caplog, "writer.rejected")
    assert f"server id {sid}" in rejected.getMessage()
