"""Engines for the system DB and a tenant's DB, built from settings."""

from __future__ import annotations

from sqlalchemy import Engine

from supervisor.config import Settings
from supervisor.storage.engine import make_engine
from supervisor.tenants import Tenant


def system_engine(settings: Settings, *, pooled: bool = False, call_timeout: float | None = None) -> Engine:
    """Unpooled by default: the parent forks children and must hold no open DB handle."""
    return make_engine(settings.system_db, pooled=pooled, what="collector.system_db", call_timeout=call_timeout)


def tenant_url(settings: Settings, tenant: Tenant) -> str:
    return settings.tenant_url(tenant.slug, tenant.db_url)


def tenant_engine(settings: Settings, tenant: Tenant, *, pooled: bool = True) -> Engine:
    what = "tenant db_url" if tenant.db_url else "collector.tenant_db_url"
    return make_engine(tenant_url(settings, tenant), pooled=pooled, what=what)
