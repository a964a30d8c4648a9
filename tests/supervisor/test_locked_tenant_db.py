"""A tenant DB that holds the child's reads (PostgreSQL ``LOCK TABLE servers`` by another program, longer than
``heartbeat_timeout``) costs no collection and no restart: the server list is read off the child's main thread
(``server_list_reader``), which goes on scheduling and sending heartbeats; what was collected meanwhile is
stored once the lock is gone."""

from __future__ import annotations

import datetime as dt
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.pool import NullPool

from supervisor.clock import utcnow
from supervisor.storage.tenant_schema import metric_snapshots
from tests.helpers.deployment import Deployment
from tests.helpers.simulator import SIM_PASSWORD, SIM_USER, Simulator
from tests.helpers.waiting import wait_until

LOCK_SECONDS = 14
HEARTBEAT_TIMEOUT = 8  # shorter than the lock: a blocked main thread would be judged hung and killed


def snapshots_between(url: str, start: dt.datetime, end: dt.datetime) -> int:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            query = select(func.count()).where(metric_snapshots.c.collected_at.between(start, end))
            return int(conn.execute(query).scalar_one())
    finally:
        engine.dispose()


def hold_lock(url: str, locked: threading.Event, seconds: float) -> None:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(text("LOCK TABLE servers IN ACCESS EXCLUSIVE MODE"))
            locked.set()
            time.sleep(seconds)
    finally:
        engine.dispose()


def test_a_locked_tenant_db_stops_no_collection_and_no_child(
    tmp_path: Path, pg_database: Callable[[], str], simulator: Callable[[list[dict[str, Any]]], Simulator],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("SIM_PASSWORD", SIM_PASSWORD)
    ports = simulator([{"name": "s1"}, {"name": "s2"}]).ports
    tenant_url = pg_database()
    deployment = Deployment(tmp_path, fake_runtime=False)
    deployment.write_config(
        odbc_driver="FreeTDS", encrypt="no", collection_interval=1, collection_timeout=3, server_refresh_interval=1,
        heartbeat_timeout=HEARTBEAT_TIMEOUT, shutdown_timeout=6,
    )  # fmt: skip
    deployment.add_tenant("acme", "--db-url", tenant_url)
    for name, port in ports.items():
        deployment.cli(
            "server", "add", "acme", name, "--host", "127.0.0.1", "--port", str(port), "--user", SIM_USER,
            "--password-env", "SIM_PASSWORD", "--interval", "1", "--encrypt", "no",
        )  # fmt: skip
    supervisor = deployment.start()
    wait_until(lambda: snapshots_between(tenant_url, utcnow() - dt.timedelta(hours=1), utcnow()) >= 4, 60,
               "the first snapshots")  # fmt: skip
    locked = threading.Event()
    holder = threading.Thread(target=hold_lock, args=(tenant_url, locked, LOCK_SECONDS))
    holder.start()
    assert locked.wait(30)
    lock_start = utcnow()
    holder.join(LOCK_SECONDS + 30)
    lock_end = utcnow()
    # Collected while the lock was held, stored after it: two servers at 1 s make 2 a second. A main thread that
    # waits on the DB (even 2 s per read, then retrying) collects at most a third of them.
    window = (lock_start + dt.timedelta(seconds=2), lock_end - dt.timedelta(seconds=2))
    expected = 2 * (LOCK_SECONDS - 4)
    wait_until(lambda: snapshots_between(tenant_url, *window) >= 0.7 * expected, 60,
               lambda: f"{snapshots_between(tenant_url, *window)} snapshots collected during the lock")  # fmt: skip
    for event in ("child.watchdog", "child.killed", "child.exited"):
        assert not supervisor.events(event), supervisor.events(event)
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait_exit(60) == 0
