"""``init-config [PATH]``: write the commented sample ``collector.ini`` shipped inside the package."""

from __future__ import annotations

import argparse
import os
from importlib import resources
from pathlib import Path

from supervisor.cli.context import CliContext
from supervisor.errors import CollectorError, UsageError

SAMPLE = "collector.ini"


def sample_text() -> str:
    """The packaged sample (the same file content as the repository's ``collector.ini``)."""
    return resources.files("supervisor").joinpath(SAMPLE).read_text(encoding="utf-8")


def init_config(args: argparse.Namespace, ctx: CliContext) -> int:
    """PATH defaults to the ``-c`` file (``./collector.ini``); a folder gets a ``collector.ini`` inside it."""
    target = Path(args.path if args.path is not None else ctx.config_path)
    if target.is_dir():
        target = target / SAMPLE
    text = sample_text()
    try:
        # O_EXCL: never overwrite, even if the file appears between a check and the write.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise UsageError(f"{target} already exists: not overwritten (remove it or give another PATH)") from None
    except OSError as exc:
        raise CollectorError(f"cannot write {target}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    print(f"wrote {target}: the sample configuration; edit it, then run: collector-supervisor -c {target} init-db")
    return 0
