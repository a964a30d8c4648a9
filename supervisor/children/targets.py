"""The servers a child collects from: enabled, not removed, read from the tenant DB.

The rows are input: the product's web app writes them too, and SQLite stores any value in any column. Every
value a child uses is checked with ``supervisor.rules`` (the CLI's rules); a row that fails, or whose
password cannot be decrypted, becomes an ``InvalidServer`` (a ``config`` error for that one server) instead
of a ``Target``, and the other servers are not affected. Columns are read without SQLAlchemy's result
processing, which on SQLite would turn ``'bogus'`` in a boolean column into ``True`` or raise on a bad date.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select

from supervisor import rules
from supervisor.children.connection_string import Endpoint
from supervisor.children.records import row_identity
from supervisor.config import Settings
from supervisor.errors import CollectorError
from supervisor.logs import register_secret
from supervisor.secret_box import PasswordDecryptor
from supervisor.storage.raw import raw
from supervisor.storage.tenant_schema import collection_configs, servers


@dataclass(frozen=True)
class Target:
    server_id: int
    name: str
    endpoint: Endpoint
    interval_seconds: float
    collection_mode: str  # auto / procedure / adhoc, the global setting filled in
    #: Which row this is (``row_identity``); None: not read from the tenant DB, nothing to tell apart.
    row: str | None = None


@dataclass(frozen=True)
class InvalidServer:
    """A server whose row cannot be used: not collected, reported as a ``config`` error."""

    server_id: int
    name: str  # the stored name if it is a valid one, else "#<id>"
    error: str  # names the column and the bad value (never a password)
    row: str | None = None  # as Target.row


@dataclass(frozen=True)
class ServerRows:
    targets: list[Target]
    invalid: list[InvalidServer]


class InvalidRow(ValueError):
    pass


class TargetMemo:
    """The target each server row last gave, reused while the row's raw values are the same: a child re-reads
    its server list every few seconds, and checking and decrypting unchanged rows again is most of that read's
    cost. Only usable rows are kept: an invalid one is checked again on every read (its key file may appear)."""

    def __init__(self) -> None:
        self._last: dict[object, tuple[tuple[object, ...], Target]] = {}

    def get(self, values: tuple[object, ...]) -> Target | None:
        kept = self._last.get(values[0])
        return kept[1] if kept is not None and kept[0] == values else None

    def keep(self, values: tuple[object, ...], target: Target) -> None:
        self._last[values[0]] = (values, target)

    def retain(self, server_ids: set[object]) -> None:
        for server_id in [sid for sid in self._last if sid not in server_ids]:
            del self._last[server_id]


_COLUMNS = (
    servers.c.id,
    servers.c.name,
    servers.c.host,
    servers.c.port,
    servers.c.username,
    servers.c.password_encrypted,
    servers.c.encrypt,
    servers.c.trust_server_certificate,
    servers.c.collection_mode,
    servers.c.database,
    servers.c.auth,
    servers.c.token_command,
    servers.c.token_file,
    servers.c.created_at,
)
#: Disabled servers are left out by the query; a value that is neither true nor false is not, so it is reported.
_QUERY = (
    select(
        *(raw(column) for column in _COLUMNS),
        raw(collection_configs.c.server_id).label("config_server_id"),
        raw(collection_configs.c.enabled),
        raw(collection_configs.c.interval_seconds),
    )
    .outerjoin(collection_configs, collection_configs.c.server_id == servers.c.id)
    .where(servers.c.removed_at.is_(None))
    .order_by(servers.c.id)
)


def read_servers(
    conn: Connection, settings: Settings, box: PasswordDecryptor, *, name: str | None = None,
    memo: TargetMemo | None = None,
) -> ServerRows:
    """Enabled, non-removed servers, each a Target or an InvalidServer; with ``name``, that server whether
    enabled or not."""
    if name is None:
        query = _QUERY.where(collection_configs.c.enabled.isnot(False))
    else:
        query = _QUERY.where(servers.c.name == name)
    rows = ServerRows([], [])
    seen: set[object] = set()
    for record in conn.execute(query):
        values = tuple(record)
        seen.add(values[0])
        if memo is not None and (known := memo.get(values)) is not None:
            rows.targets.append(known)
            continue
        row = record._mapping
        server_id = row["id"]
        display = _display_name(row["name"], server_id)
        identity = row_identity(row["created_at"])
        try:
            target = _target(row, identity, settings, box, only_enabled=name is None)
        except InvalidRow as exc:
            rows.invalid.append(InvalidServer(server_id, display, str(exc), identity))
            continue
        except Exception as exc:  # a rule this module lacks must not stop the other servers
            error = f"unusable row: {type(exc).__name__}: {exc}"
            rows.invalid.append(InvalidServer(server_id, display, error, identity))
            continue
        if target is not None:
            rows.targets.append(target)
            if memo is not None:
                memo.keep(values, target)
    if memo is not None:
        memo.retain(seen)
    return rows


def load_targets(
    conn: Connection, settings: Settings, box: PasswordDecryptor, tenant: str, *, name: str | None = None
) -> list[Target]:
    """The usable servers only (``read_servers`` also says which are not, and why)."""
    return read_servers(conn, settings, box, name=name).targets


def _display_name(value: object, server_id: int) -> str:
    try:
        return rules.server_name(value)
    except ValueError:
        return f"#{server_id}"


def _check(row: Any, column: str, rule: Any, *args: Any, **kwargs: Any) -> Any:
    value = row[column]
    try:
        return rule(value, *args, **kwargs)
    except ValueError as exc:
        table = "collection_configs" if column in ("enabled", "interval_seconds") else "servers"
        raise InvalidRow(f"invalid {table}.{column} = {rules.shown(value)}: {exc}") from None


def _target(row: Any, identity: str, settings: Settings, box: PasswordDecryptor, *, only_enabled: bool
            ) -> Target | None:  # fmt: skip
    if row["config_server_id"] is None:
        raise InvalidRow("no collection_configs row for this server")
    enabled = _check(row, "enabled", rules.flag, nullable=False)
    if only_enabled and not enabled:
        return None
    name = _check(row, "name", rules.server_name)
    host = _check(row, "host", rules.host)
    port = _check(row, "port", rules.port)
    username = _check(row, "username", rules.username)
    encrypt = _check(row, "encrypt", rules.encrypt)
    trust = _check(row, "trust_server_certificate", rules.flag, nullable=True)
    mode = _check(row, "collection_mode", rules.collection_mode)
    interval = _check(row, "interval_seconds", rules.interval)
    database = _check(row, "database", rules.database)
    auth = _check(row, "auth", rules.auth)
    token_command = _check(row, "token_command", rules.token_command)
    token_file = _check(row, "token_file", rules.token_file)
    try:
        auth = rules.authentication(auth, username, token_command, token_file)
    except ValueError as exc:
        raise InvalidRow(f"invalid servers.auth = {rules.shown(row['auth'])}: {exc}") from None
    password = _password(row["password_encrypted"], box)
    endpoint = Endpoint(
        host=host,
        port=port,
        username=username,
        password=password,
        encrypt=encrypt or settings.encrypt,
        trust_server_certificate=settings.trust_server_certificate if trust is None else trust,
        database=database or rules.DEFAULT_DATABASE,
        auth=auth,
        token_command=token_command,
        token_file=token_file,
    )
    return Target(
        server_id=row["id"],
        name=name,
        endpoint=endpoint,
        interval_seconds=float(interval or settings.collection_interval),
        collection_mode=mode or settings.collection_mode,
        row=identity,
    )


def _password(token: object, box: PasswordDecryptor) -> str | None:
    if token is None:
        return None
    if not isinstance(token, str) or not token:
        raise InvalidRow("invalid servers.password_encrypted: not an encrypted password (NULL for none)")
    try:
        plain = box.decrypt(token)
    except CollectorError as exc:  # names the cause: key missing, unreadable or different, not a token
        reason = str(exc) if str(exc).startswith("cannot decrypt") else f"cannot decrypt: {exc}"
        raise InvalidRow(f"servers.password_encrypted: {reason}") from None
    register_secret(plain)
    try:
        return rules.password(plain)
    except ValueError as exc:
        raise InvalidRow(f"invalid password (servers.password_encrypted, decrypted): {exc}") from None


def count_disabled(conn: Connection) -> int:
    """Servers not removed whose collection is switched off (``collector_servers{status="disabled"}``)."""
    query = (
        select(func.count())
        .select_from(servers.join(collection_configs, collection_configs.c.server_id == servers.c.id))
        .where(servers.c.removed_at.is_(None), collection_configs.c.enabled.is_(False))
    )
    return int(conn.execute(query).scalar() or 0)
