"""``server add|enable|disable|remove`` (``set``, ``list``, ``show``: their own modules). Passwords come from an env
var or stdin, never argv."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from supervisor import rules
from supervisor.cli.context import CliContext
from supervisor.errors import UsageError
from supervisor.servers import (
    ServerSpec,
    add_server,
    remove_server,
    set_enabled,
    validate_spec,
)


def dispatch(args: argparse.Namespace, ctx: CliContext) -> int:
    if args.action in ("set", "list", "show"):  # each in its own module
        return _other_action(args.action)(args, ctx)
    actions = {"add": add, "enable": enable, "disable": disable, "remove": remove}
    return actions[args.action](args, ctx)


def _other_action(action: str) -> Callable[[argparse.Namespace, CliContext], int]:
    if action == "set":
        from supervisor.cli.server_set import set_

        return set_
    if action == "list":
        from supervisor.cli.server_listing import list_

        return list_
    from supervisor.cli.show_cmd import show

    return show


def read_password(args: argparse.Namespace) -> str | None:
    if args.password_env is not None:
        if not args.password_env or "=" in args.password_env or "\0" in args.password_env:
            raise UsageError(f"--password-env: {args.password_env!r} is not an environment variable name")
        value = os.environ.get(args.password_env)
        if value is None:
            raise UsageError(f"--password-env: environment variable {args.password_env} is not set")
        return _checked(value, f"--password-env {args.password_env}")
    if args.password_stdin:
        if sys.stdin is None:  # the process was started with standard input closed
            raise UsageError("--password-stdin: standard input is closed")
        try:
            value = sys.stdin.readline().rstrip("\r\n")
        except UnicodeDecodeError:
            raise UsageError("--password-stdin: the password on standard input is not UTF-8 text") from None
        except (OSError, ValueError) as exc:
            raise UsageError(f"--password-stdin: cannot read standard input: {exc}") from None
        if not value:
            raise UsageError("--password-stdin: no password on standard input")
        return _checked(value, "--password-stdin")
    return None


def _checked(password: str, source: str) -> str:
    try:
        return rules.password(password)
    except ValueError as exc:
        raise UsageError(f"{source}: invalid password: {exc}") from None


def add(args: argparse.Namespace, ctx: CliContext) -> int:
    password = read_password(args)
    spec = ServerSpec(
        name=args.name,
        host=args.host,
        port=args.port,
        username=args.user,
        password=password,
        interval_seconds=args.interval,
        enabled=not args.disabled,
        encrypt=args.encrypt,
        trust_server_certificate=args.trust_server_certificate,
        collection_mode=args.collection_mode,
        database=args.database,
        auth=args.auth,
        token_command=args.token_command,
        token_file=os.path.abspath(args.token_file) if args.token_file else None,
    )
    validate_spec(spec)
    tenant = ctx.tenant(args.tenant)
    engine = ctx.tenant_engine(tenant)
    encrypted = None
    if password is not None:
        ctx.check_key_matches(tenant, engine)
        encrypted = ctx.secret_box.encrypt(password)
    info = add_server(engine, spec, encrypted)
    state = "enabled" if info.enabled else "disabled"
    print(f"server {info.name} added to {args.tenant} ({info.host}:{info.port}, collection {state})")
    return 0


def enable(args: argparse.Namespace, ctx: CliContext) -> int:
    info = set_enabled(ctx.tenant_engine(ctx.tenant(args.tenant)), args.name, True)
    print(f"server {info.name}: collection enabled")
    return 0


def disable(args: argparse.Namespace, ctx: CliContext) -> int:
    info = set_enabled(ctx.tenant_engine(ctx.tenant(args.tenant)), args.name, False)
    print(f"server {info.name}: collection disabled")
    return 0


def remove(args: argparse.Namespace, ctx: CliContext) -> int:
    info = remove_server(ctx.tenant_engine(ctx.tenant(args.tenant)), args.name)
    print(f"server {info.name} removed from {args.tenant}; its history is kept")
    return 0
