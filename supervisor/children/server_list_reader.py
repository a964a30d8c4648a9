"""The tenant's server list, read on a thread of its own.

The child's main thread schedules, enforces deadlines, sends heartbeats and hears the stop request: it must
never wait on the tenant DB. A read held up by a locked or unreachable tenant DB (a PostgreSQL ``LOCK
TABLE``, a network black hole) now delays only the next server list, and the child keeps collecting from the
current one; each statement is bounded by the engine's call timeout, after which the read fails and is
retried. The first read, before anything is collected, is made on the caller's thread (``read``).
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import Engine

from supervisor.children.status import ServerState
from supervisor.children.stored_state import check_ages, load_states
from supervisor.children.targets import ServerRows, TargetMemo, count_disabled, read_servers
from supervisor.clock import utcnow
from supervisor.config import Settings
from supervisor.secret_box import PasswordDecryptor


@dataclass(frozen=True)
class ServerListRead:
    rows: ServerRows
    disabled: int
    #: Stored states of the listed servers the child did not know yet.
    states: dict[int, ServerState]
    #: Seconds since the last stored check of the listed servers not yet scheduled (see ``check_ages``).
    ages: dict[int, float]


class ServerListReader:
    """``request`` a read, ``take`` its result (a ``ServerListRead`` or the exception that ended it) at a
    later wake. One read at a time; ``busy`` while one is under way."""

    def __init__(self, engine: Engine, settings: Settings, box: PasswordDecryptor, tenant: str) -> None:
        self._engine = engine
        self._settings = settings
        self._box = box
        self._memo = TargetMemo()
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._stopping = False
        self._busy = False
        self._inputs: tuple[frozenset[int], frozenset[int]] = (frozenset(), frozenset())
        self._result: ServerListRead | Exception | None = None
        self._thread = threading.Thread(target=self._run, name=f"servers-{tenant}", daemon=True)

    def read(self, known: Collection[int], scheduled: Collection[int]) -> ServerListRead:
        """On the caller's thread; raises what the read raises. ``known``: servers whose state the child has;
        ``scheduled``: servers it already collects."""
        with self._engine.connect() as conn:
            rows = read_servers(conn, self._settings, self._box, memo=self._memo)
            listed = [*(target.server_id for target in rows.targets), *(server.server_id for server in rows.invalid)]
            unknown = [sid for sid in listed if sid not in known]
            added = [target.server_id for target in rows.targets if target.server_id not in scheduled]
            return ServerListRead(
                rows=rows,
                disabled=count_disabled(conn),
                states=load_states(conn) if unknown else {},
                ages=check_ages(conn, added, utcnow()) if added else {},
            )

    def start(self) -> None:
        self._thread.start()

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._busy

    def request(self, known: Collection[int], scheduled: Collection[int]) -> bool:
        """Ask for a read (False if one is still under way)."""
        with self._lock:
            if self._busy:
                return False
            self._busy = True
            self._inputs = (frozenset(known), frozenset(scheduled))
        self._wanted.set()
        return True

    def take(self) -> ServerListRead | Exception | None:
        with self._lock:
            result, self._result = self._result, None
            return result

    def stop(self) -> None:
        """Not joined: a read may be waiting on the DB, bounded by the call timeout; the thread is a daemon."""
        self._stopping = True
        self._wanted.set()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._stopping:
                return
            with self._lock:
                known, scheduled = self._inputs
            result: ServerListRead | Exception
            try:
                result = self.read(known, scheduled)
            except Exception as exc:  # the main thread reports it; this thread must live on
                result = exc
            with self._lock:
                self._result = result
                self._busy = False
