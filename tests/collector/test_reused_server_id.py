"""A server id handed out again: SQLite gives the next server the highest id once that row is deleted (the web app
deletes rows; ``server remove`` only marks them). Results collected for the deleted server and not yet stored (the
writer's batch, a spool file, a collection in flight) belong to no server any more: none is stored under the new
one, whose history and status start from nothing. A result whose server row was deleted is left out with one line,
not rejected by the foreign key item by item."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from supervisor.children.collect import CollectionOutcome
from supervisor.children.connection_string import Endpoint
from supervisor.children.errors import CollectionFailure
from supervisor.children.persist import current_items, write_items
from supervisor.children.recorder import OutcomeRecorder
from supervisor.children.records import SnapshotRow, WriteItem, row_identity
from supervisor.children.stats import TenantStats
from supervisor.children.status import ServerState, StatusUpdate
from supervisor.children.targets import ServerRows, Target
from supervisor.errors import CONNECT
from supervisor.storage.engine import make_engine
from supervisor.storage.migrations import upgrade_tenant
from tests.helpers.deployment import TenantDeployment
from tests.helpers.waiting import wait_until

_WEB_APP_INSERT = (
    "INSERT INTO servers(name, host, port, username, status, consecutive_failures, created_at) "
    "VALUES ('replacement', '127.0.0.1', ?, 'monitor', 'unknown', 0, ?)"
)


def test_results_of_a_deleted_server_never_land_on_the_server_given_its_id(
    tmp_path: Path, simulator, child_processes
) -> None:
    """While the tenant DB is locked (the writer keeps s2's results in hand), the web app deletes s2, the highest id,
    and adds a server SQLite gives the same id; that server is down, so any snapshot or success under the id after
    the swap is one of the deleted s2."""
    sim = simulator([{"name": "s1"}, {"name": "s2"}, {"name": "down", "faults": {"down": True}}])
    deployment = TenantDeployment(tmp_path, "freetds", f"sqlite:///{tmp_path}/tenant.db", collection_interval=1,
                                  server_refresh_interval=1)  # fmt: skip
    s1 = deployment.add("s1", sim.ports["s1"])
    s2 = deployment.add("s2", sim.ports["s2"])
    child = child_processes(deployment)
    wait_until(lambda: snapshots(deployment, s2) >= 2, 30, lambda: deployment.log_events()[-5:])

    web_app = sqlite3.connect(tmp_path / "tenant.db", isolation_level=None, timeout=30)
    web_app.execute("PRAGMA foreign_keys = ON")  # its history goes with it, as the schema's cascades say
    web_app.execute("BEGIN EXCLUSIVE")
    time.sleep(3)  # s2 is collected meanwhile; the writer cannot store it
    web_app.execute("DELETE FROM servers WHERE id = ?", (s2,))
    cursor = web_app.execute(_WEB_APP_INSERT, (sim.ports["down"], f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S}"))
    assert cursor.lastrowid == s2, "SQLite no longer reuses the highest id: this test tests nothing"
    web_app.execute("INSERT INTO collection_configs(server_id, enabled) VALUES (?, 1)", (s2,))
    web_app.execute("COMMIT")
    web_app.close()
    swapped = time.monotonic()

    wait_until(lambda: row_of(deployment.engine, s2)["status"] == "offline", 30, lambda: deployment.log_events()[-5:])
    before = snapshots(deployment, s1)
    wait_until(lambda: snapshots(deployment, s1) >= before + 2, 30, "s1 goes on being stored")
    gone = [e for e in deployment.log_events() if e.get("event") == "writer.server_gone"]
    assert snapshots(deployment, s2) == 0
    assert gone and {e["reason"] for e in gone} == {"replaced"}, gone
    row = row_of(deployment.engine, s2)
    assert row["last_success_at"] is None and row["consecutive_failures"] >= 1, row
    with deployment.engine.connect() as conn:
        events = conn.execute(text("SELECT status FROM server_status_events WHERE server_id = :s"), {"s": s2}).all()
    assert [status for (status,) in events] == ["offline"], "the new server's first status change is its own"
    assert time.monotonic() - swapped < 60
    assert not [e for e in deployment.log_events() if e.get("level") == "ERROR" and e.get("server") != "replacement"]
    assert child.terminate()[0] == 0


def snapshots(deployment: TenantDeployment, sid: int) -> int:
    with deployment.engine.connect() as conn:
        count = conn.execute(text("SELECT count(*) FROM metric_snapshots WHERE server_id = :s"), {"s": sid}).scalar()
    return int(count or 0)


def row_of(engine: Engine, sid: int) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM servers WHERE id = :s"), {"s": sid}).mappings().first()
    assert row is not None
    return dict(row)


@pytest.fixture(params=["sqlite", "postgresql"])
def tenant_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path}/tenant.db", pooled=False)
    else:
        engine = make_engine(request.getfixturevalue("pg_database")(), pooled=False)
    upgrade_tenant(engine)
    return engine


def add_server(engine: Engine, created_at: dt.datetime, server_id: int | None = None) -> tuple[int, str]:
    """A server row as the web app writes it (an explicit id: a restore from a backup); its id and identity."""
    columns = {"name": f"srv-{created_at:%Y%m%d%H%M%S}", "host": "h", "port": 1433, "status": "unknown",
               "consecutive_failures": 0, "created_at": created_at}  # fmt: skip
    if server_id is not None:
        columns["id"] = server_id
    names = ", ".join(columns)
    with engine.begin() as conn:
        conn.execute(text(f"INSERT INTO servers({names}) VALUES ({', '.join(':' + c for c in columns)})"), columns)
        sid, stored = conn.execute(
            text("SELECT id, created_at FROM servers WHERE name = :n"), {"n": columns["name"]}
        ).one()
    return int(sid), row_identity(stored)


def result(sid: int, row: str | None, at: dt.datetime) -> WriteItem:
    status = StatusUpdate(sid, checked_at=at, status="online", status_changed=True, success=True,
                          consecutive_failures=0, error=None, error_class=None)  # fmt: skip
    snapshot = SnapshotRow(sid, collected_at=at, cpu_percent=10, system_cpu_percent=None, memory_percent=50.0,
                           sql_memory_mb=1, sql_target_memory_mb=2, connection_count=3, batch_requests_per_sec=None,
                           interval_seconds=None, duration_ms=5)  # fmt: skip
    item = WriteItem(sid, status, snapshot, row=row)
    return WriteItem.from_json(item.to_json())  # as a spool file gives it back


def test_only_results_of_the_row_they_were_collected_for_are_written(tenant_engine: Engine) -> None:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    kept_id, kept_row = add_server(tenant_engine, now - dt.timedelta(days=3))
    old_id, old_row = add_server(tenant_engine, now - dt.timedelta(days=2))
    deleted_id, deleted_row = add_server(tenant_engine, now - dt.timedelta(days=1))
    items = [result(kept_id, kept_row, now), result(old_id, old_row, now), result(old_id, old_row, now),
             result(deleted_id, deleted_row, now), result(kept_id, None, now + dt.timedelta(seconds=1))]  # fmt: skip
    with tenant_engine.begin() as conn:
        conn.execute(text("DELETE FROM collection_configs WHERE server_id IN (:a, :b)"), {"a": old_id, "b": deleted_id})
        conn.execute(text("DELETE FROM servers WHERE id IN (:a, :b)"), {"a": old_id, "b": deleted_id})
    new_id, new_row = add_server(tenant_engine, now, server_id=old_id)
    assert (new_id, new_row != old_row) == (old_id, True)

    with tenant_engine.begin() as conn:
        kept, gone = current_items(conn, items)
        assert write_items(conn, kept) == 2
    assert [item.server_id for item in kept] == [kept_id, kept_id]  # the one without a row: an earlier spool's
    assert gone == {old_id: ("replaced", 2), deleted_id: ("deleted", 1)}
    with tenant_engine.connect() as conn:
        stored = conn.execute(text("SELECT server_id FROM metric_snapshots")).scalars().all()
        status = conn.execute(text("SELECT status FROM servers WHERE id = :s"), {"s": new_id}).scalar()
    assert stored == [kept_id, kept_id] and status == "unknown"


def test_a_replaced_row_starts_from_nothing_and_an_outcome_of_the_old_one_is_not_recorded() -> None:
    written: list[WriteItem] = []
    recorder = OutcomeRecorder("acme", 120.0, TenantStats(), written.append, collection_timeout=5.0)
    endpoint = Endpoint("127.0.0.1", 1433, "mon", "pw", "no", False)
    refused = CollectionFailure(CONNECT, "refused", phase="connect")
    old = Target(7, "old", endpoint, 30.0, "auto", row="'2026-01-01'")
    new = Target(7, "new", endpoint, 30.0, "auto", row="'2026-06-01'")
    recorder.follow_server_list(ServerRows([old], []), {})
    recorder.record(CollectionOutcome(old, time.time(), 5, None, refused))
    assert written[-1].row == old.row
    recorder.states[7] = ServerState(status="online", consecutive_failures=0)
    stored_for_new = ServerState(status="offline", consecutive_failures=4)
    recorder.follow_server_list(ServerRows([new], []), {7: stored_for_new})
    assert recorder.state_of(7) == stored_for_new, "the new row's stored state, not the old server's"
    count = len(written)
    recorder.record(CollectionOutcome(old, time.time(), 5, None, refused))  # in flight across the swap
    assert len(written) == count and recorder.state_of(7) == stored_for_new
    recorder.follow_server_list(ServerRows([new], []), {})
    recorder.record(CollectionOutcome(new, time.time(), 5, None, refused))
    assert written[-1].row == new.row
