"""What a value must be to be stored or used: one set of rules for command-line arguments, config values and
the rows a child reads from a tenant DB, the same on SQLite and PostgreSQL.

PostgreSQL enforces column types and lengths; SQLite enforces neither, so a row written by another program
(the product's web app) may hold text in an integer column, a float, a blob, or a string longer than its
column. Every check therefore takes any value, checks its Python type as well as its range, and returns the
clean value or raises ``ValueError`` with a reason that names neither the field (the caller does: ``--host``
or ``servers.host``) nor, for a password, the value.
"""

from __future__ import annotations

import ipaddress
import math
import os
import shlex
from typing import Any

from sqlalchemy import Column

from supervisor.storage.system_schema import tenants
from supervisor.storage.tenant_schema import servers

ENCRYPT_MODES = ("yes", "no", "optional", "strict")
COLLECTION_MODES = ("auto", "procedure", "adhoc")
SQL_AUTH = "sql"
ENTRA_TOKEN = "entra-token"
AUTH_MODES = (SQL_AUTH, ENTRA_TOKEN)
DEFAULT_DATABASE = "master"

def _length(column: Column[Any]) -> int:
    length = getattr(column.type, "length", None)
    assert isinstance(length, int), column
    return length


PORT_MIN, PORT_MAX = 1, 65535
#: Collection intervals in seconds: ``collector.collection_interval``, ``--interval`` and
#: ``collection_configs.interval_seconds``.
INTERVAL_MIN, INTERVAL_MAX = 1, 86400
#: String lengths are the columns' (PostgreSQL enforces them; SQLite would store anything).
SERVER_NAME_MAX = _length(servers.c.name)
HOST_MAX = _length(servers.c.host)
USERNAME_MAX = _length(servers.c.username)
DATABASE_MAX = _length(servers.c.database)
#: ``token_command`` / ``token_file`` are text columns; a longer value is surely not meant.
TOKEN_SOURCE_MAX = 4096
TENANT_NAME_MAX = _length(tenants.c.name)
#: SQL Server's limit for the password of a SQL login.
PASSWORD_MAX = 128
#: A PostgreSQL ``integer`` column's largest value.
INT32_MAX = 2**31 - 1

_SHOWN_MAX = 60


def shown(value: object) -> str:
    """A value for an error message: ``repr``, cut short (a 100,000-character name stays one short line)."""
    if isinstance(value, str) and len(value) > _SHOWN_MAX:
        return repr(value[:_SHOWN_MAX]) + f"… ({len(value):,} characters)"
    text = repr(value)
    return text if len(text) <= _SHOWN_MAX + 2 else text[:_SHOWN_MAX] + "…"


def printable(text: str) -> str:
    """``text`` with each character a terminal would act on (NUL, ESC, BEL, a newline, C1, a bidi override)
    written as its escape: what another program or a server wrote cannot move a cursor, set a title or colour
    an operator's terminal, and a NUL (which PostgreSQL text refuses) is stored as ``\\x00``."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be text, not {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not valid UTF-8 text") from None
    if "\ufffd" in value:  # how a SQLite value that is not UTF-8 reads (storage.engine)
        raise ValueError("is not valid UTF-8 text (it holds U+FFFD, where bytes that are not UTF-8 were)")
    return value


def _printable(value: object, maximum: int) -> str:
    text = _string(value)
    if not 1 <= len(text) <= maximum or not text.isprintable():
        raise ValueError(f"must be 1-{maximum} printable characters")
    return text


def server_name(value: object) -> str:
    return _printable(value, SERVER_NAME_MAX)


def tenant_name(value: object) -> str:
    return _printable(value, TENANT_NAME_MAX)


def host(value: object) -> str:
    """A host name or address, optionally with ``\\INSTANCE``. Refused: a ``,`` (Driver 18 would take what
    follows as the port, over the port setting) and a ``:`` outside an IPv6 address (a protocol prefix:
    ``admin:`` would take the server's one dedicated admin connection, ``np:`` a named pipe)."""
    text = _string(value)
    if not 1 <= len(text) <= HOST_MAX or not text.isprintable() or any(ch.isspace() for ch in text):
        raise ValueError(f"must be a host name or IP address of 1-{HOST_MAX} characters without spaces")
    if "," in text:
        raise ValueError("must not contain ',' (the port is a setting of its own)")
    address = text.partition("\\")[0]
    if ":" in address and not _is_ipv6(address.removeprefix("[").removesuffix("]")):
        raise ValueError("must be a host name or IP address, without a protocol prefix such as tcp: or admin:")
    return text


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def username(value: object) -> str | None:
    """None: no SQL login (the connection string carries no UID/PWD)."""
    if value is None:
        return None
    return _printable(value, USERNAME_MAX)


def password(value: object) -> str:
    """Any text the driver can carry: no NUL (it would end the value in the driver), at most 128 characters."""
    text = _string(value)
    if "\x00" in text:
        raise ValueError("contains a NUL character")
    if len(text) > PASSWORD_MAX:
        raise ValueError(f"is longer than {PASSWORD_MAX} characters (SQL Server's limit)")
    return text


def whole_number(value: object, minimum: int, maximum: int) -> int:
    """An integer (not a bool, a float or text: SQLite returns what was stored) in ``minimum..maximum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)  # 30.0 from a REAL column is 30
        else:
            raise ValueError(f"must be a whole number between {minimum} and {maximum}")
    if not minimum <= value <= maximum:
        raise ValueError(f"must be between {minimum} and {maximum}")
    return value


def port(value: object) -> int:
    return whole_number(value, PORT_MIN, PORT_MAX)


def interval(value: object) -> int | None:
    """None: ``collector.collection_interval``."""
    if value is None:
        return None
    return whole_number(value, INTERVAL_MIN, INTERVAL_MAX)


def choice(value: object, options: tuple[str, ...]) -> str | None:
    """None: the configured default. Exactly one of ``options`` (lower case) otherwise."""
    if value is None:
        return None
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"expected one of {', '.join(options)} (or NULL for the default)")
    return value


def encrypt(value: object) -> str | None:
    return choice(value, ENCRYPT_MODES)


def collection_mode(value: object) -> str | None:
    return choice(value, COLLECTION_MODES)


def flag(value: object, *, nullable: bool) -> bool | None:
    """A boolean column: PostgreSQL gives bool, SQLite 0 or 1 (anything else was written by someone else)."""
    if value is None and nullable:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError("expected true or false (1 or 0)" + (", or NULL for the default" if nullable else ""))


def database(value: object) -> str | None:
    """None: ``master``. A database name (sysname: 1-128 printable characters)."""
    if value is None:
        return None
    return _printable(value, DATABASE_MAX)


def auth(value: object) -> str | None:
    """None: ``sql`` (the server's username and password, if any)."""
    return choice(value, AUTH_MODES)


def token_command(value: object) -> str | None:
    """A command line the child runs to get an access token: split like a shell's words, never run by a shell."""
    if value is None:
        return None
    text = _printable(value, TOKEN_SOURCE_MAX)
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"cannot be split into words: {exc}") from None
    if not words:
        raise ValueError("names no program")
    return text


def token_file(value: object) -> str | None:
    """The absolute path of a file holding an access token (re-read whenever it changes)."""
    if value is None:
        return None
    text = _printable(value, TOKEN_SOURCE_MAX)
    if not os.path.isabs(text):
        raise ValueError("must be an absolute path")
    return text


def authentication(
    mode: str | None, username: str | None, token_command: str | None, token_file: str | None
) -> str:
    """The combination of a server's authentication values; returns the effective mode (``sql`` for None).

    ``entra-token`` needs exactly one token source and no username (the driver refuses a user with a token);
    ``sql`` takes no token source."""
    effective = mode or SQL_AUTH
    sources = [name for name, value in (("token_command", token_command), ("token_file", token_file)) if value]
    if effective == ENTRA_TOKEN:
        if len(sources) != 1:
            raise ValueError("entra-token needs exactly one token source: a token command or a token file")
        if username is not None:
            raise ValueError("entra-token takes no username (the token names the principal)")
    elif sources:
        raise ValueError(f"a token source ({sources[0]}) is only used with auth entra-token")
    return effective
