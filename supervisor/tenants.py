"""The tenant registry in the system DB."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import Engine, RowMapping, select

from supervisor import rules
from supervisor.clock import utcnow
from supervisor.errors import UsageError
from supervisor.storage.engine import masked_url, url_problem
from supervisor.storage.system_schema import tenants

SLUG_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
ACTIVE = "active"
SUSPENDED = "suspended"


@dataclass(frozen=True)
class Tenant:
    id: int
    slug: str
    name: str
    status: str
    db_url: str | None

    @classmethod
    def from_row(cls, row: RowMapping) -> Tenant:
        return cls(id=row["id"], slug=row["slug"], name=row["name"], status=row["status"], db_url=row["db_url"])


def row_problem(row: RowMapping) -> str | None:
    """Why an active ``tenants`` row cannot be run (None if it can). The product's web app writes these rows
    too: a slug names files (``tenant_db_url``'s ``{slug}``) and processes, so it must be a slug."""
    slug = row["slug"]
    if not isinstance(slug, str) or not SLUG_PATTERN.fullmatch(slug):
        return f"slug {rules.shown(slug)} is not 1-63 characters a-z, 0-9 and '-'"
    db_url = row["db_url"]
    if db_url is not None:
        problem = url_problem(db_url, persistent=True) if isinstance(db_url, str) else "not text"
        if problem is not None:
            return f"db_url {masked_url(db_url) if isinstance(db_url, str) else rules.shown(db_url)}: {problem}"
    return None


def validate_slug(slug: str) -> str:
    if not SLUG_PATTERN.fullmatch(slug):  # fullmatch: "$" alone would let a trailing newline through
        raise UsageError(
            f"invalid tenant slug {rules.shown(slug)}: use 1-63 characters a-z, 0-9 and '-', "
            "starting and ending with a letter or digit"
        )
    return slug


def validate_name(name: str) -> str:
    try:
        return rules.tenant_name(name)
    except ValueError as exc:
        raise UsageError(f"invalid --name {rules.shown(name)}: {exc}") from None


def find_tenant(engine: Engine, slug: str) -> Tenant | None:
    with engine.connect() as conn:
        row = conn.execute(select(tenants).where(tenants.c.slug == slug)).mappings().first()
    return Tenant.from_row(row) if row else None


def get_tenant(engine: Engine, slug: str) -> Tenant:
    tenant = find_tenant(engine, slug)
    if tenant is None:
        raise UsageError(f"unknown tenant {rules.shown(slug)}")
    return tenant


def list_tenants(engine: Engine, *, status: str | None = None) -> list[Tenant]:
    query = select(tenants).order_by(tenants.c.slug)
    if status is not None:
        query = query.where(tenants.c.status == status)
    with engine.connect() as conn:
        return [Tenant.from_row(row) for row in conn.execute(query).mappings()]


def insert_tenant(engine: Engine, slug: str, name: str, db_url: str | None, status: str) -> Tenant:
    now = utcnow()
    with engine.begin() as conn:
        if conn.execute(select(tenants.c.id).where(tenants.c.slug == slug)).first():
            raise UsageError(f"tenant {slug!r} already exists")
        inserted = conn.execute(
            tenants.insert().values(slug=slug, name=name, status=status, db_url=db_url, created_at=now, updated_at=now)
        ).inserted_primary_key
        assert inserted is not None
        tenant_id = inserted[0]
    return Tenant(id=tenant_id, slug=slug, name=name, status=status, db_url=db_url)


def set_tenant_status(engine: Engine, slug: str, status: str) -> Tenant:
    tenant = get_tenant(engine, slug)
    if tenant.status != status:
        with engine.begin() as conn:
            conn.execute(tenants.update().where(tenants.c.id == tenant.id).values(status=status, updated_at=utcnow()))
    return Tenant(id=tenant.id, slug=tenant.slug, name=tenant.name, status=status, db_url=tenant.db_url)
