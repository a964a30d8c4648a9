"""A finished collection → the rows to store: deltas against the baseline, status, snapshot.

Shared by the tenant runtime and ``collect-once`` so both take the same code path.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from supervisor.children.collect import CollectionOutcome
from supervisor.children.deltas import Baseline, Deltas, compute
from supervisor.children.records import SnapshotRow, WriteItem
from supervisor.children.status import ServerState, apply_outcome


@dataclass(frozen=True)
class Processed:
    item: WriteItem
    state: ServerState
    baseline: Baseline | None  # the new baseline (None when the collection failed)
    deltas: Deltas | None


def process_outcome(
    outcome: CollectionOutcome, previous: Baseline | None, state: ServerState, max_sample_gap: float, *,
    collection_timeout: float,
) -> Processed:
    server_id = outcome.target.server_id
    checked_at = dt.datetime.fromtimestamp(outcome.started_at, dt.UTC).replace(tzinfo=None)
    snapshot = baseline = deltas = None
    if outcome.sample is not None:
        sample = outcome.sample
        deltas = compute(previous, sample, max_sample_gap, checked_at, collection_timeout)
        snapshot = SnapshotRow(
            server_id=server_id,
            collected_at=sample.sample_time,
            cpu_percent=sample.cpu_percent,
            system_cpu_percent=sample.system_cpu_percent,
            memory_percent=sample.memory_percent,
            sql_memory_mb=sample.sql_memory_mb,
            sql_target_memory_mb=sample.sql_target_memory_mb,
            connection_count=sample.connection_count,
            batch_requests_per_sec=deltas.batch_requests_per_sec,
            interval_seconds=deltas.interval_seconds,
            duration_ms=outcome.duration_ms,
            waits=deltas.waits,
        )
        baseline = Baseline.of(sample, checked_at)
    new_state, update = apply_outcome(server_id, state, outcome.failure, checked_at)
    item = WriteItem(server_id, update, snapshot, baseline, row=outcome.target.row)
    return Processed(item, new_state, baseline, deltas)
