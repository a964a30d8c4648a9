"""Unwritten results on local disk: ``<spool_dir>/<tenant>/*.jsonl``, replayed by the next writer.

Files are written whole or not at all (``supervisor.whole_file``). Replay is idempotent (the writer skips
snapshots it already stored), so a file is deleted only after its items are committed, and a crash in between
only costs a harmless second replay. A file with a line this version cannot read is kept (``*.jsonl.unread``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

from supervisor.children.deltas import Baseline
from supervisor.children.records import WriteItem
from supervisor.errors import STORAGE
from supervisor.logs import log_event
from supervisor.whole_file import write_whole

log = logging.getLogger("supervisor.child.spool")
_sequence = itertools.count()


class Spool:
    def __init__(self, spool_dir: str, tenant: str) -> None:
        self.folder = Path(spool_dir) / tenant
        self.tenant = tenant
        #: Files this process leaves alone: unreadable (a directory of that name, an I/O error), or replayed but
        #: not removable (a read-only file system); the next process tries them again.
        self._passed_over: set[Path] = set()
        #: Files with a line that could not be read: kept under another name once the rest is stored.
        self._with_unread_lines: set[Path] = set()

    def write(self, items: Iterable[WriteItem]) -> Path | None:
        """One new file with ``items``; an ``OSError`` (disk full, read-only) leaves no file at all."""
        lines = [json.dumps(item.to_json(), separators=(",", ":")) for item in items]
        if not lines:
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}-{next(_sequence):06d}.jsonl"
        final = self.folder / name
        write_whole(final, ("\n".join(lines) + "\n").encode("utf-8"))
        return final

    def count_items(self) -> int:
        """Lines in the spool files now (each line is one result); unreadable files count as empty."""
        count = 0
        for path in self.files():
            with contextlib.suppress(OSError), path.open("rb") as handle:
                count += sum(1 for line in handle if line.strip())
        return count

    def files(self) -> list[Path]:
        try:
            if not self.folder.is_dir():
                return []
            return sorted(path for path in self.folder.glob("*.jsonl") if path not in self._passed_over)
        except OSError:
            return []

    def read(self, path: Path) -> list[WriteItem]:
        """The items of ``path``; a line that is not one (bad JSON, bytes that are not UTF-8) is skipped with a
        ``spool.corrupt`` line, a file that cannot be read is passed over with one ``spool.unreadable`` line."""
        items = []
        try:
            with path.open("rb") as handle:
                for number, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        items.append(WriteItem.from_json(json.loads(line.decode("utf-8"))))
                    except (ValueError, KeyError, TypeError) as exc:
                        self._with_unread_lines.add(path)
                        log_event(log, logging.ERROR, "spool.corrupt", "skipping unreadable spool line %s:%d: %s",
                                  path.name, number, exc, tenant=self.tenant, error_class=STORAGE)  # fmt: skip
        except OSError as exc:
            self._passed_over.add(path)
            log_event(log, logging.ERROR, "spool.unreadable", "cannot read spool file %s, left as it is: %s", path,
                      exc, tenant=self.tenant, error_class=STORAGE, error=str(exc))  # fmt: skip
            return []
        return items

    def remove(self, path: Path) -> None:
        """After its items are stored; a file that cannot be removed is only replayed again by the next process. A
        file with lines that could not be read is kept as ``<name>.unread`` (never replayed again), for a person
        or a later version to read: those lines are results that are stored nowhere else."""
        try:
            if path in self._with_unread_lines:
                kept = path.with_name(path.name + ".unread")
                path.rename(kept)
                log_event(log, logging.WARNING, "spool.kept", "spool file %s had lines that could not be read: "
                          "kept as %s", path.name, kept, tenant=self.tenant, error_class=STORAGE)  # fmt: skip
                return
            path.unlink(missing_ok=True)
        except OSError as exc:
            self._passed_over.add(path)
            log_event(log, logging.WARNING, "spool.not_removed", "cannot remove replayed spool file %s (its results "
                      "are stored; the next start replays it again, harmlessly): %s", path, exc, tenant=self.tenant,
                      error_class=STORAGE, error=str(exc))  # fmt: skip

    def newest_baselines(self) -> dict[int, Baseline]:
        """Per server, the newest baseline waiting in the spool (newer than the DB's, if any)."""
        newest: dict[int, Baseline] = {}
        for path in self.files():
            for item in self.read(path):
                baseline = item.baseline
                if baseline is None:
                    continue
                current = newest.get(item.server_id)
                if current is None or baseline.newer_than(current):
                    newest[item.server_id] = baseline
        return newest
