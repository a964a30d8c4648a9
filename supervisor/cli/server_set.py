"""``server set TENANT NAME [any option of server add]``: change a registered server in place.

Only the options given change; the result is checked with ``supervisor.rules`` as ``server add`` checks a new
server. The row keeps its id, so snapshots, waits and status events stay attached. A running child reads its
server list every ``server_refresh_interval``: a changed server's kept connection is retired and the next
collection connects with the new settings.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from supervisor.cli.context import CliContext
from supervisor.cli.server_cmds import read_password
from supervisor.errors import UsageError
from supervisor.rules import ENTRA_TOKEN, SQL_AUTH
from supervisor.servers import ServerInfo, get_server, update_server

#: Namespace entries that are not server settings.
_NOT_SETTINGS = frozenset({"command", "action", "tenant", "name", "config", "debug"})
#: Option dest -> ServerSpec field, where they differ (the others are the same name).
_FIELD_OF = {"user": "username", "interval": "interval_seconds"}
_PASSWORD_OPTIONS = ("password_env", "password_stdin")


def set_(args: argparse.Namespace, ctx: CliContext) -> int:
    given = {key: value for key, value in vars(args).items() if key not in _NOT_SETTINGS}
    changes = _changes(given)
    password = None
    if any(option in given for option in _PASSWORD_OPTIONS):
        password = read_password(
            argparse.Namespace(password_env=given.get("password_env"), password_stdin=bool(given.get("password_stdin")))
        )
        changes["password"] = password
    if not changes:
        raise UsageError("server set: nothing to change: give at least one option of server add (see --help)")
    tenant = ctx.tenant(args.tenant)
    engine = ctx.tenant_engine(tenant)
    before = get_server(engine, args.name)
    changes = {**_implied(before, changes), **changes}
    encrypted = None
    if password is not None:
        ctx.check_key_matches(tenant, engine)
        encrypted = ctx.secret_box.encrypt(password)
    after = update_server(engine, args.name, changes, encrypted)
    described = _describe(before, after, changes)
    refresh = f"{ctx.settings.server_refresh_interval:g} s"
    print(f"server {after.name} of {tenant.slug}: {described}; a running child applies it within {refresh}")
    return 0


def _changes(given: dict[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for dest, value in given.items():
        if dest in _PASSWORD_OPTIONS:
            continue
        if dest == "disabled":
            changes["enabled"] = not value
        elif dest == "enabled":
            changes["enabled"] = bool(value)
        elif dest == "no_trust_server_certificate":
            changes["trust_server_certificate"] = False
        elif dest == "token_file" and value:
            changes["token_file"] = os.path.abspath(value)  # as server add stores it
        else:
            changes[_FIELD_OF.get(dest, dest)] = value
    if "enabled" in given and "disabled" in given:
        raise UsageError("server set: --enabled and --disabled contradict each other")
    if "trust_server_certificate" in given and "no_trust_server_certificate" in given:
        raise UsageError("server set: --trust-server-certificate and --no-trust-server-certificate contradict")
    return changes


def _implied(before: ServerInfo, changes: dict[str, Any]) -> dict[str, Any]:
    """What a change of authentication implies: one token source replaces the other; ``sql`` drops the token
    sources; switching to ``entra-token`` drops the SQL login (the driver refuses a user with a token)."""
    implied: dict[str, Any] = {}
    if "token_command" in changes:
        implied["token_file"] = None
    if "token_file" in changes:
        implied["token_command"] = None
    auth = changes.get("auth", before.auth)
    if auth == ENTRA_TOKEN and before.auth != ENTRA_TOKEN:
        if before.username is not None:
            implied["username"] = None
        implied["password"] = None
    elif "auth" in changes and auth in (None, SQL_AUTH):
        implied.update(token_command=None, token_file=None)
    return {key: value for key, value in implied.items() if key == "password" or getattr(before, key) != value}


def _describe(before: ServerInfo, after: ServerInfo, changes: dict[str, Any]) -> str:
    parts = []
    for field in changes:
        if field == "password":
            parts.append("password replaced (stored encrypted)" if changes[field] else "password removed")
            continue
        old, new = _shown(getattr(before, field, None), field), _shown(getattr(after, field, None), field)
        parts.append(f"{field} {old} -> {new}" if old != new else f"{field} unchanged ({new})")
    return ", ".join(parts)


def _shown(value: object, field: str) -> str:
    if value is None:
        return "none" if field == "username" else "default"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
