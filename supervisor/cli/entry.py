"""The program's first code: the stop and reload signals are held before anything heavy is imported.

Importing the command line (SQLAlchemy, the parent's loop) takes about half a second. A SIGTERM, SIGINT, SIGQUIT
or SIGHUP in that time would get the default action: a supervisor killed by the stop it should have obeyed, a
``KeyboardInterrupt`` traceback, a ``systemctl reload`` that kills it. Held, ``run`` acts on them once its
handlers are in place; every other command releases them as soon as its arguments are parsed.
"""

from __future__ import annotations

import signal

HELD_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)


def main() -> int:
    signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
    from supervisor.cli.main import main as run_command_line

    return run_command_line()


def release_signals() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)
