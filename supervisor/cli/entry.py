"""The program's first code: the stop and reload signals are held before anything heavy is imported.

Importing the command line (SQLAlchemy, the parent's loop) takes about half a second. A SIGTERM, SIGINT, SIGQUIT
or SIGHUP in that time would get the default action: a supervisor killed by the stop it should have obeyed, a
``KeyboardInterrupt`` traceback, a ``systemctl reload`` that kills it. Held, ``run`` acts on them once its
handlers are in place; every other command releases them as soon as its arguments are parsed.
"""

from __future__ import annotations

import os
import signal

HELD_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)


def main() -> int:
    signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
    _fill_closed_standard_fds()
    from supervisor.cli.main import main as run_command_line

    return run_command_line()


def release_signals() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)


def _fill_closed_standard_fds() -> None:
    """Started with stdin, stdout or stderr closed (``2>&-``): ``/dev/null`` takes the descriptor, or the next file
    opened would (the system DB, a log file) and whatever writes to descriptor 2 would write into it. Python has
    already set ``sys.stderr`` to None then; ``logging.file = -`` says so (``supervisor.logs``)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)
            if opened != fd:
                os.dup2(opened, fd)
                os.close(opened)
