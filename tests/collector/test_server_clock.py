"""A SQL Server whose clock steps (NTP, a resumed VM, an operator) while it is collected, through a real child and
a real driver. The rate divides by the server's elapsed time: across a step of 600 s a probe stored 2.15/s for a
true 500/s. Now the sample across a step has no rate nor wait rows ("server clock stepped"), the samples after it
are right again, and a clock that far off is named in one WARNING (its snapshots are dated by its clock) and one
INFO once it agrees again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import text

from tests.helpers.deployment import TenantDeployment
from tests.helpers.waiting import wait_until

RATE = 500.0  # the simulator's counter grows exactly at this rate


def rated(deployment: TenantDeployment) -> list[tuple[float, float]]:
    with deployment.engine.connect() as conn:
        rows = conn.execute(text("SELECT batch_requests_per_sec, interval_seconds FROM metric_snapshots "
                                 "WHERE batch_requests_per_sec IS NOT NULL")).all()  # fmt: skip
    return [(rate, interval) for rate, interval in rows]


def events(deployment: TenantDeployment, name: str) -> list[dict[str, Any]]:
    return [e for e in deployment.log_events() if e.get("event") == name]


def stepped(deployment: TenantDeployment) -> int:
    """Samples without a rate for a clock step (back past the previous sample: the clock did not advance)."""
    reasons = ("server clock stepped", "server clock did not advance")
    return sum(any(r in e["message"] for r in reasons) for e in events(deployment, "collection.rebaselined"))


def test_a_server_clock_step_gives_one_sample_without_a_rate_and_is_named(
    tmp_path: Path, simulator, child_processes
) -> None:
    sim = simulator([{"name": "s1"}])
    deployment = TenantDeployment(tmp_path, "freetds", f"sqlite:///{tmp_path}/tenant.db", collection_interval=1)
    deployment.add("s1", sim.ports["s1"])
    child = child_processes(deployment)
    wait_until(lambda: len(rated(deployment)) >= 2, 30, lambda: deployment.log_events()[-5:])

    sim.set_faults("s1", clock_offset_s=600)
    wait_until(lambda: stepped(deployment) == 1, 30, lambda: deployment.log_events()[-5:])
    after_step = len(rated(deployment))
    wait_until(lambda: len(rated(deployment)) >= after_step + 2, 30, "rates again after the step")
    [skewed] = [e for e in events(deployment, "collection.clock_skew") if e["level"] == "WARNING"]
    assert skewed["server"] == "s1" and 590 <= skewed["skew_s"] <= 610 and "ahead of" in skewed["message"]

    sim.set_faults("s1", clock_offset_s=-1)  # back by 601 s
    wait_until(lambda: stepped(deployment) == 2, 30, lambda: deployment.log_events()[-5:])
    wait_until(lambda: len(events(deployment, "collection.clock_skew")) == 2, 30, "the clock agrees again")
    assert events(deployment, "collection.clock_skew")[-1]["level"] == "INFO"
    before = len(rated(deployment))
    wait_until(lambda: len(rated(deployment)) >= before + 2, 30, "rates again after the step back")

    assert child.terminate()[0] == 0
    for rate, interval in rated(deployment):
        assert abs(rate - RATE) <= 0.05 * RATE and interval < 5, (rate, interval)  # no rate across a step
