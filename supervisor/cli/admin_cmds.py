"""``init-db``: create or upgrade the system DB and every tenant's DB."""

from __future__ import annotations

import argparse
import sys

from supervisor import databases
from supervisor.cli.context import CliContext
from supervisor.errors import CollectorError
from supervisor.storage import tenant_owner
from supervisor.storage.engine import masked_url
from supervisor.storage.migrations import upgrade_tenant
from supervisor.tenants import list_leased


def init_db(args: argparse.Namespace, ctx: CliContext) -> int:
    """A tenant row that cannot be run (see ``databases.checked_tenants``) is named and its DB left alone."""
    ctx.system_db_beside_other_tables = True
    engine = ctx.system_engine  # creates or upgrades the system schema
    print(f"system DB ready: {masked_url(ctx.settings.system_db)}")
    failures = []
    rows, leased = list_leased(engine)
    tenant_ids = {tenant.id for tenant in rows}
    for tenant in databases.checked_tenants(ctx.settings, rows, leased):
        if tenant.problem is not None:
            failures.append(tenant.slug)
            print(f"tenant {tenant.slug} (row {tenant.id}): DB left alone: {tenant.problem}", file=sys.stderr)
            continue
        try:
            upgrade_tenant(ctx.tenant_engine(tenant, create=True))
            tenant_owner.stamp(ctx.tenant_engine(tenant, create=True), tenant.id, tenant_ids=tenant_ids)
            print(f"tenant {tenant.slug}: DB ready")
        except CollectorError as exc:
            failures.append(tenant.slug)
            print(f"tenant {tenant.slug}: {exc}", file=sys.stderr)
    if failures:
        raise CollectorError(f"tenant DB schema not ready for: {', '.join(failures)}")
    return 0
