"""asyncio listeners (one per simulated server), the servers' sessions, and the running fleet."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from sqlserver_sim.engine import SimulatedInstance
from sqlserver_sim.fleet import ServerSpec
from sqlserver_sim.session import Session
from sqlserver_sim.stalls import StuckListener
from sqlserver_sim.tls import CertificateStore


class SimulatedServer:
    """One simulated SQL Server: its listener, engine state and open sessions."""

    def __init__(self, spec: ServerSpec, certificates: CertificateStore | None = None) -> None:
        self.spec = spec
        self.instance = SimulatedInstance(spec)
        self.certificates = certificates
        self.sessions: set[Session] = set()
        #: A TDS listener, or (stall "connect") one whose connect() never completes, or None (down).
        self.listener: asyncio.Server | StuckListener | None = None

    async def start(self) -> None:
        if not self.spec.faults.down:
            await self._listen()

    async def _listen(self) -> None:
        if _stuck(self.spec):
            stuck = StuckListener(self.spec.host, self.spec.port)
            await stuck.open()
            self.listener = stuck
            return
        self.listener = await asyncio.start_server(self._accept, self.spec.host, self.spec.port,
                                                   reuse_address=True, backlog=512)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = Session(self, reader, writer)
        self.sessions.add(session)
        try:
            await session.run()
        finally:
            self.sessions.discard(session)

    def drop_sessions(self) -> None:
        for session in list(self.sessions):
            session.close()

    def _close_listener(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None

    async def stop(self) -> None:
        self._close_listener()
        self.drop_sessions()

    async def apply(self, spec: ServerSpec) -> None:
        """Take a changed fleet entry into account, touching only what changed."""
        old, self.spec = self.spec, spec
        self.instance.spec = spec
        if spec.procedure_installed != old.procedure_installed:
            self.instance.procedure_installed = spec.procedure_installed
            self.instance.procedure_body = None
        if spec.faults.restart != self.instance.applied_restart:
            self.instance.applied_restart = spec.faults.restart
            self.instance.restart()
            self.drop_sessions()
        if (spec.host, spec.port) != (old.host, old.port) or spec.faults.down:
            await self.stop()
        elif _stuck(spec) != isinstance(self.listener, StuckListener):
            self._close_listener()  # into or out of the "connect" stall; open sessions stay
        if self.listener is None and not spec.faults.down:
            await self._listen()

    @property
    def listening(self) -> bool:
        return self.listener is not None


def _stuck(spec: ServerSpec) -> bool:
    return spec.faults.stall == "connect"


@dataclass
class ApplyReport:
    added: int = 0
    changed: int = 0
    removed: int = 0
    errors: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.added} added, {self.changed} changed, {self.removed} removed"


class FleetRunner:
    """The running fleet: starts, updates and stops servers as the fleet file changes."""

    def __init__(self, certificates: CertificateStore | None = None) -> None:
        self.servers: dict[str, SimulatedServer] = {}
        self.certificates = certificates

    async def apply(self, specs: tuple[ServerSpec, ...]) -> ApplyReport:
        """Bring the running fleet to ``specs``; listen failures are reported, not raised."""
        report = ApplyReport()
        wanted = {spec.name: spec for spec in specs}
        for name in [name for name in self.servers if name not in wanted]:
            await self.servers.pop(name).stop()
            report.removed += 1
        for name, spec in wanted.items():
            server = self.servers.get(name)
            try:
                if server is None:
                    server = SimulatedServer(spec, self.certificates)
                    self.servers[name] = server
                    report.added += 1
                    await server.start()
                elif server.spec != spec:
                    report.changed += 1
                    await server.apply(spec)
            except OSError as exc:
                report.errors.append(f"{name}: cannot listen on {spec.host}:{spec.port}: {exc.strerror or exc}")
        return report

    async def stop(self) -> None:
        for server in self.servers.values():
            await server.stop()
        with contextlib.suppress(Exception):
            await asyncio.sleep(0)
