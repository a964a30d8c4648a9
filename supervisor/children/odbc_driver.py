"""Which ODBC driver to use: ``odbc_driver = auto``, a registered driver name, or a library path."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import pyodbc

from supervisor.errors import ConfigError

MSODBC = "msodbc"
FREETDS = "freetds"

_PREFERRED_NAMES = ("ODBC Driver 18 for SQL Server", "ODBC Driver 17 for SQL Server")
_BUNDLED_LIBRARY = "libs/linux/debian_ubuntu/x86_64/lib"


@dataclass(frozen=True)
class OdbcDriver:
    """``name`` goes into ``DRIVER={...}``: a registered name or a library path."""

    name: str
    kind: str  # MSODBC or FREETDS: decides connection-string dialect

    def describe(self) -> str:
        return f"{self.name} ({'FreeTDS' if self.kind == FREETDS else 'Microsoft ODBC'})"


def kind_of(name: str) -> str:
    base = os.path.basename(name).lower()
    return FREETDS if "freetds" in base or "tdsodbc" in base else MSODBC


def bundled_library() -> str | None:
    """The Driver 18 library shipped in the PyPI package ``mssql-python-odbc``, if installed."""
    spec = importlib.util.find_spec("mssql_python_odbc")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = Path(location) / _BUNDLED_LIBRARY
        if folder.is_dir():
            libraries = sorted(folder.glob("libmsodbcsql-*.so*"))
            if libraries:
                return str(libraries[-1])
    return None


def resolve_driver(setting: str) -> OdbcDriver:
    """Raises ConfigError naming what was looked for when no usable driver is found."""
    value = setting.strip()
    if value.lower() != "auto":
        if "/" in value:
            if not Path(value).is_file():
                raise ConfigError(f"invalid collector.odbc_driver = {value!r}: no such driver library")
            return OdbcDriver(value, kind_of(value))
        if value not in pyodbc.drivers():
            raise ConfigError(
                f"invalid collector.odbc_driver = {value!r}: not registered with unixODBC "
                f"(registered: {', '.join(pyodbc.drivers()) or 'none'})"
            )
        return OdbcDriver(value, kind_of(value))
    registered = pyodbc.drivers()
    for name in _PREFERRED_NAMES:
        if name in registered:
            return OdbcDriver(name, MSODBC)
    for name in registered:
        if kind_of(name) == FREETDS:
            return OdbcDriver(name, FREETDS)
    library = bundled_library()
    if library:
        return OdbcDriver(library, MSODBC)
    raise ConfigError(
        "no ODBC driver for SQL Server is installed: install Microsoft ODBC Driver 18 (msodbcsql18), "
        "FreeTDS (tdsodbc) or the PyPI package mssql-python-odbc, or set collector.odbc_driver"
    )
