"""``tenant add|list|activate|suspend``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from supervisor import databases
from supervisor.cli.context import CliContext
from supervisor.cli.output import print_json, print_table
from supervisor.config import Settings, resolve_sqlite_url
from supervisor.errors import UsageError
from supervisor.storage import tenant_owner
from supervisor.storage.engine import check_url, masked_url
from supervisor.storage.migrations import upgrade_tenant
from supervisor.tenants import (
    ACTIVE,
    SUSPENDED,
    Tenant,
    find_tenant,
    insert_tenant,
    list_leased,
    list_tenants,
    set_tenant_status,
    tenant_exists_error,
    validate_name,
    validate_slug,
)

COLUMNS = ("slug", "name", "status", "db_url")


def dispatch(args: argparse.Namespace, ctx: CliContext) -> int:
    return {"add": add, "list": list_, "activate": activate, "suspend": suspend}[args.action](args, ctx)


def add(args: argparse.Namespace, ctx: CliContext) -> int:
    slug = validate_slug(args.slug)
    if args.name is not None:
        validate_name(args.name)
    db_url = None if args.db_url is None else _stored_db_url(args.db_url, ctx.settings)
    engine = ctx.system_engine
    if find_tenant(engine, slug) is not None:
        raise tenant_exists_error(slug)
    status = SUSPENDED if args.suspended else ACTIVE
    draft = Tenant(id=0, slug=slug, name=args.name or slug, status=status, db_url=db_url)
    try:
        tenant = _register(ctx, draft)
    except UsageError:
        if find_tenant(engine, slug) is not None:  # another process added it since this one looked: its DB is
            raise tenant_exists_error(slug) from None  # now that tenant's, which is not what went wrong
        raise
    print(f"tenant {tenant.slug} added ({tenant.status}), DB {masked_url(databases.tenant_url(ctx.settings, tenant))}")
    return 0


def _register(ctx: CliContext, draft: Tenant) -> Tenant:
    engine = ctx.system_engine
    _refuse_shared_db(ctx, draft)
    tenant_engine = ctx.tenant_engine(draft, create=True)
    upgrade_tenant(tenant_engine)  # the tenant row appears only once its DB is usable
    tenant_ids = {t.id for t in list_leased(engine)[0]}
    with tenant_engine.connect() as conn:
        if (owner := tenant_owner.owner(conn)) in tenant_ids:
            raise UsageError(f"--db-url: that DB belongs to tenant id {owner}: each tenant needs a DB of its own")
    tenant = insert_tenant(engine, draft.slug, draft.name, draft.db_url, draft.status)
    tenant_owner.stamp(tenant_engine, tenant.id, tenant_ids=tenant_ids)
    return tenant


def _stored_db_url(db_url: str, settings: Settings) -> str:
    """``--db-url`` as stored: checked, a relative SQLite path made absolute against the config file's folder (so
    every process and the web app read the same file, whatever their current folder)."""
    check_url(db_url, "--db-url", persistent=True)
    base = Path(settings.config_path).parent if settings.config_path else Path.cwd()
    return resolve_sqlite_url(db_url, base)


def _refuse_shared_db(ctx: CliContext, draft: Tenant) -> None:
    """One DB, one tenant: not another tenant's DB (both would collect into it; the system DB is refused by
    ``databases.tenant_url``)."""
    url = ctx.settings.tenant_url(draft.slug, draft.db_url)
    owner = databases.db_owner(ctx.settings, list_tenants(ctx.system_engine), url)
    if owner is not None:
        what = "--db-url" if draft.db_url is not None else "collector.tenant_db_url for this slug"
        raise UsageError(
            f"invalid {what} {masked_url(url)!r}: it is the DB of tenant {owner.slug}: a tenant needs a DB of its own"
        )


def list_(args: argparse.Namespace, ctx: CliContext) -> int:
    """Every row, one that cannot be run too (shown as stored, password masked, with its problem; also on stderr)."""
    tenants = databases.checked_tenants(ctx.settings, *list_leased(ctx.system_engine))
    rows = [
        {
            "slug": t.slug,
            "name": t.name,
            "status": t.status,
            "db_url": databases.shown_url(ctx.settings, t),
            "problem": t.problem,
        }
        for t in tenants
    ]
    if args.json:
        print_json(rows)
    else:
        print_table([*COLUMNS], [[r[k] for k in COLUMNS] for r in rows])
    for tenant in tenants:
        if tenant.problem is not None:
            print(f"tenant {tenant.slug} (row {tenant.id}) cannot be run: {tenant.problem}", file=sys.stderr)
    return 0


def activate(args: argparse.Namespace, ctx: CliContext) -> int:
    tenant = set_tenant_status(ctx.system_engine, args.slug, ACTIVE)
    print(f"tenant {tenant.slug} is active")
    return 0


def suspend(args: argparse.Namespace, ctx: CliContext) -> int:
    tenant = set_tenant_status(ctx.system_engine, args.slug, SUSPENDED)
    print(f"tenant {tenant.slug} is suspended")
    return 0
