"""The servers a child collects from and their sessions (one ``ServerSession`` per server).

``replace`` takes a fresh list read from the tenant DB: a removed or changed server's session is
retired (closed once no collection uses it), so a changed host, port or password gets a new
connection while the old one finishes or is abandoned. Main thread only.
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Collection
from dataclasses import dataclass

from supervisor.children.collect import ServerSession
from supervisor.children.odbc_driver import OdbcDriver
from supervisor.children.targets import Target
from supervisor.errors import CONFIG
from supervisor.logs import log_event

log = logging.getLogger("supervisor.child")

#: Descriptors a child needs besides one socket per kept connection: its DBs, pipes, log, the driver's own files.
OTHER_DESCRIPTORS = 64


@dataclass(frozen=True)
class Changes:
    added: int
    removed: int
    changed: int

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


class ServerList:
    def __init__(self, driver: OdbcDriver, login_timeout: float, keep_connections: bool, tenant: str = "") -> None:
        self.targets: dict[int, Target] = {}
        self._tenant = tenant
        self._short_of_files = False
        self._driver = driver
        self._login_timeout = login_timeout
        self._keep_connections = keep_connections
        self._sessions: dict[int, ServerSession] = {}
        self._retired: list[ServerSession] = []  # replaced/removed sessions to close when idle

    def replace(self, targets: dict[int, Target], busy: Collection[ServerSession]) -> Changes:
        added = [sid for sid in targets if sid not in self.targets]
        removed = [sid for sid in self.targets if sid not in targets]
        changed = [sid for sid in targets if sid in self.targets and targets[sid] != self.targets[sid]]
        for sid in removed + changed:
            session = self._sessions.pop(sid, None)
            if session is not None:
                self._retired.append(session)
        self.targets = targets
        self.close_idle_retired(busy)
        self._check_open_files()
        return Changes(len(added), len(removed), len(changed))

    def _check_open_files(self) -> None:
        """One warning when kept connections would take more descriptors than the child may open: the servers
        beyond the limit fail to connect (the driver says only "Login timeout expired")."""
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        needed = len(self.targets) + OTHER_DESCRIPTORS
        short = self._keep_connections and limit != resource.RLIM_INFINITY and needed > limit
        if short and not self._short_of_files:
            log_event(
                log, logging.WARNING, "servers.open_files_short", "%d servers with kept connections need about %d "
                "open files, but this child may open %d (RLIMIT_NOFILE): servers beyond that fail to connect; raise "
                "the limit (LimitNOFILE= in the systemd unit, minfds in supervisord) or set keep_connections = no",
                len(self.targets), needed, limit, tenant=self._tenant, error_class=CONFIG,
            )  # fmt: skip
        self._short_of_files = short

    def session_for(self, target: Target) -> ServerSession:
        session = self._sessions.get(target.server_id)
        if session is None:
            session = ServerSession(target, self._driver, self._login_timeout, self._keep_connections)
            self._sessions[target.server_id] = session
        return session

    def forget_session(self, server_id: int) -> None:
        """The server's session was abandoned at a deadline (its thread closes it): the next collection
        gets a new one."""
        self._sessions.pop(server_id, None)

    def has_retired(self) -> bool:
        return bool(self._retired)

    def close_idle_retired(self, busy: Collection[ServerSession]) -> None:
        busy_ids = {id(session) for session in busy}
        still_busy = []
        for session in self._retired:
            if id(session) in busy_ids:
                still_busy.append(session)
            else:
                session.close()
        self._retired = still_busy

    def close_all(self, busy: Collection[ServerSession]) -> None:
        """At shutdown: every session no collection still holds."""
        busy_ids = {id(session) for session in busy}
        for session in [*self._sessions.values(), *self._retired]:
            if id(session) not in busy_ids:
                session.close()
