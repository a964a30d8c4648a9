"""Under memory pressure the kernel's OOM killer picks the process with the highest score: a tenant child (which
the parent restarts, the other tenants going on), not the parent (every tenant at once) nor the host's database.
Each child raises its own ``oom_score_adj`` (no privilege needed); the parent keeps what its service manager set."""

from __future__ import annotations

import os
from pathlib import Path

from supervisor.children.entry import OOM_SCORE_ADJ
from tests.helpers.deployment import Deployment
from tests.helpers.waiting import wait_until


def oom_score_adj(pid: int) -> int:
    return int(Path(f"/proc/{pid}/oom_score_adj").read_text())


def test_children_offer_themselves_to_the_oom_killer_before_their_parent(deployment: Deployment) -> None:
    deployment.add_tenant("acme")
    deployment.add_tenant("beta")
    supervisor = deployment.start()
    wait_until(lambda: len(supervisor.running_children()) == 2, 30, "two children")
    children = set(supervisor.running_children().values())
    # set in the child's first lines, a moment after the parent logged its start
    wait_until(lambda: {oom_score_adj(pid) for pid in children} == {OOM_SCORE_ADJ}, 10,
               lambda: {pid: oom_score_adj(pid) for pid in children})  # fmt: skip
    assert oom_score_adj(supervisor.pid) == oom_score_adj(os.getpid())  # inherited, as the service manager set it
