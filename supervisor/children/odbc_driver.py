"""Which ODBC driver to use: ``odbc_driver = auto``, a registered driver name, or a library path."""

from __future__ import annotations

import importlib.util
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import pyodbc

from supervisor.errors import ConfigError

MSODBC = "msodbc"
FREETDS = "freetds"

DRIVER_18 = "ODBC Driver 18 for SQL Server"
DRIVER_17 = "ODBC Driver 17 for SQL Server"
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
            problem = _library_problem(Path(value))
            if problem is not None:
                raise ConfigError(f"invalid collector.odbc_driver = {value!r}: {problem}")
            return OdbcDriver(value, kind_of(value))
        if value not in pyodbc.drivers():
            raise ConfigError(
                f"invalid collector.odbc_driver = {value!r}: not registered with unixODBC "
                f"(registered: {', '.join(pyodbc.drivers()) or 'none'})"
            )
        return OdbcDriver(value, kind_of(value))
    # Microsoft's Driver 18 first (registered, then the library of mssql-python-odbc), then Driver 17, then
    # FreeTDS: Driver 18 says plainly what FreeTDS reports as a bare "Unable to connect".
    registered = pyodbc.drivers()
    if DRIVER_18 in registered:
        return OdbcDriver(DRIVER_18, MSODBC)
    library = bundled_library()
    if library:
        return OdbcDriver(library, MSODBC)
    if DRIVER_17 in registered:
        return OdbcDriver(DRIVER_17, MSODBC)
    for name in registered:
        if kind_of(name) == FREETDS:
            return OdbcDriver(name, FREETDS)
    raise ConfigError(
        "no ODBC driver for SQL Server is installed: install Microsoft ODBC Driver 18 (msodbcsql18), "
        "FreeTDS (tdsodbc) or the PyPI package mssql-python-odbc, or set collector.odbc_driver"
    )


#: Words of a connect failure that mean the server was not reached at all (no TLS was tried).
#: Words of a server not reached, or not answering in time (SQLSTATE HYT00/HYT01; FreeTDS says a bare "Timeout
#: expired"): encryption is not what to change.
_UNREACHED = ("unavailable or does not exist", "timeout expired", "connection refused", "timed out", "hyt00", "hyt01")
#: Words of a failure to trust the server's certificate.
_CERTIFICATE = ("certificate",)
ENCRYPT_HINT = "hint: the server may not support encryption: try --encrypt optional (or no)"
CERTIFICATE_HINT = "hint: the server's certificate is not trusted: install its CA or use --trust-server-certificate"


def connection_hint(message: str, encrypt: str) -> str | None:
    """What to try after a failed connection with encryption on (``encrypt`` yes or strict), or None.

    FreeTDS reports a server without TLS as a bare ``Unable to connect to data source``; Driver 18 says
    ``Encryption not supported`` (or, with strict, a reset connection). A server that was not reached at all
    gets no hint, nor does an unencrypted connection."""
    if encrypt not in ("yes", "strict"):
        return None
    text = message.lower()
    if any(word in text for word in _CERTIFICATE):
        return CERTIFICATE_HINT
    if any(word in text for word in _UNREACHED):
        return None
    return ENCRYPT_HINT


def with_hint(message: str, encrypt: str) -> str:
    hint = connection_hint(message, encrypt)
    return message if hint is None or hint in message else f"{message} ({hint})"


def _library_problem(path: Path) -> str | None:
    """Why ``path`` is no ODBC driver library (a program, a text file, another library), or None. Else every
    server reads as unreachable ("Can't open lib", "SQLAllocHandle failed") instead of the setting as wrong."""
    try:
        with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data[:4] != b"\x7fELF":
                return "not a shared library (no ELF header)"
            if data.find(b"SQLDriverConnect") < 0:
                return "not an ODBC driver (it exports no SQLDriverConnect)"
    except FileNotFoundError:
        return "no such driver library"
    except (OSError, ValueError) as exc:  # a directory, unreadable, empty (mmap refuses a 0-byte file)
        return f"not a readable driver library ({getattr(exc, 'strerror', None) or exc})"
    return None
