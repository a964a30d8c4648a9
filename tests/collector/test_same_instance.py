"""Two server rows of one tenant reaching the same SQL Server instance: its figures are stored twice. Told by what
the instance says of itself (``@@SERVERNAME``, its start time; the database too on Azure SQL Database), so two
names of one host are caught: one WARNING ``servers.same_instance`` per pair."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest

from supervisor.children.same_instance import SameInstanceWatch, instance_identity
from tests.helpers.deployment import TenantDeployment
from tests.helpers.waiting import wait_until

STARTED = dt.datetime(2026, 1, 1)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if getattr(r, "event", None) == "servers.same_instance"]


def test_one_warning_per_pair_and_none_for_databases_of_one_azure_server(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "supervisor.child")
    watch = SameInstanceWatch()
    boxed = instance_identity("SQL01", STARTED, 3, "master")
    for _ in range(3):
        watch.note(1, "sql01", boxed, {})
        watch.note(2, "sql01-alias", instance_identity("SQL01", STARTED, 3, "sales"), {})  # instance-wide figures
        watch.note(3, "sql02", instance_identity("SQL02", STARTED, 3, "master"), {})
    assert warnings(caplog) == [
        "servers sql01 and sql01-alias reach the same SQL Server instance (SQL01): its figures are stored under both"
    ]
    watch.note(4, "sales", instance_identity("az1", STARTED, 5, "sales"), {})
    watch.note(5, "hr", instance_identity("az1", STARTED, 5, "hr"), {})
    assert len(warnings(caplog)) == 1
    watch.note(2, "sql01-alias", instance_identity("SQL01", STARTED + dt.timedelta(hours=1), 3, "m"), {})  # restarted
    watch.note(2, "sql01-alias", boxed, {})
    assert len(warnings(caplog)) == 2  # a pair that parted and met again is news again
    watch.forget(1)
    watch.note(1, "sql01", instance_identity(None, STARTED, 3, "master"), {})
    assert len(warnings(caplog)) == 2
    watch.retain({1, 3, 4, 5})  # sql01-alias removed from the list
    watch.note(6, "sql01-new", boxed, {})
    watch.note(1, "sql01", boxed, {})
    assert warnings(caplog)[-1].startswith("servers sql01-new and sql01 reach")  # not the removed one's name
    assert len(warnings(caplog)) == 3


def test_two_rows_for_one_simulated_server_are_named(tmp_path: Path, simulator, child_processes) -> None:
    sim = simulator([{"name": "s1"}, {"name": "s2"}])
    deployment = TenantDeployment(tmp_path, "freetds", f"sqlite:///{tmp_path}/tenant.db", collection_interval=1)
    deployment.add("s1", sim.ports["s1"])
    deployment.add("s1-again", sim.ports["s1"])
    deployment.add("s2", sim.ports["s2"])
    child = child_processes(deployment)

    def named() -> list[dict[str, object]]:
        return [e for e in deployment.log_events() if e.get("event") == "servers.same_instance"]

    wait_until(lambda: named(), 30, lambda: deployment.log_events()[-5:])
    wait_until(lambda: sum(e.get("event") == "collection.succeeded" for e in deployment.log_events()) >= 9, 30,
               "three rounds")  # fmt: skip
    [warning] = named()
    assert {warning["server"], warning["other"]} == {"s1", "s1-again"} and warning["level"] == "WARNING"
    assert child.terminate()[0] == 0
