"""``python -m tests.supervisor.stalling_parent -c CONFIG run``: the real command line, with a parent that stops
itself (SIGSTOP) in the middle of a poll, inside its system DB transaction, when the file ``stall-now`` appears
beside the config, as a parent stopped by an operator, a debugger or a paused VM would be; SIGCONT resumes it."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

from supervisor.parent import instances

_heartbeat = instances.heartbeat


def stalling_heartbeat(conn: Any, *args: Any, **kwargs: Any) -> None:
    _heartbeat(conn, *args, **kwargs)
    trigger = Path(sys.argv[sys.argv.index("-c") + 1]).parent / "stall-now"
    if trigger.exists():
        trigger.unlink()
        os.kill(os.getpid(), signal.SIGSTOP)


instances.heartbeat = stalling_heartbeat

if __name__ == "__main__":
    from supervisor.cli.entry import main

    sys.exit(main())
