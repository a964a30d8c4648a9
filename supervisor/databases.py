"""Engines for the system DB and a tenant's DB, built from settings; which DB a tenant's URL names."""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import replace

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from supervisor.config import Settings
from supervisor.errors import ConfigError
from supervisor.ipc import ChildSpec
from supervisor.storage.engine import make_engine, masked_url
from supervisor.tenants import Tenant

_DEFAULT_PORTS = {"postgresql": 5432}


def system_engine(
    settings: Settings, *, pooled: bool = False, call_timeout: float | None = None, statements_unbounded: bool = False
) -> Engine:
    """Unpooled by default: the parent forks children and must hold no open DB handle."""
    return make_engine(settings.system_db, pooled=pooled, what="collector.system_db", call_timeout=call_timeout,
                       statements_unbounded=statements_unbounded)  # fmt: skip


def tenant_url(settings: Settings, tenant: Tenant) -> str:
    """The URL of ``tenant``'s DB; ConfigError (one line naming the tenant) when it cannot be used: the row's
    problem, or the system DB itself (the tenant schema would be written into it)."""
    if tenant.problem is not None:
        raise ConfigError(f"{_named(tenant)}: {tenant.problem}")
    url = settings.tenant_url(tenant.slug, tenant.db_url)
    if same_db(url, settings.system_db):
        raise ConfigError(f"{_named(tenant)}: {system_db_problem(url)}")
    return url


def _named(tenant: Tenant) -> str:
    """A registered tenant with its row's id (slugs of bad rows may repeat); one being added has none yet (0)."""
    return f"tenant {tenant.slug} (row {tenant.id})" if tenant.id else f"tenant {tenant.slug}"


def system_db_problem(url: str) -> str:
    return f"DB {masked_url(url)} is the system DB: a tenant needs a DB of its own"


def missing_sqlite_file(settings: Settings, tenant: Tenant) -> str | None:
    """The path of the tenant's SQLite DB file if no file is there (a read must not create it empty), else None."""
    url = make_url(tenant_url(settings, tenant))
    if url.get_backend_name() == "sqlite" and url.database and not os.path.exists(url.database):
        return url.database
    return None


def tenant_engine(
    settings: Settings, tenant: Tenant, *, pooled: bool = True, call_timeout: float | None = None,
    statements_unbounded: bool = False,
) -> Engine:
    what = "tenant db_url" if tenant.db_url else "collector.tenant_db_url"
    return make_engine(tenant_url(settings, tenant), pooled=pooled, what=what, call_timeout=call_timeout,
                       statements_unbounded=statements_unbounded)  # fmt: skip


def shown_url(settings: Settings, tenant: Tenant) -> str | None:
    """The tenant's DB URL to list, password masked: the one it uses, else its own ``db_url`` as stored (None when
    it has no text ``db_url``)."""
    try:
        return masked_url(tenant_url(settings, tenant))
    except ConfigError:
        return None if tenant.db_url is None else masked_url(tenant.db_url)


def db_identity(url: str) -> str:
    """What tells two URLs apart as databases: a SQLite file's real path (symlinks and ``..`` resolved), else the
    backend, host, port and database name (user, password, driver and options do not make another DB)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return url
    backend = parsed.get_backend_name()
    database = parsed.database or ""
    if backend == "sqlite":
        return f"sqlite:{os.path.realpath(database)}" if database and database != ":memory:" else url
    port = parsed.port or _DEFAULT_PORTS.get(backend)
    return f"{backend}://{(parsed.host or '').lower()}:{port}/{database}"


def same_db(url: str, other: str) -> bool:
    return db_identity(url) == db_identity(other)


def db_owner(settings: Settings, tenants: Iterable[Tenant], url: str) -> Tenant | None:
    """The usable tenant among ``tenants`` whose DB ``url`` names, if any."""
    identity = db_identity(url)
    for tenant in tenants:
        try:
            if db_identity(tenant_url(settings, tenant)) == identity:
                return tenant
        except ConfigError:
            continue
    return None


def checked_tenants(
    settings: Settings, tenants: Iterable[Tenant], keep: Collection[int] = (), using: Mapping[int, str] | None = None
) -> list[Tenant]:
    """``tenants`` (in their order), each that cannot be run with its ``problem`` set: the row's own, its DB the
    system DB, or its DB another tenant's of ``tenants`` too. Of tenants sharing a DB one keeps it: the one whose
    running child uses it already (``using``: tenant id → the DB URL its child was started with), else one of
    ``keep`` (those already running), else the lowest id; the others get the problem, so one DB is never collected
    twice (and a row changed to another tenant's DB does not take it from that tenant's child)."""
    checked = [_with_url_checked(settings, tenant) for tenant in tenants]
    urls = {tenant.id: settings.tenant_url(tenant.slug, tenant.db_url) for tenant in checked if tenant.usable}
    identities = {tenant_id: db_identity(url) for tenant_id, url in urls.items()}
    in_use = {tenant_id: db_identity(url) for tenant_id, url in (using or {}).items()}

    def priority(tenant: Tenant) -> tuple[bool, bool, int]:
        return in_use.get(tenant.id) != identities[tenant.id], tenant.id not in keep, tenant.id

    owners: dict[str, Tenant] = {}
    shared: dict[int, str] = {}
    for tenant in sorted((t for t in checked if t.usable), key=priority):
        url = urls[tenant.id]
        owner = owners.setdefault(identities[tenant.id], tenant)
        if owner is not tenant:
            shared[tenant.id] = f"DB {masked_url(url)} is also the DB of tenant {owner.slug} (row {owner.id})"
    return [replace(t, problem=shared[t.id]) if t.id in shared else t for t in checked]


def change_since(spec: ChildSpec, tenant: Tenant) -> str | None:
    """How ``tenant``'s row changed since its child was started with ``spec`` (None: not in a way the child sees):
    its DB as the settings the child got resolve it (so a reload alone restarts no child), or its slug."""
    changes = []
    if tenant.slug != spec.slug:
        changes.append(f"slug {spec.slug} -> {tenant.slug}")
    url = spec.settings.tenant_url(tenant.slug, tenant.db_url)
    if url != spec.db_url:
        changes.append(f"DB {masked_url(spec.db_url)} -> {masked_url(url)}")
    return ", ".join(changes) or None


def _with_url_checked(settings: Settings, tenant: Tenant) -> Tenant:
    if not tenant.usable:
        return tenant
    url = settings.tenant_url(tenant.slug, tenant.db_url)
    return replace(tenant, problem=system_db_problem(url)) if same_db(url, settings.system_db) else tenant
