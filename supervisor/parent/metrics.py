"""What the parent serves on ``[metrics] listen``: Prometheus metrics, liveness and readiness.

Every scrape is computed from what the loop already holds (the children's handles and their last
heartbeats, the system DB's health, the leases): no DB query per request, and a tenant that is no
longer run here simply has no series. Counters a child reports are cumulative since that child
started; the handle carries the totals of earlier children of the tenant (``ChildHandle.carried``),
so a restart does not reset them. See README "Metrics and health".
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from importlib import metadata
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_TYPE
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from supervisor.config import Settings
from supervisor.errors import ConfigError
from supervisor.ipc import DURATION_BUCKETS
from supervisor.parent.handle import ChildState
from supervisor.parent.http_endpoint import Handler, HttpEndpoint, NoEndpoint, Response

if TYPE_CHECKING:
    from supervisor.parent.loop import Supervisor

MIB = 1024 * 1024
#: /healthz answers 503 when the loop has not turned for this many ticks.
HEALTHY_TICKS = 3


def _version() -> str:
    try:
        return metadata.version("collector-supervisor")
    except metadata.PackageNotFoundError:
        return "unknown"


def _gauge(name: str, documentation: str, *labels: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


class SupervisorCollector:
    """A prometheus_client collector reading the supervisor's state at scrape time."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.version = _version()

    def describe(self) -> list[Metric]:
        return []  # families depend on the tenants run now; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        sup = self.supervisor
        per_server = sup.settings.metrics.per_server
        results = CounterMetricFamily("collector_collections", "Collections by result (ok or the error class).",
                                      labels=["tenant", "result"])  # fmt: skip
        durations = HistogramMetricFamily("collector_collection_duration_seconds", "Collection wall time.",
                                          labels=["tenant"])  # fmt: skip
        servers = _gauge("collector_servers", "Servers by status.", "tenant", "status")
        age = _gauge("collector_newest_snapshot_age_seconds", "Seconds since the newest successful collection began "
                     "(this host's clock; a server's own may be off).", "tenant")
        pending = _gauge("collector_pending_writes", "Results waiting for the tenant DB.", "tenant")
        spooled = _gauge("collector_spooled_results", "Results waiting in spool files.", "tenant")
        state = _gauge("collector_child_state", "1 for the child's current state.", "tenant", "state")
        restarts = CounterMetricFamily("collector_child_restarts", "Restarts of the tenant's child.", labels=["tenant"])
        rss = _gauge("collector_child_rss_bytes", "Resident memory of the tenant's child.", "tenant")
        server_up = _gauge("collector_server_up", "1 while the server is online.", "tenant", "server")
        server_duration = _gauge("collector_server_last_duration_seconds", "Its last collection's wall time.",
                                 "tenant", "server")  # fmt: skip
        now = time.time()
        for handle in sorted(sup.handles.values(), key=lambda h: h.slug):
            slug = handle.slug
            for name in ChildState:
                state.add_metric([slug, name.value], 1.0 if handle.state is name else 0.0)
            restarts.add_metric([slug], handle.restarts)
            if handle.rss_mb is not None:
                rss.add_metric([slug], handle.rss_mb * MIB)
            totals = handle.totals()
            for result, count in sorted(totals.results.items()):
                results.add_metric([slug, result], count)
            cumulative, buckets = 0, []
            for bound, count in zip([*DURATION_BUCKETS, float("inf")], totals.duration_counts, strict=False):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else f"{bound:g}", cumulative))
            if buckets:
                durations.add_metric([slug], buckets, totals.duration_sum)
            beat = handle.last_heartbeat
            if beat is None:
                continue
            unknown = max(0, beat.servers_total - beat.servers_online - beat.servers_offline)
            for status, count in (("online", beat.servers_online), ("offline", beat.servers_offline),
                                  ("unknown", unknown), ("disabled", beat.servers_disabled)):  # fmt: skip
                servers.add_metric([slug, status], count)
            if beat.newest_snapshot_at:
                newest = dt.datetime.fromisoformat(beat.newest_snapshot_at.replace("Z", "+00:00"))
                age.add_metric([slug], max(0.0, now - newest.replace(tzinfo=dt.UTC).timestamp()))
            pending.add_metric([slug], beat.pending_writes)
            spooled.add_metric([slug], beat.spooled_results)
            if per_server and beat.servers:
                for report in beat.servers:
                    server_up.add_metric([slug, report.name], 1.0 if report.up else 0.0)
                    if report.last_duration_ms is not None:
                        server_duration.add_metric([slug, report.name], report.last_duration_ms / 1000)
        shown = {handle.slug for handle in sup.handles.values()}
        for slug in sup.system_db.refusals.slugs(time.monotonic()):  # given up here: no handle, but not silent
            if slug not in shown:
                for name in ChildState:
                    state.add_metric([slug, name.value], 1.0 if name is ChildState.NEWER_SCHEMA else 0.0)
        yield from (results, durations, servers, age, pending, spooled, state, restarts, rss)
        if per_server:
            yield from (server_up, server_duration)
        yield GaugeMetricFamily("collector_system_db_up", "1 while the system DB answers.",
                                value=1.0 if sup.system_db.healthy else 0.0)  # fmt: skip
        yield GaugeMetricFamily("collector_leases_held", "Tenants leased to this instance.", value=len(sup.runnable))
        info = InfoMetricFamily("collector", "This supervisor instance.")
        info.add_metric([], {"version": self.version, "instance": sup.identity.id, "host": sup.identity.host})
        yield info


class Endpoints:
    """The handler behind ``HttpEndpoint``: one registry, three paths."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SupervisorCollector(supervisor))
        ProcessCollector(registry=self.registry)

    def __call__(self, path: str, headers: dict[str, str]) -> Response:
        if path == "/metrics":
            if "application/openmetrics-text" in headers.get("accept", ""):
                return 200, OPENMETRICS_TYPE, generate_openmetrics(self.registry)
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if path == "/healthz":
            return self.healthz()
        if path == "/readyz":
            return self.readyz()
        return 404, "text/plain", b"not found: try /metrics, /healthz or /readyz\n"

    def healthz(self) -> Response:
        sup = self.supervisor
        idle = time.monotonic() - sup.last_turn
        limit = HEALTHY_TICKS * sup.tick_seconds
        body = {"healthy": idle <= limit, "loop_idle_s": round(idle, 3)}
        return (200 if body["healthy"] else 503), "application/json", (json.dumps(body) + "\n").encode()

    def readyz(self) -> Response:
        sup = self.supervisor
        not_running = {
            handle.slug: handle.state.value
            for tenant_id, handle in sorted(sup.handles.items())
            if tenant_id in sup.runnable and handle.state is not ChildState.RUNNING
        }
        not_leased = sorted(sup.active[t].slug for t in sup.runnable if t not in sup.handles)
        ready = sup.system_db.healthy and not not_running and not not_leased
        body: dict[str, object] = {"ready": ready, "system_db": "up" if sup.system_db.healthy else "down"}
        if not_running:
            body["children_not_running"] = not_running
        if refused := sup.system_db.refusals.slugs(time.monotonic()):  # left to other instances: this one is ready
            body["tenants_newer_schema"] = refused
        return (200 if ready else 503), "application/json", (json.dumps(body) + "\n").encode()


def open_endpoint(settings: Settings, handler: Handler) -> HttpEndpoint | NoEndpoint:
    """The metrics listener, bound now: an address in use is a configuration error (exit 2) at start."""
    address = settings.metrics.address()
    if address is None:
        return NoEndpoint()
    try:
        return HttpEndpoint(*address, handler)
    except OSError as exc:
        raise ConfigError(
            f"invalid metrics.listen = {settings.metrics.listen!r}: cannot listen there ({exc.strerror or exc}); "
            "two supervisors on one host need two ports"
        ) from None


def reopened_endpoint(
    endpoint: HttpEndpoint | NoEndpoint, old: Settings, new: Settings, handler: Handler
) -> HttpEndpoint | NoEndpoint:
    """After a reload: ``endpoint`` itself while ``metrics.listen`` names the same address, else one on the new
    address (the old one closed). ConfigError, the old one kept, when the new address cannot be used."""
    if new.metrics.address() == old.metrics.address():
        return endpoint
    replacement = open_endpoint(new, handler)
    endpoint.close()
    return replacement
