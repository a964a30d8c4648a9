"""Server registration in a tenant DB (what the admin CLI changes; the child only reads it)."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, fields

from sqlalchemy import Connection, Engine, RowMapping, Select, select

from supervisor.clock import utcnow
from supervisor.config import COLLECTION_MODES, ENCRYPT_MODES
from supervisor.errors import UsageError
from supervisor.storage.tenant_schema import collection_configs, servers

MAX_NAME_LENGTH = 128


@dataclass(frozen=True)
class ServerSpec:
    """What ``server add`` registers. ``password`` is plaintext here and encrypted before storing."""

    name: str
    host: str
    port: int = 1433
    username: str | None = None
    password: str | None = None
    interval_seconds: int | None = None
    enabled: bool = True
    encrypt: str | None = None
    trust_server_certificate: bool | None = None
    collection_mode: str | None = None


@dataclass(frozen=True)
class ServerInfo:
    """A server as ``server list`` shows it (never a password)."""

    id: int
    name: str
    host: str
    port: int
    username: str | None
    enabled: bool
    interval_seconds: int | None
    encrypt: str | None
    trust_server_certificate: bool | None
    collection_mode: str | None
    status: str
    status_changed_at: dt.datetime | None
    last_checked_at: dt.datetime | None
    last_success_at: dt.datetime | None
    last_error: str | None
    last_error_class: str | None
    consecutive_failures: int
    removed_at: dt.datetime | None

    def as_json(self) -> dict:
        return {
            key: value.isoformat() + "Z" if isinstance(value, dt.datetime) else value
            for key, value in asdict(self).items()
        }


def validate_spec(spec: ServerSpec) -> None:
    if not spec.name or len(spec.name) > MAX_NAME_LENGTH or not spec.name.isprintable():
        raise UsageError(f"invalid server name {spec.name!r}: 1-{MAX_NAME_LENGTH} printable characters")
    if not spec.host or not spec.host.isprintable() or any(ch.isspace() for ch in spec.host):
        raise UsageError(f"invalid --host {spec.host!r}: a host name or IP address without spaces")
    if not 1 <= spec.port <= 65535:
        raise UsageError(f"invalid --port {spec.port}: must be between 1 and 65535")
    if spec.interval_seconds is not None and spec.interval_seconds < 1:
        raise UsageError(f"invalid --interval {spec.interval_seconds}: must be at least 1 second")
    if spec.encrypt is not None and spec.encrypt not in ENCRYPT_MODES:
        raise UsageError(f"invalid --encrypt {spec.encrypt!r}: expected one of {', '.join(ENCRYPT_MODES)}")
    if spec.collection_mode is not None and spec.collection_mode not in COLLECTION_MODES:
        raise UsageError(f"invalid collection mode {spec.collection_mode!r}")


def add_server(engine: Engine, spec: ServerSpec, password_encrypted: str | None) -> ServerInfo:
    """Register ``spec``. A removed server of the same name is brought back with the new settings."""
    validate_spec(spec)
    now = utcnow()
    values = {
        "host": spec.host,
        "port": spec.port,
        "username": spec.username,
        "password_encrypted": password_encrypted,
        "encrypt": spec.encrypt,
        "trust_server_certificate": spec.trust_server_certificate,
        "collection_mode": spec.collection_mode,
        "removed_at": None,
    }
    config = {"enabled": spec.enabled, "interval_seconds": spec.interval_seconds}
    with engine.begin() as conn:
        existing = conn.execute(select(servers.c.id, servers.c.removed_at).where(servers.c.name == spec.name)).first()
        if existing is not None and existing.removed_at is None:
            raise UsageError(f"server {spec.name!r} already exists")
        if existing is not None:
            server_id = existing.id
            conn.execute(servers.update().where(servers.c.id == server_id).values(**values))
            conn.execute(
                collection_configs.update().where(collection_configs.c.server_id == server_id).values(**config)
            )
        else:
            server_id = conn.execute(
                servers.insert().values(
                    name=spec.name, status="unknown", consecutive_failures=0, created_at=now, **values
                )
            ).inserted_primary_key[0]
            conn.execute(collection_configs.insert().values(server_id=server_id, **config))
        return _load(conn, spec.name)


def list_servers(engine: Engine, *, include_removed: bool = False) -> list[ServerInfo]:
    with engine.connect() as conn:
        query = _info_query().order_by(servers.c.name)
        if not include_removed:
            query = query.where(servers.c.removed_at.is_(None))
        return [_info(row) for row in conn.execute(query).mappings()]


def set_enabled(engine: Engine, name: str, enabled: bool) -> ServerInfo:
    with engine.begin() as conn:
        info = _load(conn, name)
        conn.execute(
            collection_configs.update().where(collection_configs.c.server_id == info.id).values(enabled=enabled)
        )
        return _load(conn, name)


def remove_server(engine: Engine, name: str) -> ServerInfo:
    """Stop collecting from ``name``; its snapshots and events stay."""
    with engine.begin() as conn:
        info = _load(conn, name)
        conn.execute(servers.update().where(servers.c.id == info.id).values(removed_at=utcnow()))
        return _load(conn, name, include_removed=True)


def _info_query() -> Select:
    return select(
        servers,
        collection_configs.c.enabled,
        collection_configs.c.interval_seconds,
    ).join(collection_configs, collection_configs.c.server_id == servers.c.id)


def _load(conn: Connection, name: str, *, include_removed: bool = False) -> ServerInfo:
    query = _info_query().where(servers.c.name == name)
    if not include_removed:
        query = query.where(servers.c.removed_at.is_(None))
    row = conn.execute(query).mappings().first()
    if row is None:
        raise UsageError(f"unknown server {name!r}")
    return _info(row)


def _info(row: RowMapping) -> ServerInfo:
    values = {field.name: row[field.name] for field in fields(ServerInfo)}
    return ServerInfo(**{**values, "enabled": bool(values["enabled"])})
