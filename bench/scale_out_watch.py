"""What bench.scale_out watches: the lease table and the instances in the system DB (sampled every 0.2 s in a
thread), the snapshots in the tenant DBs, the supervisors' logs; and the figures made of them."""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil

SAMPLE_EVERY = 0.2
#: Stopped for a move to another instance (handle.StopReason.NOT_WANTED).
MOVED = "tenant no longer active here"


class WatchedHost(Protocol):
    hostname: str
    deployment: Any


@dataclass(frozen=True)
class InstanceRow:
    host: str
    status: str
    heartbeat_at: dt.datetime


@dataclass
class Sample:
    at: float  # time.time()
    owners: dict[str, str | None]  # slug -> owner of a lease that has not expired
    acquired: dict[str, dt.datetime | None]
    expires: dict[str, dt.datetime | None]
    servers: dict[str, int | None]
    instances: dict[str, InstanceRow]
    live: set[str] = field(default_factory=set)  # instance ids with a heartbeat within the lease

    def host_of(self, instance_id: str | None) -> str | None:
        row = self.instances.get(instance_id or "")
        return row.host if row else None

    def owners_by_host(self) -> dict[str, str | None]:
        return {slug: self.host_of(owner) for slug, owner in self.owners.items()}

    def running_hosts(self) -> set[str]:
        return {self.instances[i].host for i in self.live}

    def all_weighed(self, sizes: dict[str, int]) -> bool:
        return all(self.owners[s] is not None and self.servers[s] == size for s, size in sizes.items())


def loads_of(sample: Sample, sizes: dict[str, int]) -> dict[str, int]:
    """Servers held per live host (0 for a live host holding nothing)."""
    loads = dict.fromkeys(sorted(sample.running_hosts()), 0)
    for slug, host in sample.owners_by_host().items():
        if host is not None:
            loads[host] = loads.get(host, 0) + sizes[slug]
    return loads


def local_optimum(sample: Sample, sizes: dict[str, int]) -> bool:
    """Every tenant leased, and no host over its share holds a tenant that could move to the least loaded other host
    and narrow their gap (the leases' settled state, supervisor/parent/leases.py)."""
    by_host = sample.owners_by_host()
    if any(host is None for host in by_host.values()):
        return False
    loads = loads_of(sample, sizes)
    share = sum(sizes.values()) / len(loads)
    for host, load in loads.items():
        lowest = min((v for h, v in loads.items() if h != host), default=load)
        if load > share and any(sizes[s] < load - lowest for s, h in by_host.items() if h == host):
            return False
    return True


def fmt_s(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds:.1f} s"


class LeaseWatch:
    def __init__(self, dsn: str, sizes: dict[str, int], hosts: Sequence[WatchedHost], tenant_dir: Path,
                 lease: float) -> None:  # fmt: skip
        self.dsn = dsn
        self.sizes = sizes
        self.hosts = list(hosts)
        self.tenant_dir = tenant_dir
        self.lease = lease
        self.samples: list[Sample] = []
        self.gone_at: dict[int, float] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="lease-watch", daemon=True)
        self.error: str | None = None

    def start(self) -> LeaseWatch:
        self._thread.start()
        self.wait(lambda s: True, 30, "the first sample of the system DB")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        import psycopg

        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                while not self._stop.is_set():
                    sample = self._sample(conn)
                    with self._lock:
                        self.samples.append(sample)
                    self._stop.wait(SAMPLE_EVERY)
        except Exception as exc:  # reported by wait(): the bench cannot go on blind
            self.error = f"{type(exc).__name__}: {exc}"

    def _sample(self, conn: Any) -> Sample:
        at = time.time()
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        leases = conn.execute(
            "SELECT t.slug, l.owner, l.acquired_at, l.expires_at, l.servers FROM tenants t "
            "LEFT JOIN tenant_leases l ON l.tenant_id = t.id"
        ).fetchall()
        rows = conn.execute("SELECT id, host, status, heartbeat_at FROM supervisor_instances").fetchall()
        instances = {r[0]: InstanceRow(r[1], r[2], r[3]) for r in rows}
        live = {i for i, r in instances.items()
                if r.status == "running" and (now - r.heartbeat_at).total_seconds() <= self.lease}  # fmt: skip
        owners = {slug: owner if owner and expires and expires >= now else None
                  for slug, owner, _, expires, _ in leases}  # fmt: skip
        acquired, expires, servers = ({r[0]: r[index] for r in leases} for index in (2, 3, 4))
        return Sample(at, owners, acquired, expires, servers, instances, live)

    def latest(self) -> Sample:
        with self._lock:
            return self.samples[-1]

    def wait(self, predicate: Callable[[Sample], bool], timeout: float, what: str) -> Sample:
        deadline = time.monotonic() + timeout
        seen = -1
        while time.monotonic() < deadline:
            if self.error:
                raise RuntimeError(f"watching the system DB failed: {self.error}")
            with self._lock:
                fresh = self.samples[seen + 1 :]
                seen = len(self.samples) - 1
            for sample in fresh:
                if predicate(sample):
                    return sample
            time.sleep(SAMPLE_EVERY / 2)
        raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")

    def wait_settled(self, since: float, poll: float, timeout: float) -> tuple[float, Sample]:
        """Wait until every tenant is leased and no lease changed owner for two polls and a second; returns when
        the last change came (``since`` if none did after it) and the settled sample."""
        quiet = 2 * poll + 1.0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                history = list(self.samples)
            last = history[-1]
            changed = since
            for sample in reversed(history):
                if sample.at < since:
                    break
                if sample.owners != last.owners:
                    changed = max(since, sample.at + SAMPLE_EVERY / 2)  # between this sample and the next
                    break
            if None not in last.owners.values() and last.at - changed >= quiet:
                return changed, last
            time.sleep(SAMPLE_EVERY)
        raise TimeoutError(f"the leases did not settle within {timeout:g} s")

    def wait_pids_gone(self, pids: Sequence[int], timeout: float) -> float:
        deadline = time.monotonic() + timeout
        pending = set(pids)
        while pending and time.monotonic() < deadline:
            for pid in list(pending):
                if not _alive(pid):
                    self.gone_at[pid] = time.time()
                    pending.discard(pid)
            time.sleep(0.02)
        if pending:
            raise TimeoutError(f"children {sorted(pending)} of the killed supervisor still run after {timeout:g} s")
        return max(self.gone_at.get(pid, time.time()) for pid in pids) if pids else time.time()

    def wait_collecting(self, slugs: Sequence[str], old_ids: set[str], since: float, timeout: float,
                        ) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:  # fmt: skip
        """When each tenant was claimed by an instance other than ``old_ids`` (its lease's ``acquired_at``), when its
        first snapshot at or after that moment was collected, and when every one of its servers had one (epoch
        seconds)."""
        claimed: dict[str, float] = {}
        collecting: dict[str, float] = {}
        every_server: dict[str, float] = {}
        deadline = time.monotonic() + timeout
        seen = 0
        while len(every_server) < len(slugs) and time.monotonic() < deadline:
            with self._lock:
                fresh = self.samples[seen:]
                seen = len(self.samples)
            for sample in fresh:
                if sample.at < since:
                    continue
                for slug in slugs:
                    owner = sample.owners[slug]
                    acquired = sample.acquired[slug]
                    if slug not in claimed and owner is not None and owner not in old_ids and acquired is not None:
                        claimed[slug] = acquired.replace(tzinfo=dt.UTC).timestamp()  # the claim's own time
            latest = self.latest()
            for slug in claimed:
                acquired = latest.acquired[slug]
                if slug not in every_server and acquired is not None:
                    firsts = self.first_snapshots(slug, acquired)
                    if firsts:
                        collecting.setdefault(slug, min(firsts))
                    if len(firsts) == self.sizes[slug]:
                        every_server[slug] = max(firsts)
            time.sleep(0.25)
        return claimed, collecting, every_server

    def first_snapshots(self, slug: str, after: dt.datetime) -> list[float]:
        """Each server's first snapshot at or after ``after`` (servers with none are left out)."""
        with contextlib.closing(sqlite3.connect(f"file:{self.tenant_dir / slug}.db?mode=ro", uri=True)) as conn:
            conn.execute("PRAGMA busy_timeout = 2000")
            rows = conn.execute("SELECT MIN(collected_at) FROM metric_snapshots WHERE collected_at >= ? "
                                "GROUP BY server_id", (after.strftime("%Y-%m-%d %H:%M:%S.%f"),)).fetchall()  # fmt: skip
        return [dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC).timestamp() for (value,) in rows]

    # --- logs -------------------------------------------------------------------------------------------------
    def events(self, host: WatchedHost, name: str) -> list[dict[str, Any]]:
        return [e for e in host.deployment.log_events() if e.get("event") == name]

    def stops_logged(self, host: WatchedHost, since: float) -> list[dict[str, Any]]:
        return [e for e in self.events(host, "child.stopping") if e.get("reason") == MOVED and _epoch(e) >= since]

    def spans(self) -> dict[str, list[tuple[float, float, int]]]:
        """Each tenant's children as (started, ended, supervisor pid), from the logs; a child of a killed supervisor
        lived until it was seen gone."""
        spans: dict[str, list[tuple[float, float, int]]] = {}
        for host in self.hosts:
            exits = {e["child_pid"]: _epoch(e) for e in self.events(host, "child.exited")}
            for start in self.events(host, "child.started"):
                pid = start["child_pid"]
                end = exits.get(pid, self.gone_at.get(pid, float("inf")))
                spans.setdefault(start["tenant"], []).append((_epoch(start), end, start["pid"]))
        return spans

    def overlaps(self) -> list[str]:
        """Children of one tenant under two supervisor processes alive at the same time."""
        found = []
        for slug, items in self.spans().items():
            for a_start, a_end, a_parent in items:
                for b_start, b_end, b_parent in items:
                    if a_parent < b_parent and a_start < b_end and b_start < a_end:
                        found.append(f"{slug} under supervisor pids {a_parent} and {b_parent}")
        return found

    def handover(self, slug: str, first: float, second: float) -> str | None:
        """How the tenant's child changed between two snapshot times, if it did (one child ended, another started)."""
        items = self.spans().get(slug, [])
        ended = [end for _, end, _ in items if first <= end <= second]
        started = [start for start, _, _ in items if first <= start <= second]
        if ended and started:
            moment = dt.datetime.fromtimestamp
            return (f"its child exited at {moment(min(ended), dt.UTC):%H:%M:%S.%f} and the next started at "
                    f"{moment(max(started), dt.UTC):%H:%M:%S.%f}")  # fmt: skip
        return None


def _epoch(event: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
