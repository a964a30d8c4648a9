"""Reading ``collector.ini`` into a ``ConfigParser``: the file's own problems (missing, not a regular file, too big,
not UTF-8, not INI) as one-line ConfigErrors; ``config`` validates what it holds."""

from __future__ import annotations

import configparser
from pathlib import Path

from supervisor.errors import ConfigError

#: A collector.ini is a few KiB: a bigger file is a wrong path (a log, a database), not worth reading.
MAX_CONFIG_BYTES = 1024 * 1024


def read_config_file(config_path: Path) -> configparser.ConfigParser:
    if not config_path.is_file():
        if config_path.exists():
            raise ConfigError(f"configuration file {config_path} is not a regular file (a directory, FIFO or device)")
        raise ConfigError(f"configuration file not found: {config_path}")
    parser = configparser.ConfigParser(interpolation=None, default_section="__no_default__")
    try:
        if config_path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{config_path}: larger than {MAX_CONFIG_BYTES // 1024} KiB: not a collector.ini")
        with config_path.open(encoding="utf-8-sig") as handle:  # a BOM, as some editors write, is no error
            parser.read_file(handle)
    except (configparser.Error, UnicodeDecodeError, OSError) as exc:
        text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip()) or type(exc).__name__
        raise ConfigError(f"{config_path}: cannot parse: {text[:300]}") from None
    return parser
