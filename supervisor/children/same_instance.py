"""Two server rows of one tenant that reach the same SQL Server instance (one host under two names, an alias, a
row added twice by the web app): the instance's figures are stored twice and its load counted twice in every sum.
Told by what the instance says of itself (``@@SERVERNAME`` and its start time, and the database on Azure SQL
Database, where each database is a target of its own), so a DNS alias is caught too. One WARNING per pair found."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from supervisor.logs import log_event
from supervisor.procedures.catalog import AZURE_SQL_DATABASE, ENGINE_EDITIONS

log = logging.getLogger("supervisor.child")

Identity = tuple[str, dt.datetime, str | None]


def instance_identity(server_name: str | None, started: dt.datetime, edition: int | None, database: str | None
                      ) -> Identity | None:  # fmt: skip
    if not server_name:
        return None
    per_database = ENGINE_EDITIONS.get(edition or 0) == AZURE_SQL_DATABASE
    return server_name, started, database if per_database else None


class SameInstanceWatch:
    """Main thread only; a dict lookup per collection."""

    def __init__(self) -> None:
        self._identity: dict[int, Identity] = {}
        self._servers: dict[Identity, dict[int, str]] = {}
        self._reported: set[frozenset[int]] = set()

    def note(self, server_id: int, name: str, identity: Identity | None, context: dict[str, Any]) -> None:
        if self._identity.get(server_id) != identity:
            self.forget(server_id)
        if identity is None:
            return
        self._identity[server_id] = identity
        sharing = self._servers.setdefault(identity, {})
        sharing[server_id] = name
        if len(sharing) < 2:
            return
        for other, other_name in sharing.items():
            pair = frozenset((server_id, other))
            if other == server_id or pair in self._reported:
                continue
            self._reported.add(pair)
            log_event(
                log, logging.WARNING, "servers.same_instance", "servers %s and %s reach the same SQL Server "
                "instance (%s): its figures are stored under both", other_name, name, identity[0],
                other=other_name, instance=identity[0], **context,
            )  # fmt: skip

    def retain(self, server_ids: set[int]) -> None:
        """Only these servers are still listed: a removed one pairs with no server added later."""
        for server_id in [sid for sid in self._identity if sid not in server_ids]:
            self.forget(server_id)

    def forget(self, server_id: int) -> None:
        identity = self._identity.pop(server_id, None)
        if identity is None:
            return
        sharing = self._servers.get(identity, {})
        sharing.pop(server_id, None)
        if not sharing:
            self._servers.pop(identity, None)
        self._reported = {pair for pair in self._reported if server_id not in pair} if self._reported else set()
