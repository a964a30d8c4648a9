"""The servers a child collects from: enabled, not removed, read from the tenant DB."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Connection, select

from supervisor.children.connection_string import Endpoint
from supervisor.children.deltas import Baseline
from supervisor.children.status import ServerState
from supervisor.config import Settings
from supervisor.errors import CONFIG, CollectorError
from supervisor.logs import register_secret
from supervisor.secret_box import PasswordDecryptor
from supervisor.storage.tenant_schema import collection_configs, counter_baselines, servers

log = logging.getLogger("supervisor.child.targets")


@dataclass(frozen=True)
class Target:
    server_id: int
    name: str
    endpoint: Endpoint
    interval_seconds: float
    collection_mode: str  # auto / procedure / adhoc, the global setting filled in


def load_targets(
    conn: Connection, settings: Settings, box: PasswordDecryptor, tenant: str, *, name: str | None = None
) -> list[Target]:
    """Enabled, non-removed servers; with ``name``, that server whether enabled or not."""
    query = (
        select(servers, collection_configs.c.interval_seconds)
        .join(collection_configs, collection_configs.c.server_id == servers.c.id)
        .where(servers.c.removed_at.is_(None))
        .order_by(servers.c.id)
    )
    only = collection_configs.c.enabled.is_(True) if name is None else servers.c.name == name
    query = query.where(only)
    targets = []
    for row in conn.execute(query).mappings():
        try:
            password = box.decrypt(row["password_encrypted"]) if row["password_encrypted"] else None
        except CollectorError as exc:
            log.error(
                "cannot decrypt the password of server %s: %s",
                row["name"],
                exc,
                extra={
                    "event": "servers.secret_error",
                    "tenant": tenant,
                    "server": row["name"],
                    "error_class": CONFIG,
                },
            )
            continue
        register_secret(password)
        endpoint = Endpoint(
            host=row["host"],
            port=row["port"],
            username=row["username"],
            password=password,
            encrypt=row["encrypt"] or settings.encrypt,
            trust_server_certificate=(
                settings.trust_server_certificate
                if row["trust_server_certificate"] is None
                else bool(row["trust_server_certificate"])
            ),
        )
        targets.append(
            Target(
                server_id=row["id"],
                name=row["name"],
                endpoint=endpoint,
                interval_seconds=float(row["interval_seconds"] or settings.collection_interval),
                collection_mode=row["collection_mode"] or settings.collection_mode,
            )
        )
    return targets


def load_states(conn: Connection) -> dict[int, ServerState]:
    rows = conn.execute(select(servers.c.id, servers.c.status, servers.c.consecutive_failures))
    return {row.id: ServerState(row.status or "unknown", row.consecutive_failures or 0) for row in rows}


def load_baselines(conn: Connection) -> dict[int, Baseline]:
    baselines = {}
    for row in conn.execute(select(counter_baselines)).mappings():
        baselines[row["server_id"]] = Baseline(
            sqlserver_start_time=row["sqlserver_start_time"],
            sample_time=row["sample_time"],
            batch_requests_total=row["batch_requests_total"],
            waits=Baseline.parse_waits(row["waits_json"]),
        )
    return baselines
