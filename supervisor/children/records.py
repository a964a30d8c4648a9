"""What the writer stores for one finished collection, and its JSON form for the spool file."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from supervisor.children.deltas import Baseline
from supervisor.children.sample import WaitCounts
from supervisor.children.status import StatusUpdate


def row_identity(created_at: object) -> str:
    """Tells a server row from a later one given the same id: SQLite hands the highest id out again once its row
    is deleted (the web app deletes rows; ``server remove`` only marks them), so the id alone does not say which
    server a result belongs to. ``created_at`` as stored, whatever the web app put there, is the same text at every
    read of one row."""
    return repr(created_at)


@dataclass(frozen=True)
class SnapshotRow:
    """A ``metric_snapshots`` row without its id; ``waits`` become ``wait_stats`` rows."""

    server_id: int
    collected_at: dt.datetime
    cpu_percent: int | None
    system_cpu_percent: int | None
    memory_percent: float | None
    sql_memory_mb: int | None
    sql_target_memory_mb: int | None
    connection_count: int | None
    batch_requests_per_sec: float | None
    interval_seconds: float | None
    duration_ms: int
    waits: dict[str, WaitCounts] = field(default_factory=dict)

    def columns(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _SNAPSHOT_COLUMNS}


_SNAPSHOT_COLUMNS = tuple(name for name in SnapshotRow.__dataclass_fields__ if name != "waits")


@dataclass(frozen=True)
class WriteItem:
    server_id: int
    status: StatusUpdate
    snapshot: SnapshotRow | None = None
    baseline: Baseline | None = None
    #: The server row it was collected for (``row_identity``): none is stored once that row is gone or
    #: another has its id. None (spool files of earlier versions): stored under the id as it is.
    row: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "server_id": self.server_id,
            "row": self.row,
            "status": _encode(asdict(self.status)),
            "snapshot": None if self.snapshot is None else _encode(asdict(self.snapshot)),
            "baseline": None if self.baseline is None else _encode(asdict(self.baseline)),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WriteItem:
        status = _decode(data["status"])
        snapshot = _decode(data["snapshot"]) if data.get("snapshot") else None
        baseline = _decode(data["baseline"]) if data.get("baseline") else None
        if snapshot is not None:
            snapshot["waits"] = _waits(snapshot.get("waits", {}))
        if baseline is not None:
            baseline["waits"] = _waits(baseline.get("waits", {}))
            baseline["unknown_waits"] = tuple(baseline.get("unknown_waits", ()))
        return cls(
            server_id=int(data["server_id"]),
            status=StatusUpdate(**_known(StatusUpdate, status)),
            snapshot=SnapshotRow(**_known(SnapshotRow, snapshot)) if snapshot is not None else None,
            baseline=Baseline(**_known(Baseline, baseline)) if baseline is not None else None,
            row=row if isinstance(row := data.get("row"), str) else None,
        )


def _known(kind: type, values: dict[str, Any]) -> dict[str, Any]:
    """The keys ``kind`` has: a spool file of a newer version (a host rolled back) carries keys this one lacks,
    and its results are stored without them rather than lost."""
    names = kind.__dataclass_fields__  # type: ignore[attr-defined]
    return {key: value for key, value in values.items() if key in names}


_TIME_KEYS = frozenset({"collected_at", "checked_at", "sqlserver_start_time", "sample_time"})


def _encode(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value.isoformat() if isinstance(value, dt.datetime) else value for key, value in values.items()}


def _decode(values: dict[str, Any]) -> dict[str, Any]:
    return {
        key: dt.datetime.fromisoformat(value) if key in _TIME_KEYS and isinstance(value, str) else value
        for key, value in values.items()
    }


def _waits(data: dict[str, Any]) -> dict[str, WaitCounts]:
    return {name: WaitCounts(**counts) for name, counts in data.items()}
