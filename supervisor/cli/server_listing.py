"""``server list [TENANT] [--status S] [--wide] [--json]``: one tenant's servers, or every tenant's.

Without TENANT every registered tenant is listed (with a ``tenant`` column); a tenant whose DB cannot be read
is named on stderr, the others are listed, and the exit code is 1. The error text is cut at a word boundary
to keep a row on one line; ``--wide`` and ``--json`` give it whole, with the hint for a failed encrypted
connection.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from supervisor.children.odbc_driver import connection_hint
from supervisor.cli.context import CliContext
from supervisor.cli.output import age, print_json, print_table
from supervisor.clock import utcnow
from supervisor.errors import CONNECT, EXIT_FAILURE, CollectorError
from supervisor.servers import ServerInfo, list_servers
from supervisor.storage.engine import describe_db_error
from supervisor.tenants import Tenant, list_tenants

ERROR_WIDTH = 48


def list_(args: argparse.Namespace, ctx: CliContext) -> int:
    tenants = [ctx.tenant(args.tenant)] if args.tenant else list_tenants(ctx.system_engine, with_unusable=True)
    rows: list[tuple[Tenant, ServerInfo]] = []
    failed = []
    for tenant in tenants:
        try:
            engine = ctx.tenant_engine(tenant)
            try:
                infos = list_servers(engine)
            finally:
                engine.dispose()
        except (SQLAlchemyError, CollectorError) as exc:
            if args.tenant:
                raise
            failed.append(tenant.slug)
            detail = describe_db_error(exc) if isinstance(exc, SQLAlchemyError) else str(exc)
            print(f"tenant {tenant.slug}: servers not listed: {detail}", file=sys.stderr)
            continue
        rows += [(tenant, info) for info in infos if args.status is None or info.status == args.status]
    if args.json:
        print_json([_json(tenant, info, ctx.settings.encrypt) for tenant, info in rows])
    else:
        _print(rows, fleet=not args.tenant, wide=args.wide, default_encrypt=ctx.settings.encrypt)
    return EXIT_FAILURE if failed else 0


def hint_for(info: ServerInfo, default_encrypt: str) -> str | None:
    """The hint for a failed connection with encryption on (the server's mode, else the configured one)."""
    if info.last_error_class != CONNECT or not info.last_error or info.status != "offline":
        return None
    encrypt = info.encrypt if isinstance(info.encrypt, str) else default_encrypt
    hint = connection_hint(info.last_error, encrypt)
    return hint if hint is not None and hint in info.last_error else None  # the child hints failed logins only


def _json(tenant: Tenant, info: ServerInfo, default_encrypt: str) -> dict[str, Any]:
    return {"tenant": tenant.slug, **info.as_json(), "hint": hint_for(info, default_encrypt)}


def _print(rows: list[tuple[Tenant, ServerInfo]], *, fleet: bool, wide: bool, default_encrypt: str) -> None:
    now = utcnow()
    headers = ["name", "address", "enabled", "interval", "status", "last_success", "failures", "class", "last_error"]
    table = []
    for tenant, info in rows:
        error = info.last_error or ""
        if wide:
            hint = hint_for(info, default_encrypt)
            error = f"{error} ({hint})" if hint and hint not in error else error
        else:
            error = shorten(error, ERROR_WIDTH)
        row = [
            info.name,
            f"{info.host}:{info.port}",
            info.enabled,
            info.interval_seconds or "default",
            info.status,
            age(info.last_success_at, now),
            info.consecutive_failures,
            info.last_error_class if info.last_error else None,
            error or None,
        ]
        table.append([tenant.slug, *row] if fleet else row)
    print_table(["tenant", *headers] if fleet else headers, table)


def shorten(text: str, width: int) -> str:
    """``text`` on one line, cut at the last word boundary that fits ``width`` (with "…")."""
    line = " ".join(text.split())
    if len(line) <= width:
        return line
    cut = line[: width - 1]
    space = cut.rfind(" ")
    if space >= width // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:([") + "…"
