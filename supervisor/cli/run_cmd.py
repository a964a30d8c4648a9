"""``run`` (the default command): the supervisor in the foreground until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse

from setproctitle import setproctitle

from supervisor.cli.context import CliContext
from supervisor.logs import configure_logging
from supervisor.open_files import raise_open_files_limit
from supervisor.parent.fork import preload_child_modules
from supervisor.parent.loop import Supervisor
from supervisor.parent.signals import SignalFlags, block_signals


def run(args: argparse.Namespace, ctx: CliContext) -> int:
    block_signals()  # until the handlers are in place: a TERM now is acted on once the loop can
    setproctitle("collector-supervisor: parent")
    raise_open_files_limit()
    settings = ctx.settings
    configure_logging(settings.logging)
    preload_child_modules()
    flags = SignalFlags()
    supervisor = Supervisor(settings, flags)
    flags.install()
    code = supervisor.run()
    # Interpreter shutdown restores the default handlers: a stop signal arriving now (a second TERM
    # right after the first) would kill the stopped process with 143. Held back, it dies with it.
    block_signals()
    return code
