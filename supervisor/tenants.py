"""The tenant registry in the system DB.

The product's web app writes ``tenants`` rows too, and SQLite stores any value in any column: every row is read
raw (no result processing, so a date column holding ``'bogus'`` is never parsed) and only the columns used, then
turned into a ``Tenant`` by ``tenant_from_row``, the one checked conversion the parent and the CLI share. A row
that cannot be run still becomes a ``Tenant`` (so it can be listed, suspended or activated) with ``problem``
saying why; its text fields then hold values fit to show (``rules.shown``)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, RowMapping, Select, select
from sqlalchemy.exc import IntegrityError

from supervisor import rules
from supervisor.clock import utcnow
from supervisor.errors import UsageError
from supervisor.storage.db_clock import db_utcnow
from supervisor.storage.engine import masked_url, url_problem
from supervisor.storage.raw import raw
from supervisor.storage.system_schema import tenant_leases, tenants

SLUG_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
ACTIVE = "active"
SUSPENDED = "suspended"
#: A ``slug``, ``name`` or ``status`` value is listed as stored when it is printable text of at most this length.
_SHOWN_AS_IS_MAX = rules.TENANT_NAME_MAX


@dataclass(frozen=True)
class Tenant:
    id: int
    slug: str
    name: str
    status: str
    db_url: str | None
    #: Why this tenant cannot be run (its DB is neither opened nor created); None for a usable one.
    problem: str | None = None

    @property
    def usable(self) -> bool:
        return self.problem is None


def tenant_from_row(row: RowMapping) -> Tenant:
    """The one conversion of a raw ``tenants`` row. A name that is not a valid name is shown, not a problem:
    nothing but the listings uses it."""
    slug, db_url = row["slug"], row["db_url"]
    problem = slug_problem(slug) or db_url_problem(db_url)
    return Tenant(
        id=row["id"],
        slug=_shown_text(slug),
        name=_shown_text(row["name"]),
        status=_shown_text(row["status"]),
        db_url=db_url if isinstance(db_url, str) else None,
        problem=problem,
    )


def slug_problem(slug: object) -> str | None:
    """A slug names files (``tenant_db_url``'s ``{slug}``) and processes, so it must be a slug."""
    if isinstance(slug, str) and SLUG_PATTERN.fullmatch(slug):
        return None
    return f"slug {rules.shown(slug)} is not 1-63 characters a-z, 0-9 and '-'"


def db_url_problem(db_url: object) -> str | None:
    """None: the tenant uses ``tenant_db_url``. The value itself is never shown unmasked (it may hold a password)."""
    if db_url is None:
        return None
    if not isinstance(db_url, str):
        return f"db_url is {type(db_url).__name__}, not text"
    problem = url_problem(db_url, persistent=True)
    return None if problem is None else f"db_url {masked_url(db_url)}: {problem}"


def _shown_text(value: object) -> str:
    if isinstance(value, str) and value.isprintable() and 0 < len(value) <= _SHOWN_AS_IS_MAX:
        return value
    return rules.shown(value)


def tenant_query() -> Select:
    """The columns a ``Tenant`` is made of, raw; ``created_at`` / ``updated_at`` are never read."""
    c = tenants.c
    return select(c.id, raw(c.slug), raw(c.name), raw(c.status), raw(c.db_url))


def read_tenants(conn: Connection, *, status: str | None = None) -> list[Tenant]:
    """Every row (with ``status``: those whose status is exactly that), by id."""
    query = tenant_query().order_by(tenants.c.id)
    if status is not None:
        query = query.where(tenants.c.status == status)
    return [tenant_from_row(row) for row in conn.execute(query).mappings()]


def leased_ids(conn: Connection, now: dt.datetime) -> set[int]:
    """Tenants some supervisor instance holds a live lease on (their child runs, or may): of tenants sharing a DB
    they keep it (``databases.checked_tenants``), whichever instance or command looks."""
    c = tenant_leases.c
    return set(conn.execute(select(c.tenant_id).where(c.owner.is_not(None), c.expires_at >= now)).scalars())


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
        row = conn.execute(tenant_query().where(tenants.c.slug == slug)).mappings().first()
    return tenant_from_row(row) if row else None


def get_tenant(engine: Engine, slug: str) -> Tenant:
    tenant = find_tenant(engine, slug)
    if tenant is None:
        raise UsageError(f"unknown tenant {rules.shown(slug)}")
    return tenant


def list_tenants(engine: Engine, *, status: str | None = None, with_unusable: bool = False) -> list[Tenant]:
    """The rows that can be used (``with_unusable``: every row, see ``Tenant.problem``), by slug as shown."""
    with engine.connect() as conn:
        rows = read_tenants(conn, status=status)
    return _by_slug(rows if with_unusable else [tenant for tenant in rows if tenant.usable])


def list_leased(engine: Engine) -> tuple[list[Tenant], set[int]]:
    """Every row (usable or not) by slug as shown, and ``leased_ids``, from one connection."""
    with engine.connect() as conn:
        return _by_slug(read_tenants(conn)), leased_ids(conn, db_utcnow(conn))


def _by_slug(rows: list[Tenant]) -> list[Tenant]:
    return sorted(rows, key=lambda tenant: (tenant.slug, tenant.id))


def tenant_exists_error(slug: str) -> UsageError:
    return UsageError(f"tenant {slug!r} already exists")


def insert_tenant(engine: Engine, slug: str, name: str, db_url: str | None, status: str) -> Tenant:
    """UsageError if ``slug`` is taken, also by a process that inserted it since this one looked (the unique slug)."""
    now = utcnow()
    try:
        with engine.begin() as conn:
            if conn.execute(select(tenants.c.id).where(tenants.c.slug == slug)).first():
                raise tenant_exists_error(slug)
            inserted = conn.execute(
                tenants.insert().values(
                    slug=slug, name=name, status=status, db_url=db_url, created_at=now, updated_at=now
                )
            ).inserted_primary_key
    except IntegrityError:
        if find_tenant(engine, slug) is not None:
            raise tenant_exists_error(slug) from None
        raise
    assert inserted is not None
    return Tenant(id=inserted[0], slug=slug, name=name, status=status, db_url=db_url)


def set_tenant_status(engine: Engine, slug: str, status: str) -> Tenant:
    """Works on a row that cannot be run too (suspending it is how to silence it)."""
    tenant = get_tenant(engine, slug)
    if tenant.status != status:
        with engine.begin() as conn:
            conn.execute(tenants.update().where(tenants.c.id == tenant.id).values(status=status, updated_at=utcnow()))
    return Tenant(tenant.id, tenant.slug, tenant.name, status, tenant.db_url, tenant.problem)
