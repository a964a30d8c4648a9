"""Half a tenant's servers unreachable (a dead link: connections accepted, nothing answered) must not starve the
other half: their collections wait behind no failing server's and find a thread the failing ones may not take
(``CollectionPool`` ``reserved``). Before, every thread was held by the failing servers' timeouts and a probe's
healthy servers missed 70 % of their slots. A real child, the simulator's ``blackhole`` fault."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from sqlalchemy import text

from supervisor.clock import stored_utc
from tests.helpers.deployment import TenantDeployment
from tests.helpers.waiting import wait_until

GOOD, BAD = 6, 12
WINDOW = 10


def healthy_snapshots(deployment: TenantDeployment, good_ids: set[int], since: dt.datetime, until: dt.datetime) -> int:
    """Snapshots of the healthy servers taken (their server's clock: the simulator's, this host's) in the window."""
    with deployment.engine.connect() as conn:
        rows = conn.execute(text("SELECT server_id, collected_at FROM metric_snapshots")).all()
    return sum(1 for sid, at in rows if sid in good_ids and since <= stored_utc(at) < until)  # type: ignore[operator]


def test_healthy_servers_keep_their_slots_while_the_others_time_out(tmp_path: Path, simulator, child_processes) -> None:
    fleet = [{"name": f"good-{n}"} for n in range(GOOD)]
    fleet += [{"name": f"bad-{n}", "faults": {"blackhole": True}} for n in range(BAD)]
    sim = simulator(fleet)
    deployment = TenantDeployment(tmp_path, "freetds", f"sqlite:///{tmp_path}/tenant.db", concurrency=3,
                                  collection_interval=1, server_refresh_interval=30)  # fmt: skip
    good_ids = {deployment.add(entry["name"], sim.ports[entry["name"]]) for entry in fleet[:GOOD]}
    for entry in fleet[GOOD:]:
        deployment.add(entry["name"], sim.ports[entry["name"]])
    child = child_processes(deployment)
    wait_until(lambda: sum(e.get("event") == "collection.failed" for e in deployment.log_events()) >= BAD, 30,
               "every unreachable server failed once")  # fmt: skip
    since = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    time.sleep(WINDOW + 1)
    assert child.terminate()[0] == 0  # everything collected is stored by then
    stored = healthy_snapshots(deployment, good_ids, since, since + dt.timedelta(seconds=WINDOW))
    slots = GOOD * WINDOW  # one a second each
    # The unreachable ones alone would keep three threads busy for ever (12 login timeouts of 1 s a second).
    assert stored >= 0.9 * slots, f"{stored} of {slots} slots of the healthy servers collected"
