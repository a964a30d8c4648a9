"""``tenant add|list|activate|suspend``."""

from __future__ import annotations

import argparse

from supervisor import databases
from supervisor.cli.context import CliContext
from supervisor.cli.output import print_json, print_table
from supervisor.errors import UsageError
from supervisor.storage.engine import check_url, masked_url
from supervisor.storage.migrations import upgrade_tenant
from supervisor.tenants import (
    ACTIVE,
    SUSPENDED,
    Tenant,
    find_tenant,
    insert_tenant,
    list_tenants,
    set_tenant_status,
    validate_name,
    validate_slug,
)


def dispatch(args: argparse.Namespace, ctx: CliContext) -> int:
    return {"add": add, "list": list_, "activate": activate, "suspend": suspend}[args.action](args, ctx)


def add(args: argparse.Namespace, ctx: CliContext) -> int:
    slug = validate_slug(args.slug)
    if args.name is not None:
        validate_name(args.name)
    if args.db_url is not None:
        check_url(args.db_url, "--db-url", persistent=True)
    engine = ctx.system_engine
    if find_tenant(engine, slug) is not None:
        raise UsageError(f"tenant {slug!r} already exists")
    status = SUSPENDED if args.suspended else ACTIVE
    draft = Tenant(id=0, slug=slug, name=args.name or slug, status=status, db_url=args.db_url)
    upgrade_tenant(ctx.tenant_engine(draft))  # the tenant row appears only once its DB is usable
    tenant = insert_tenant(engine, slug, draft.name, args.db_url, status)
    print(f"tenant {tenant.slug} added ({tenant.status}), DB {masked_url(databases.tenant_url(ctx.settings, tenant))}")
    return 0


def list_(args: argparse.Namespace, ctx: CliContext) -> int:
    rows = [
        {
            "slug": t.slug,
            "name": t.name,
            "status": t.status,
            "db_url": masked_url(databases.tenant_url(ctx.settings, t)),
        }
        for t in list_tenants(ctx.system_engine)
    ]
    if args.json:
        print_json(rows)
    else:
        print_table(["slug", "name", "status", "db_url"], [list(r.values()) for r in rows])
    return 0


def activate(args: argparse.Namespace, ctx: CliContext) -> int:
    tenant = set_tenant_status(ctx.system_engine, args.slug, ACTIVE)
    print(f"tenant {tenant.slug} is active")
    return 0


def suspend(args: argparse.Namespace, ctx: CliContext) -> int:
    tenant = set_tenant_status(ctx.system_engine, args.slug, SUSPENDED)
    print(f"tenant {tenant.slug} is suspended")
    return 0
