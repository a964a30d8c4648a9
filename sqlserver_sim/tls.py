"""TDS 7.x encryption: a self-signed certificate and the TLS handshake carried in PRELOGIN packets."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlserver_sim.fleet import ServerSpec


class CertificateStore:
    """Creates the simulator's certificate on first use (placeholder until TLS is implemented)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.certificate_path = directory / "sqlserver-sim.crt"
        self.key_path = directory / "sqlserver-sim.key"

    def upgrade_for(self, spec: ServerSpec) -> None:
        return None


__all__ = ["CertificateStore", "asyncio"]
