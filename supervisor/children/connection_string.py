"""ODBC connection strings in which no value can inject an attribute: every value braced."""

from __future__ import annotations

from dataclasses import dataclass

from supervisor.children.odbc_driver import FREETDS, OdbcDriver
from supervisor.rules import DEFAULT_DATABASE, ENTRA_TOKEN, SQL_AUTH

APP_NAME = "collector-supervisor"

_FREETDS_ENCRYPTION = {"yes": "require", "strict": "require", "optional": "request", "no": "off"}
_MSODBC_ENCRYPT = {"yes": "yes", "strict": "strict", "optional": "optional", "no": "no"}


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    username: str | None
    password: str | None
    encrypt: str  # yes / no / optional / strict
    trust_server_certificate: bool
    database: str = DEFAULT_DATABASE
    auth: str = SQL_AUTH  # sql / entra-token
    token_command: str | None = None  # entra-token: exactly one of these two
    token_file: str | None = None

    @property
    def uses_token(self) -> bool:
        return self.auth == ENTRA_TOKEN


class UnsafeValue(ValueError):
    """A value the driver's connection-string parser cannot carry without it leaking into other keys, or a
    setting this driver cannot honour at all."""


def brace(value: str) -> str:
    """``{value}`` with ``}`` doubled: the ODBC escape (Microsoft drivers, unixODBC)."""
    _check_common(value)
    return "{" + value.replace("}", "}}") + "}"


def brace_freetds(value: str) -> str:
    """FreeTDS (1.3) takes a braced value literally up to the first ``}`` followed by ``;`` or the end,
    without undoubling ``}}``: so no doubling, and a value containing ``};`` cannot be passed safely."""
    _check_common(value)
    if "};" in value:
        raise UnsafeValue("contains '};', which FreeTDS cannot pass in a connection string")
    return "{" + value + "}"


def _check_common(value: str) -> None:
    if "\x00" in value:
        raise UnsafeValue("contains a NUL character")


def build(driver: OdbcDriver, endpoint: Endpoint) -> str:
    """Raises UnsafeValue (naming no value) when a value cannot be passed safely to this driver."""
    if endpoint.encrypt not in _MSODBC_ENCRYPT:
        raise UnsafeValue(f"unknown encrypt mode {endpoint.encrypt!r}")
    if isinstance(endpoint.port, bool) or not isinstance(endpoint.port, int) or not 1 <= endpoint.port <= 65535:
        raise UnsafeValue("the port is not a number between 1 and 65535")
    if endpoint.uses_token and driver.kind == FREETDS:
        raise UnsafeValue(
            "auth entra-token needs Microsoft ODBC Driver 18 (FreeTDS cannot pass an access token, "
            "SQL_COPT_SS_ACCESS_TOKEN): set collector.odbc_driver to Driver 18"
        )
    parts: list[tuple[str, str]] = [("DRIVER", driver.name)]
    if driver.kind == FREETDS:
        parts += [
            ("SERVER", endpoint.host),
            ("PORT", str(endpoint.port)),
            ("TDS_Version", "7.4"),
            ("Encryption", _FREETDS_ENCRYPTION[endpoint.encrypt]),
        ]
    else:
        parts += [
            ("SERVER", f"{endpoint.host},{endpoint.port}"),
            ("Encrypt", _MSODBC_ENCRYPT[endpoint.encrypt]),
            ("TrustServerCertificate", "yes" if endpoint.trust_server_certificate else "no"),
        ]
    parts.append(("APP", APP_NAME))
    parts.append(("DATABASE", endpoint.database))
    # With an access token (passed before connecting, see access_token.py) the driver refuses UID/PWD.
    if endpoint.username is not None and not endpoint.uses_token:
        parts.append(("UID", endpoint.username))
        parts.append(("PWD", endpoint.password or ""))
    quote = brace_freetds if driver.kind == FREETDS else brace
    return ";".join(f"{key}={quote(value)}" for key, value in parts) + ";"
