"""``collect-once`` (one collection now, printed and stored) and ``procedures`` (print or deploy the T-SQL)."""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace
from typing import Any

import pyodbc
from sqlalchemy.exc import SQLAlchemyError

from supervisor import rules
from supervisor.children.access_token import TOKENS, attrs_before
from supervisor.children.collect import ServerSession
from supervisor.children.connection_string import UnsafeValue, build
from supervisor.children.errors import CollectionFailure, classify
from supervisor.children.flights import collect_within_deadline
from supervisor.children.odbc_driver import resolve_driver, with_hint
from supervisor.children.outcome import process_outcome
from supervisor.children.persist import write_items
from supervisor.children.records import WriteItem
from supervisor.children.status import ServerState
from supervisor.children.stored_state import load_baselines, load_states
from supervisor.children.targets import Target, read_servers
from supervisor.cli.context import CliContext
from supervisor.cli.output import print_json, print_table
from supervisor.errors import CONNECT, CollectorError, ConfigError, UsageError
from supervisor.procedures.permissions import DEPLOY_REFUSED_HINT, grants_script
from supervisor.procedures.resultsets import PROCEDURE_QUALIFIED_NAME
from supervisor.procedures.tsql import install_batches, install_script
from supervisor.storage.db_clock import db_utcnow
from supervisor.tenants import Tenant, leased_ids


def _target(ctx: CliContext, tenant_slug: str, name: str) -> tuple[Any, Target, Tenant]:
    tenant = ctx.tenant(tenant_slug)
    engine = ctx.tenant_engine(tenant)
    with engine.connect() as conn:
        rows = read_servers(conn, ctx.settings, ctx.decryptor, name=name)
    if rows.invalid:
        error = rows.invalid[0].error
        raise ConfigError(f"server {rules.shown(name)} in tenant {tenant.slug!r} cannot be used: {error}")
    if not rows.targets:
        raise UsageError(f"unknown server {rules.shown(name)} in tenant {tenant.slug!r}")
    return engine, rows.targets[0], tenant


def _hinted(failure: CollectionFailure, target: Target) -> str:
    """A failed connection with encryption on gets the hint to try ``--encrypt optional`` (not a session that logged
    in and dropped later: encryption worked)."""
    if failure.error_class != CONNECT or failure.phase != "connect":
        return failure.message
    return with_hint(failure.message, target.endpoint.encrypt)


def _collected_by_a_child(ctx: CliContext, tenant: Tenant) -> bool:
    """A supervisor holds the tenant's lease (its child collects the tenant's servers), or it cannot be told."""
    try:
        with ctx.system_engine.connect() as conn:
            return tenant.id in leased_ids(conn, db_utcnow(conn))
    except SQLAlchemyError:
        return True


def _spot_check(item: WriteItem) -> WriteItem:
    """What ``collect-once`` stores while a child collects the tenant: the snapshot without its wait increments,
    and the stored baseline left as it is. The child counts its increments from its own previous sample, over the
    same time: both stored, the tenant's wait time would be counted twice."""
    snapshot = None if item.snapshot is None else replace(item.snapshot, waits={})
    return replace(item, snapshot=snapshot, baseline=None)


def collect_once(args: argparse.Namespace, ctx: CliContext) -> int:
    driver = resolve_driver(ctx.settings.odbc_driver)
    engine, target, tenant = _target(ctx, args.tenant, args.name)
    with engine.connect() as conn:
        baselines = load_baselines(conn)
        state = load_states(conn).get(target.server_id, ServerState())
    previous = baselines.get(target.server_id)
    if (unusable := baselines.unusable.get(target.server_id)) is not None:
        print(f"note: the stored baseline of {target.name} cannot be used ({unusable}): no rate for this sample",
              file=sys.stderr)  # fmt: skip
    session = ServerSession(target, driver, ctx.settings.login_timeout, keep_connection=False)
    outcome = collect_within_deadline(session, ctx.settings.collection_timeout)
    processed = process_outcome(outcome, previous, state, ctx.settings.max_sample_gap,
                                collection_timeout=ctx.settings.collection_timeout)  # fmt: skip
    item = processed.item
    if outcome.sample is not None and _collected_by_a_child(ctx, tenant):
        item = _spot_check(item)
        print(f"note: a supervisor's child collects tenant {tenant.slug}: this sample's wait increments are shown, "
              "not stored (its own cover the same time)", file=sys.stderr)  # fmt: skip
    with engine.begin() as conn:
        write_items(conn, [item])
    if outcome.failure is not None:
        raise CollectorError(
            f"collection from {target.name} failed after {outcome.duration_ms} ms: "
            f"[{outcome.failure.error_class}] {_hinted(outcome.failure, target)}"
        )
    snapshot = processed.item.snapshot
    assert snapshot is not None and outcome.sample is not None
    values = {
        "server": target.name,
        "collected_at": snapshot.collected_at,
        "cpu_percent": snapshot.cpu_percent,
        "system_cpu_percent": snapshot.system_cpu_percent,
        "memory_percent": snapshot.memory_percent,
        "sql_memory_mb": snapshot.sql_memory_mb,
        "sql_target_memory_mb": snapshot.sql_target_memory_mb,
        "connection_count": snapshot.connection_count,
        "batch_requests_per_sec": snapshot.batch_requests_per_sec,
        "interval_seconds": snapshot.interval_seconds,
        "duration_ms": snapshot.duration_ms,
        "product_version": outcome.sample.product_version,
        "host_platform": outcome.sample.host_platform,
    }
    waits = {
        name: {"waiting_tasks_count": w.waiting_tasks_count, "wait_time_ms": w.wait_time_ms}
        for name, w in sorted(snapshot.waits.items())
    }
    if args.json:
        print_json({**values, "waits": waits})
    else:
        print_table(["metric", "value"], list(values.items()))
        if waits:
            print()
            print_table(
                ["wait type", "tasks", "wait ms"],
                [(n, w["waiting_tasks_count"], w["wait_time_ms"]) for n, w in waits.items()],
            )
    return 0


def procedures(args: argparse.Namespace, ctx: CliContext) -> int:
    if getattr(args, "action", None) != "deploy":
        print(grants_script() if getattr(args, "grants", False) else install_script(), end="")
        return 0
    driver = resolve_driver(ctx.settings.odbc_driver)
    _engine, target, _tenant = _target(ctx, args.tenant, args.name)
    try:
        connection_string = build(driver, target.endpoint)
    except UnsafeValue as exc:
        raise CollectorError(f"cannot connect to {target.name}: {exc}") from None
    deadline = time.monotonic() + max(ctx.settings.collection_timeout, 30.0)
    phase = "connect"
    try:
        # auth entra-token: the access token, as a collection passes it (supervisor/children/access_token.py)
        endpoint = target.endpoint
        extra = {"attrs_before": attrs_before(TOKENS.token(endpoint, deadline))} if endpoint.uses_token else {}
        conn = pyodbc.connect(
            connection_string, timeout=max(1, math.floor(ctx.settings.login_timeout)), autocommit=True, **extra
        )
        phase = "query"
        try:
            conn.timeout = max(1, math.floor(deadline - time.monotonic()))
            cursor = conn.cursor()
            for batch in install_batches():
                cursor.execute(batch)
                while cursor.nextset():
                    pass
        finally:
            conn.close()
    except (pyodbc.Error, CollectionFailure) as exc:
        failure = classify(exc, phase=phase)
        message = _hinted(failure, target)
        if phase == "query":  # logged in, but the procedure could not be created there
            message += f" ({DEPLOY_REFUSED_HINT})"
        raise CollectorError(f"deploying to {target.name} failed: [{failure.error_class}] {message}") from None
    print(f"installed {PROCEDURE_QUALIFIED_NAME} on {target.name}")
    return 0
