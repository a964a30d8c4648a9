"""What every command needs, built lazily: settings, the system DB, tenant DBs, the secret box."""

from __future__ import annotations

import contextlib
from functools import cached_property

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from supervisor import databases
from supervisor.config import Settings, load_settings
from supervisor.errors import CollectorError, ConfigError
from supervisor.secret_box import KEY_DIFFERS, SECRET_KEY_ENV, DeferredSecretBox, KeyFileMissing, SecretBox
from supervisor.servers import has_encrypted_passwords, some_encrypted_password
from supervisor.storage.migrations import upgrade_system, upgrade_tenant
from supervisor.tenants import Tenant, get_tenant, list_tenants

#: Longest wait of a command for a lock or a connect (a table locked by another program, a DB host that refuses):
#: then it fails with the error instead of hanging. Statements themselves are not bounded.
COMMAND_WAIT = 10.0


class CliContext:
    def __init__(self, config_path: str, debug: bool = False) -> None:
        self.config_path = config_path
        self.debug = debug
        #: Only ``init-db`` adds the collector's tables to a DB that holds another program's.
        self.system_db_beside_other_tables = False
        self._checked_tenants: set[int] = set()

    @cached_property
    def settings(self) -> Settings:
        return load_settings(self.config_path)

    @cached_property
    def system_engine(self) -> Engine:
        """The system DB, its schema created or upgraded first (idempotent and cheap)."""
        engine = databases.system_engine(self.settings, call_timeout=COMMAND_WAIT, statements_unbounded=True)
        may_change = self.system_db_beside_other_tables  # init-db
        upgrade_system(engine, beside_other_tables=may_change, new_version=may_change)
        return engine

    @cached_property
    def secret_box(self) -> SecretBox:
        """The key to encrypt passwords with. Created on first use only: a missing key file while some tenant
        has encrypted passwords is an error (a new key would not decrypt them, and passwords stored from now
        on would be under another key than theirs)."""
        key_file = self.settings.secret_key_file
        try:
            return SecretBox.load(key_file, create=False)
        except KeyFileMissing:
            holders = self._tenants_with_passwords()
            if holders:
                with contextlib.suppress(KeyFileMissing):  # another command created it since, and stored one
                    return SecretBox.load(key_file, create=False)
                raise KeyFileMissing(
                    f"the secret key file {key_file} is missing, but tenant {', '.join(holders)} has encrypted "
                    f"passwords: restore the key file (or set {SECRET_KEY_ENV}); a new key would not decrypt them"
                ) from None
            return SecretBox.load(key_file, create=True)

    @cached_property
    def decryptor(self) -> DeferredSecretBox:
        """For reading stored passwords: never creates a key; a server whose password it cannot decrypt is
        reported with the reason."""
        return DeferredSecretBox(self.settings.secret_key_file)

    def check_key_matches(self, tenant: Tenant, engine: Engine) -> None:
        """Refuse to encrypt with a key that cannot decrypt the tenant's stored passwords."""
        token = some_encrypted_password(engine)
        if token is None:
            return
        try:
            self.secret_box.decrypt(token)
        except ConfigError as exc:
            if str(exc) == KEY_DIFFERS:
                raise ConfigError(
                    f"{KEY_DIFFERS} (tenant {tenant.slug!r}): restore the original key file "
                    f"{self.settings.secret_key_file} (or {SECRET_KEY_ENV}) before adding passwords"
                ) from None

    def tenant(self, slug: str) -> Tenant:
        return get_tenant(self.system_engine, slug)

    def tenant_engine(self, tenant: Tenant, *, create: bool = False) -> Engine:
        """The tenant's DB; a SQLite file that does not exist is refused, never created empty by a command that
        reads or changes rows (only ``init-db`` and ``tenant add`` create one: ``create``)."""
        if not create and (missing := databases.missing_sqlite_file(self.settings, tenant)) is not None:
            raise CollectorError(f"tenant {tenant.slug}: its DB file {missing} does not exist (run init-db)")
        engine = databases.tenant_engine(
            self.settings, tenant, pooled=False, call_timeout=COMMAND_WAIT, statements_unbounded=True
        )
        if not create and tenant.id not in self._checked_tenants:
            upgrade_tenant(engine, create=False, new_version=False)  # its additions made; an older version refused
            self._checked_tenants.add(tenant.id)
        return engine

    def _tenants_with_passwords(self) -> list[str]:
        """Tenants whose DB holds an encrypted password (best effort: a DB that cannot be read is skipped, and
        a SQLite file that does not exist is not created: ``tenant_engine`` refuses it)."""
        holders = []
        for tenant in list_tenants(self.system_engine):
            databases.tenant_url(self.settings, tenant)  # a row that cannot be used is that ConfigError, not skipped
            engine = None
            try:
                engine = self.tenant_engine(tenant)
                if has_encrypted_passwords(engine):
                    holders.append(tenant.slug)
            except (SQLAlchemyError, CollectorError):
                continue
            finally:
                if engine is not None:
                    engine.dispose()
        return holders
