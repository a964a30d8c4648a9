"""Argument parsing and dispatch; every command's errors end here as one line and an exit code."""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import traceback
from collections.abc import Sequence
from types import ModuleType

from sqlalchemy.exc import SQLAlchemyError

from supervisor import __version__
from supervisor.cli.context import CliContext
from supervisor.cli.entry import release_signals
from supervisor.cli.options import copy_options
from supervisor.cli.output import OutputRefused, drop_unwritten_output, refused_output_reported
from supervisor.errors import EXIT_FAILURE, EXIT_USAGE, CollectorError
from supervisor.rules import printable
from supervisor.storage.engine import describe_db_error

PROG = "collector-supervisor"

# command name -> "module:function"; modules are imported only when their command runs.
HANDLERS = {
    "run": "supervisor.cli.run_cmd:run",
    "init-db": "supervisor.cli.admin_cmds:init_db",
    "tenant": "supervisor.cli.tenant_cmds:dispatch",
    "server": "supervisor.cli.server_cmds:dispatch",
    "status": "supervisor.cli.status_cmd:status",
    "collect-once": "supervisor.cli.collect_cmds:collect_once",
    "procedures": "supervisor.cli.collect_cmds:procedures",
    "demo": "supervisor.cli.demo_cmd:demo",
    "init-config": "supervisor.cli.config_cmd:init_config",
}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: a number of seconds greater than 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description="Keeps one SQL Server collector child per active tenant.")
    parser.add_argument("-c", "--config", default="collector.ini", help="configuration file (./collector.ini)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)

    commands.add_parser("run", help="run the supervisor in the foreground (default)")
    commands.add_parser("init-db", help="create or upgrade the system DB and every tenant DB schema")

    tenant = commands.add_parser("tenant", help="manage tenants").add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=OneLineParser
    )
    add = tenant.add_parser("add", help="register a tenant and create its DB schema")
    add.add_argument("slug")
    add.add_argument("--name")
    add.add_argument("--db-url", help="SQLAlchemy URL of the tenant DB (default: collector.tenant_db_url)")
    add.add_argument("--suspended", action="store_true")
    listing = tenant.add_parser("list", help="list tenants")
    listing.add_argument("--json", action="store_true")
    for action in ("activate", "suspend"):
        tenant.add_parser(action, help=f"{action} a tenant").add_argument("slug")

    server = commands.add_parser("server", help="manage a tenant's SQL Servers").add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=OneLineParser
    )
    add = add_server = server.add_parser("add", help="register a server with collection enabled")
    add.add_argument("tenant")
    add.add_argument("name")
    add.add_argument("--host", required=True)
    add.add_argument("--port", type=int, default=1433)
    add.add_argument("--user")
    secret = add.add_mutually_exclusive_group()
    secret.add_argument("--password-env", metavar="VAR", help="read the password from this environment variable")
    secret.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.add_argument("--interval", type=int, help="collection interval in seconds (collector.collection_interval)")
    add.add_argument("--disabled", action="store_true")
    add.add_argument("--encrypt", choices=("yes", "no", "optional", "strict"))
    add.add_argument("--trust-server-certificate", action="store_true", default=None)
    add.add_argument("--collection-mode", choices=("auto", "procedure", "adhoc"))
    add.add_argument("--database", help="database to log in to (default: master; Azure SQL Database: the database)")
    add.add_argument("--auth", choices=("sql", "entra-token"), help="sql (default) or an Entra ID access token")
    token = add.add_mutually_exclusive_group()
    token.add_argument("--token-command", metavar="CMD", help="entra-token: a command printing an access token")
    token.add_argument("--token-file", metavar="FILE", help="entra-token: a file holding an access token")
    server_set = server.add_parser("set", help="change a server: any option of server add")  # options: below
    listing = server.add_parser("list", help="list servers: one tenant's, or every tenant's")
    listing.add_argument("tenant", nargs="?", help="only this tenant (default: every tenant, with a tenant column)")
    listing.add_argument("--status", choices=("online", "offline", "unknown"), help="only servers with this status")
    listing.add_argument("--wide", action="store_true", help="the full error text (else cut to fit)")
    listing.add_argument("--json", action="store_true")
    show = server.add_parser("show", help="a server's stored history: latest values, charts, waits, events")
    show.add_argument("tenant")
    show.add_argument("name")
    show.add_argument("--since", default="1h", help="the window: 90s, 30m, 1h, 7d, 2w (default 1h)")
    show.add_argument("--json", action="store_true", help="the series and the rest as JSON")
    show.add_argument("--png", metavar="FILE", help="also write the charts as a PNG (needs the plot extra)")
    for action in ("enable", "disable", "remove"):
        sub = server.add_parser(action, help=f"{action} a server")
        sub.add_argument("tenant")
        sub.add_argument("name")

    status = commands.add_parser("status", help="supervisors, children and servers at a glance")
    status.add_argument("--json", action="store_true")

    once = commands.add_parser("collect-once", help="collect one server now, print and store the snapshot")
    once.add_argument("tenant")
    once.add_argument("name")
    once.add_argument("--json", action="store_true")

    procedures = commands.add_parser("procedures", help="print or deploy the collection procedures")
    procedures.add_argument("--print", action="store_true", help="print the T-SQL (the default)")
    procedures.add_argument(
        "--grants", action="store_true", help="print the permissions the monitoring login needs, per flavour"
    )
    deploy = procedures.add_subparsers(dest="action", metavar="ACTION", parser_class=OneLineParser)
    target = deploy.add_parser("deploy", help="install the procedures on a server")
    target.add_argument("tenant")
    target.add_argument("name")

    demo = commands.add_parser("demo", help="a simulated fleet, supervised, with a live status table")
    demo.add_argument("--tenants", type=int, default=3)
    demo.add_argument("--servers", type=int, default=4)
    demo.add_argument("--seconds", type=_seconds, default=None, help="stop after this long (default: Ctrl-C)")
    demo.add_argument("--dir", default=None, help="demo folder (default: ./demo)")

    init_config = commands.add_parser("init-config", help="write the commented sample collector.ini")
    init_config.add_argument("path", nargs="?", help="file or folder to write (default: the -c file)")

    # Last, once server add is complete: server set takes every option of add (none required, none defaulted).
    server_set.add_argument("tenant")
    server_set.add_argument("name")
    copy_options(add_server, server_set)
    server_set.add_argument("--enabled", action="store_true", default=argparse.SUPPRESS, help="enable collection")
    server_set.add_argument(
        "--no-trust-server-certificate", action="store_true", default=argparse.SUPPRESS, help="validate it again"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or "run"
    module_name, function_name = HANDLERS[command].split(":")
    context = CliContext(config_path=args.config, debug=args.debug)
    with refused_output_reported():
        return _run_command(args, command, module_name, function_name, context)


def _run_command(
    args: argparse.Namespace, command: str, module_name: str, function_name: str, context: CliContext
) -> int:
    try:
        if command != "run":  # run releases them once its handlers are in place
            release_signals()
        handler = getattr(_import_command(module_name, command), function_name)
        code = int(handler(args, context) or 0)
        sys.stdout.flush()  # here, so that output refused at the last moment is reported too
        return code
    except CollectorError as exc:
        return _fail(args.debug, str(exc), exc.exit_code)
    except SQLAlchemyError as exc:
        return _fail(args.debug, f"database error: {describe_db_error(exc)}", EXIT_FAILURE)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `status --json | head`: the reader has gone, which is not an error to report
        drop_unwritten_output()
        return EXIT_FAILURE
    except OutputRefused as exc:
        drop_unwritten_output()
        return _fail(args.debug, str(exc), exc.exit_code)
    except Exception as exc:
        if args.debug:
            raise
        return _fail(False, f"internal error: {type(exc).__name__}: {exc} (run with --debug for details)", EXIT_FAILURE)


def _import_command(module_name: str, command: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise CollectorError(f"the {command!r} command is not available yet in this version") from None


def _fail(debug: bool, message: str, code: int) -> int:
    if debug:
        traceback.print_exc()
    print(f"{PROG}: error: {printable(message)}", file=sys.stderr)  # it may quote a server's or a row's text
    return code


if __name__ == "__main__":
    from supervisor.cli.entry import main as entry_main

    raise SystemExit(entry_main())
