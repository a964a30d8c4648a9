"""The tenant runtime's last line of defence: an outcome that cannot be turned into rows (a bug, or data no
check foresaw) is that server's ``internal`` failure, logged with its traceback once per server and error;
the collection thread and the child's main loop never see the exception."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import time
from pathlib import Path

import pytest

from supervisor.children.collect import CollectionOutcome
from supervisor.children.connection_string import Endpoint
from supervisor.children.records import WriteItem
from supervisor.children.runtime import TenantRuntime
from supervisor.children.sample import Sample
from supervisor.children.targets import Target
from supervisor.ipc import ChildSpec
from tests.helpers.deployment import TENANT, TenantDeployment

NOW = dt.datetime(2026, 6, 1, 12, 0, 0)


def outcome(server_id: int, name: str) -> CollectionOutcome:
    """A sample that makes the recorder raise (its waits are no dict)."""
    sample = Sample(name, "16.0", "Windows", NOW - dt.timedelta(days=1), NOW, 10, 20, 50.0, 100, 200, 5, 1000)
    broken = dataclasses.replace(sample, waits=None)  # type: ignore[arg-type]
    target = Target(server_id, name, Endpoint("127.0.0.1", 1, "u", "p", "no", False), 30.0, "auto")
    return CollectionOutcome(target, time.time(), 12, broken, None)


def test_an_outcome_that_cannot_be_recorded_is_its_servers_internal_failure(
    tmp_path: Path, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    deployment = TenantDeployment(tmp_path, "freetds", sqlite_url)
    spec = ChildSpec(tenant_id=1, slug=TENANT, db_url=sqlite_url, instance_id="test", settings=deployment.settings)
    runtime = TenantRuntime(spec, threading.Event(), lambda beat: None, lambda: True)
    items: list[WriteItem] = []
    runtime.recorder._put = items.append  # what would go to the writer
    try:
        with caplog.at_level(logging.DEBUG, logger="supervisor.child"):
            for _ in range(3):
                runtime._record(outcome(7, "broken"))  # would raise TypeError without the safety net
            runtime._record(outcome(8, "other"))
        assert runtime.recorder.state_of(7).consecutive_failures == 3
        assert [(item.server_id, item.snapshot) for item in items] == [(7, None)] * 3 + [(8, None)]
        status = items[-2].status
        assert (status.error_class, status.consecutive_failures, status.success) == ("internal", 3, False)
        assert status.error is not None and status.error.startswith("the collection could not be recorded: TypeError")
        assert runtime.stats.results.get("internal") == 4 and runtime.stats.collections_ok == 0
        logged = [r for r in caplog.records if getattr(r, "event", None) == "collection.record_failed"]
        assert [(r.server, r.exc_info is not None) for r in logged] == [("broken", True), ("other", True)]  # type: ignore[attr-defined]
    finally:
        runtime.engine.dispose()
