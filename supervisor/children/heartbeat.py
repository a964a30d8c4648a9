"""What a tenant child tells its parent in each heartbeat: its servers' statuses, its counts of collections
and results, its writer's backlog (``supervisor.ipc.Heartbeat``; the parent's metrics come from these)."""

from __future__ import annotations

import time
from collections.abc import Mapping

from supervisor.children.recorder import OutcomeRecorder
from supervisor.children.stats import TenantStats
from supervisor.children.status import OFFLINE, ONLINE
from supervisor.children.targets import Target
from supervisor.children.writer import Writer
from supervisor.ipc import Heartbeat, ServerReport


def tenant_heartbeat(
    recorder: OutcomeRecorder, stats: TenantStats, targets: Mapping[int, Target], writer: Writer, disabled: int,
    per_server: bool,
) -> Heartbeat:  # fmt: skip
    """Made with the recorder's lock held: pool threads record their own results."""
    statuses = [recorder.state_of(sid).status for sid in [*targets, *recorder.config_errors]]
    newest = stats.newest_snapshot
    return Heartbeat(
        sent_at=time.time(),
        servers_total=len(statuses),
        servers_online=statuses.count(ONLINE),
        servers_offline=statuses.count(OFFLINE),
        collections_ok=stats.collections_ok,
        collections_failed=stats.collections_failed,
        newest_snapshot_at=None if newest is None else newest.isoformat() + "Z",
        pending_writes=writer.pending(),
        servers_disabled=disabled,
        results=tuple(sorted(stats.results.items())),
        duration_counts=tuple(stats.duration_counts),
        duration_sum=stats.duration_sum,
        spooled_results=writer.spooled,
        servers=_server_reports(recorder, targets) if per_server else None,
    )


def _server_reports(recorder: OutcomeRecorder, targets: Mapping[int, Target]) -> tuple[ServerReport, ...]:
    return tuple(
        ServerReport(target.name, recorder.state_of(sid).status == ONLINE, recorder.last_duration.get(sid))
        for sid, target in targets.items()
    )
