"""What every command needs, built lazily: settings, the system DB, tenant DBs, the secret box."""

from __future__ import annotations

from functools import cached_property

from sqlalchemy import Engine

from supervisor import databases
from supervisor.config import Settings, load_settings
from supervisor.secret_box import SecretBox
from supervisor.storage.migrations import upgrade_system
from supervisor.tenants import Tenant, get_tenant


class CliContext:
    def __init__(self, config_path: str, debug: bool = False) -> None:
        self.config_path = config_path
        self.debug = debug

    @cached_property
    def settings(self) -> Settings:
        return load_settings(self.config_path)

    @cached_property
    def system_engine(self) -> Engine:
        """The system DB, its schema created or upgraded first (idempotent and cheap)."""
        engine = databases.system_engine(self.settings)
        upgrade_system(engine)
        return engine

    @cached_property
    def secret_box(self) -> SecretBox:
        return SecretBox.load(self.settings.secret_key_file)

    def tenant(self, slug: str) -> Tenant:
        return get_tenant(self.system_engine, slug)

    def tenant_engine(self, tenant: Tenant) -> Engine:
        return databases.tenant_engine(self.settings, tenant, pooled=False)
