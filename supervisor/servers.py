"""Server registration in a tenant DB (what the admin CLI changes; the child only reads it)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace

from sqlalchemy import Connection, Engine, RowMapping, Select, select
from sqlalchemy.exc import IntegrityError

from supervisor import rules
from supervisor.clock import stored_utc, utcnow
from supervisor.errors import UsageError
from supervisor.storage.raw import raw
from supervisor.storage.tenant_schema import collection_configs, servers


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
    database: str | None = None  # None: master
    auth: str | None = None  # None: sql; or entra-token with one of the two token sources
    token_command: str | None = None
    token_file: str | None = None


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
    database: str | None
    auth: str | None
    token_command: str | None
    token_file: str | None
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
    """The rules a child applies to the stored row (``supervisor.rules``), checked before storing it."""
    _check(f"server name {rules.shown(spec.name)}", rules.server_name, spec.name)
    _check(f"--host {rules.shown(spec.host)}", rules.host, spec.host)
    _check(f"--port {spec.port}", rules.port, spec.port)
    if spec.username is not None:
        _check(f"--user {rules.shown(spec.username)}", rules.username, spec.username)
    if spec.password is not None:
        _check("password", rules.password, spec.password)
    if spec.interval_seconds is not None:
        _check(f"--interval {spec.interval_seconds}", rules.interval, spec.interval_seconds)
    if spec.encrypt is not None:
        _check(f"--encrypt {spec.encrypt!r}", rules.encrypt, spec.encrypt)
    if spec.collection_mode is not None:
        _check(f"--collection-mode {spec.collection_mode!r}", rules.collection_mode, spec.collection_mode)
    if spec.database is not None:
        _check(f"--database {rules.shown(spec.database)}", rules.database, spec.database)
    if spec.auth is not None:
        _check(f"--auth {rules.shown(spec.auth)}", rules.auth, spec.auth)
    if spec.token_command is not None:
        _check(f"--token-command {rules.shown(spec.token_command)}", rules.token_command, spec.token_command)
    if spec.token_file is not None:
        _check(f"--token-file {rules.shown(spec.token_file)}", rules.token_file, spec.token_file)
    try:
        rules.authentication(spec.auth, spec.username, spec.token_command, spec.token_file)
    except ValueError as exc:
        raise UsageError(f"invalid --auth {spec.auth or rules.SQL_AUTH}: {exc}") from None


def _check(what: str, rule: Callable[[object], object], value: object) -> None:
    try:
        rule(value)
    except ValueError as exc:
        raise UsageError(f"invalid {what}: {exc}") from None


def has_encrypted_passwords(engine: Engine) -> bool:
    with engine.connect() as conn:
        query = select(servers.c.id).where(servers.c.password_encrypted.isnot(None)).limit(1)
        return conn.execute(query).first() is not None


def some_encrypted_password(engine: Engine) -> str | None:
    """One stored password token (the newest), to check that the key in use is the one it was encrypted with."""
    with engine.connect() as conn:
        query = (
            select(servers.c.password_encrypted)
            .where(servers.c.password_encrypted.isnot(None))
            .order_by(servers.c.id.desc())
            .limit(1)
        )
        token = conn.execute(query).scalar()
    return token if isinstance(token, str) else None


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
        "database": spec.database,
        "auth": spec.auth,
        "token_command": spec.token_command,
        "token_file": spec.token_file,
        "removed_at": None,
    }
    config = {"enabled": spec.enabled, "interval_seconds": spec.interval_seconds}
    try:
        with engine.begin() as conn:
            existing = conn.execute(
                select(servers.c.id, servers.c.removed_at).where(servers.c.name == spec.name)
            ).first()
            if existing is not None and existing.removed_at is None:
                raise _server_exists_error(spec.name)
            if existing is not None:
                server_id = existing.id
                revivable = (servers.c.id == server_id) & servers.c.removed_at.is_not(None)
                revived = conn.execute(servers.update().where(revivable).values(**values))
                if revived.rowcount == 0:  # another process brought it back since this one looked
                    raise _server_exists_error(spec.name)
                conn.execute(
                    collection_configs.update().where(collection_configs.c.server_id == server_id).values(**config)
                )
            else:
                inserted = conn.execute(
                    servers.insert().values(
                        name=spec.name, status="unknown", consecutive_failures=0, created_at=now, **values
                    )
                ).inserted_primary_key
                assert inserted is not None
                server_id = inserted[0]
                conn.execute(collection_configs.insert().values(server_id=server_id, **config))
            return _load(conn, spec.name)
    except IntegrityError:  # the unique name: another process added it since this one looked
        with engine.connect() as conn:
            if conn.execute(select(servers.c.id).where(servers.c.name == spec.name)).first() is not None:
                raise _server_exists_error(spec.name) from None
        raise


def _server_exists_error(name: str) -> UsageError:
    return UsageError(f"server {name!r} already exists")


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
    """Raw values (no result processing): a row another program wrote with text in a date or boolean column
    (SQLite stores anything) is listed, not a crash; the child reports what is wrong with it."""
    return select(
        *(raw(column) for column in servers.c),
        raw(collection_configs.c.enabled),
        raw(collection_configs.c.interval_seconds),
    ).join(collection_configs, collection_configs.c.server_id == servers.c.id)


def _load(conn: Connection, name: str, *, include_removed: bool = False) -> ServerInfo:
    query = _info_query().where(servers.c.name == name)
    if not include_removed:
        query = query.where(servers.c.removed_at.is_(None))
    row = conn.execute(query).mappings().first()
    if row is None:
        raise UsageError(f"unknown server {rules.shown(name)}")
    return _info(row)


_TIMES = frozenset({"status_changed_at", "last_checked_at", "last_success_at", "removed_at"})


def _info(row: RowMapping) -> ServerInfo:
    values = {}
    for field in fields(ServerInfo):
        value = row[field.name]
        if field.name in _TIMES:
            value = stored_utc(value)  # text that is no time is shown as none
        elif field.name in ("enabled", "trust_server_certificate"):
            try:
                value = rules.flag(value, nullable=field.name != "enabled")  # SQLite: 0/1 → bool
            except ValueError:
                value = value if isinstance(value, str) else repr(value)
        elif value is not None and not isinstance(value, str | int | float):
            value = repr(value)  # e.g. a blob: shown, and JSON-serialisable
        values[field.name] = value
    return ServerInfo(**values)


def get_server(engine: Engine, name: str, *, include_removed: bool = False) -> ServerInfo:
    with engine.connect() as conn:
        return _load(conn, name, include_removed=include_removed)


#: ``ServerSpec`` fields stored in ``collection_configs``; the others (but ``password``) are ``servers`` columns.
_CONFIG_FIELDS = frozenset({"enabled", "interval_seconds"})


def update_server(engine: Engine, name: str, changes: dict[str, object], password_encrypted: str | None) -> ServerInfo:
    """``server set``: change the given ``ServerSpec`` fields of ``name`` (same id: its history stays attached).

    The stored settings with the changes applied are checked as ``server add`` checks a new server, so what is
    stored can be collected. ``password`` in ``changes`` is the plaintext, checked; ``password_encrypted`` is
    what is stored. A running child sees the changed row at its next server-list read and reconnects."""
    unknown = sorted(set(changes) - {f.name for f in fields(ServerSpec)} - {"name"})
    if unknown or "name" in changes:
        raise UsageError(f"server set cannot change {', '.join(unknown or ['name'])}")
    with engine.begin() as conn:
        info = _load(conn, name)
        row = conn.execute(
            select(*(raw(c) for c in servers.c), *(raw(c) for c in collection_configs.c if c.name != "server_id"))
            .outerjoin(collection_configs, collection_configs.c.server_id == servers.c.id)
            .where(servers.c.id == info.id)
        ).mappings().one()
        current = {}
        for field in fields(ServerSpec):
            if field.name in row and field.name != "password":
                value = row[field.name]
                if field.name in ("enabled", "trust_server_certificate") and value in (0, 1, None):
                    value = rules.flag(value, nullable=True)  # SQLite: 0/1; anything else is kept as it is
                current[field.name] = value
        validate_spec(replace(ServerSpec(**current), **changes))  # type: ignore[arg-type]
        server_values: dict[str, object] = {}
        config_values: dict[str, object] = {}
        for key, value in changes.items():
            if key == "password":
                server_values["password_encrypted"] = password_encrypted
            elif key in _CONFIG_FIELDS:
                config_values[key] = value
            elif key in servers.c:
                server_values[key] = value
            else:
                raise UsageError(f"server set cannot change {key} (no column stores it)")
        if server_values:
            conn.execute(servers.update().where(servers.c.id == info.id).values(**server_values))
        if config_values:  # _load found the server, so its collection_configs row exists
            conn.execute(
                collection_configs.update().where(collection_configs.c.server_id == info.id).values(**config_values)
            )
        return _load(conn, name)
