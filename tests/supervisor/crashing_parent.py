"""``python -m tests.supervisor.crashing_parent -c CONFIG run``: the real command line, with a parent whose loop
fails with an unexpected error once a child runs (as running out of descriptors once made it fail)."""

from __future__ import annotations

import sys

from supervisor.parent import loop
from supervisor.parent.handle import ChildState

_tend_children = loop.Supervisor.tend_children


def failing_tend_children(self: loop.Supervisor, now: float) -> None:
    if any(handle.state is ChildState.RUNNING for handle in self.handles.values()):
        raise RuntimeError("planted failure of the parent's loop")
    _tend_children(self, now)


loop.Supervisor.tend_children = failing_tend_children  # type: ignore[method-assign]

if __name__ == "__main__":
    from supervisor.cli.entry import main

    sys.exit(main())
