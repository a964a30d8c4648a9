"""Typed settings loaded from ``collector.ini`` (README "Configuration").

Every key is declared once in ``_COLLECTOR_KEYS`` / ``_LOGGING_KEYS`` with its parser and default;
unknown sections or keys and invalid values raise ``ConfigError`` naming ``section.key`` and the value.
Settings are frozen dataclasses of plain values so they can be handed to child processes.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from supervisor import rules
from supervisor.config_file import read_config_file
from supervisor.errors import ConfigError
from supervisor.storage.engine import masked_url, url_problem

ENCRYPT_MODES = rules.ENCRYPT_MODES
COLLECTION_MODES = rules.COLLECTION_MODES
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("json", "text")


@dataclass(frozen=True)
class LoggingSettings:
    level: str = "INFO"
    format: str = "json"
    file: str = "-"


@dataclass(frozen=True)
class MetricsSettings:
    #: ``host:port`` the parent serves /metrics, /healthz and /readyz on; "" = off; port 0 = any free port.
    listen: str = "127.0.0.1:9478"
    per_server: bool = False

    def address(self) -> tuple[str, int] | None:
        if not self.listen:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


@dataclass(frozen=True)
class Settings:
    system_db: str = "sqlite:///var/system.db"
    tenant_db_url: str = "sqlite:///var/tenants/{slug}.db"
    poll_interval: float = 10.0
    concurrency: int = 10
    collection_interval: float = 30.0
    collection_timeout: float = 5.0
    login_timeout: float = 3.0
    shutdown_timeout: float = 20.0
    odbc_driver: str = "auto"
    encrypt: str = "yes"
    trust_server_certificate: bool = False
    secret_key_file: str = "var/secret.key"
    heartbeat_timeout: float = 60.0
    max_child_rss_mb: int = 512
    retention_days: int = 30
    collection_mode: str = "auto"
    keep_connections: bool = True
    server_refresh_interval: float = 5.0
    max_sample_gap: float = 3600.0
    lease_duration: float = 90.0
    spool_dir: str = "var/spool"
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    #: The file these settings came from (None: built-in defaults).
    config_path: str | None = None

    def tenant_url(self, slug: str, db_url: str | None) -> str:
        """The tenant's own URL (a relative SQLite path resolved against the config file's folder, as every
        process of this config resolves it), else ``tenant_db_url`` with ``{slug}`` filled in."""
        if db_url is not None:
            return db_url if self.config_path is None else resolve_sqlite_url(db_url, Path(self.config_path).parent)
        return self.tenant_db_url.replace("{slug}", slug)


Parser = Callable[[str], Any]


def _number(kind: type, minimum: float, maximum: float | None = None) -> Parser:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            if kind is int and text.strip().lstrip("+-").isdecimal():  # more digits than int() converts
                raise ValueError(_range(minimum, maximum)) from None
            raise ValueError(f"expected {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value):
            raise ValueError("expected a finite number")
        if value < minimum or (maximum is not None and value > maximum):
            raise ValueError(_range(minimum, maximum))
        return value

    return parse


def _range(minimum: float, maximum: float | None) -> str:
    upper = f" and at most {_bound(maximum)}" if maximum is not None else ""
    return f"must be at least {_bound(minimum)}{upper}"


def _bound(value: float) -> str:
    """Exactly as it is: 1048576, not 1.04858e+06."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _positive(kind: type, maximum: float | None = None, least: float | None = None) -> Parser:
    """Greater than 0; with ``least``, at least that (a time of a few nanoseconds would spin a loop)."""
    parse_min = _number(kind, least or 0, maximum)

    def parse(text: str) -> Any:
        value = parse_min(text)
        if value <= 0:
            raise ValueError("must be greater than 0")
        return value

    return parse


#: The shortest period or timeout a time key takes, in seconds.
SHORTEST = 0.1


def _choice(options: tuple[str, ...], *, upper: bool = False) -> Parser:
    def parse(text: str) -> str:
        value = text.strip().upper() if upper else text.strip().lower()
        if value not in options:
            raise ValueError(f"expected one of {', '.join(o.lower() for o in options)}")
        return value

    return parse


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("yes", "true", "on", "1"):
        return True
    if value in ("no", "false", "off", "0"):
        return False
    raise ValueError("expected yes or no")


def _text(text: str) -> str:
    value = text.strip()
    if not value:
        raise ValueError("must not be empty")
    if not value.isprintable():
        raise ValueError("must not contain control characters")
    return value


def _path(text: str) -> str:
    """A file or folder; ``~`` and ``~user`` are expanded, so the user must exist."""
    value = _text(text)
    try:
        Path(value).expanduser()
    except RuntimeError:
        raise ValueError(f"cannot expand {value.split('/', 1)[0]!r}: no such user or no home directory") from None
    return value


def _db_url(text: str) -> str:
    value = _text(text)
    check_database_url(value)
    return value


def _tenant_template(text: str) -> str:
    value = _text(text)
    if "{slug}" not in value:
        raise ValueError("must contain {slug}")
    check_database_url(value.replace("{slug}", "slug"))
    return value


def _masked(url: str) -> str:
    """``url`` with its password masked; as written when it has none."""
    masked = masked_url(url)
    return url if "***" not in masked else masked


def check_database_url(url: str) -> None:
    """Raises ValueError unless ``url`` names a database every process can open with an installed driver."""
    problem = url_problem(url, persistent=True)
    if problem is not None:
        raise ValueError(problem)


_COLLECTOR_KEYS: dict[str, Parser] = {
    "system_db": _db_url,
    "tenant_db_url": _tenant_template,
    "poll_interval": _positive(float, 3600, SHORTEST),
    "concurrency": _number(int, 1, 1000),
    "collection_interval": _number(float, rules.INTERVAL_MIN, rules.INTERVAL_MAX),
    "collection_timeout": _positive(float, 300, SHORTEST),
    "login_timeout": _positive(float, 300, SHORTEST),
    "shutdown_timeout": _positive(float, 3600, SHORTEST),
    "odbc_driver": _text,
    "encrypt": _choice(ENCRYPT_MODES),
    "trust_server_certificate": _boolean,
    "secret_key_file": _path,
    "heartbeat_timeout": _positive(float, 86400, SHORTEST),
    "max_child_rss_mb": _number(int, 16, 1024 * 1024),
    "retention_days": _number(int, 0, 36500),
    "collection_mode": _choice(COLLECTION_MODES),
    "keep_connections": _boolean,
    "server_refresh_interval": _positive(float, 3600, SHORTEST),
    "max_sample_gap": _positive(float, 30 * 86400, 1),
    "lease_duration": _positive(float, 3600, 1),
    "spool_dir": _path,
}

_LOGGING_KEYS: dict[str, Parser] = {
    "level": _choice(LOG_LEVELS, upper=True),
    "format": _choice(LOG_FORMATS),
    "file": _path,
}

def _listen(text: str) -> str:
    """``host:port`` (``[v6]:port`` for IPv6), or empty for off."""
    value = text.strip()
    if not value:
        return ""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("expected host:port (port 0-65535), or nothing to serve no metrics")
    if not host.strip("[]").isprintable() or any(c.isspace() for c in host):
        raise ValueError("the host must not contain spaces or control characters")
    return value


_METRICS_KEYS: dict[str, Parser] = {
    "listen": _listen,
    "per_server": _boolean,
}

#: Values shown with their password masked in an error message.
_URL_KEYS = frozenset({"system_db", "tenant_db_url"})

_SECTIONS = {"collector": _COLLECTOR_KEYS, "logging": _LOGGING_KEYS, "metrics": _METRICS_KEYS}


def load_settings(path: str | os.PathLike[str]) -> Settings:
    """Read, validate and resolve ``path``. Raises ConfigError with a one-line message."""
    config_path = Path(path)
    parser = read_config_file(config_path)
    values: dict[str, dict[str, Any]] = {"collector": {}, "logging": {}, "metrics": {}}
    for section in parser.sections():
        keys = _SECTIONS.get(section)
        if keys is None:
            raise ConfigError(f"{config_path}: unknown section [{section}]")
        for key, raw in parser.items(section):
            parse = keys.get(key)
            if parse is None:
                raise ConfigError(f"{config_path}: unknown key {section}.{key}")
            try:
                values[section][key] = parse(raw)
            except ValueError as exc:
                shown = _masked(raw) if key in _URL_KEYS else raw
                raise ConfigError(f"{config_path}: invalid {section}.{key} = {rules.shown(shown)}: {exc}") from None

    settings = Settings(
        **values["collector"],
        logging=LoggingSettings(**values["logging"]),
        metrics=MetricsSettings(**values["metrics"]),
        config_path=str(config_path.resolve()),
    )
    _check_consistency(settings, config_path)
    return resolve_paths(settings, config_path.resolve().parent)


def _check_consistency(settings: Settings, config_path: Path) -> None:
    if settings.heartbeat_timeout <= settings.collection_timeout:
        raise ConfigError(
            f"{config_path}: invalid collector.heartbeat_timeout = {settings.heartbeat_timeout:g}: "
            f"must be greater than collector.collection_timeout ({settings.collection_timeout:g})"
        )


def resolve_paths(settings: Settings, base: Path) -> Settings:
    """Make relative file paths and SQLite URLs absolute against ``base`` (the config's folder)."""
    log_file = settings.logging.file
    if log_file != "-":
        log_file = str(_absolute(log_file, base))
    return replace(
        settings,
        system_db=resolve_sqlite_url(settings.system_db, base),
        tenant_db_url=resolve_sqlite_url(settings.tenant_db_url, base),
        secret_key_file=str(_absolute(settings.secret_key_file, base)),
        spool_dir=str(_absolute(settings.spool_dir, base)),
        logging=replace(settings.logging, file=log_file),
    )


_SQLITE_PREFIX = re.compile(r"^sqlite(\+\w+)?:///")


def resolve_sqlite_url(url: str, base: Path) -> str:
    """``sqlite:///rel/x.db`` (or ``sqlite+pysqlite:///…``) → ``sqlite:////base/rel/x.db``; other URLs unchanged."""
    prefix = _SQLITE_PREFIX.match(url)
    if prefix is None:
        return url
    path = url[prefix.end() :]
    if not path or path.startswith("/") or path.startswith(":memory:") or path.startswith("file:"):
        return url
    return prefix.group() + str(base / path)


def _absolute(path: str, base: Path) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else base / candidate
