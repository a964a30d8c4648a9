"""``supervisor.rules``, each rule on its own: what it returns, where its bounds are, the exact reason it gives.

Fast and exhaustive on purpose (scripts/mutation.sh runs these): a changed bound, a dropped type check or a
reworded reason fails here, not only in the slower CLI and row tests."""

from __future__ import annotations

import re

import pytest

from supervisor import rules
from supervisor.storage.system_schema import tenants
from supervisor.storage.tenant_schema import servers


def refused(function, value, message: str, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError) as raised:
        function(value, *args, **kwargs)
    assert str(raised.value) == message


def test_the_lengths_are_the_columns() -> None:
    assert rules.SERVER_NAME_MAX == servers.c.name.type.length == 128
    assert rules.HOST_MAX == servers.c.host.type.length == 255
    assert rules.USERNAME_MAX == servers.c.username.type.length == 128
    assert rules.DATABASE_MAX == servers.c.database.type.length == 128
    assert rules.TENANT_NAME_MAX == tenants.c.name.type.length == 200
    assert (rules.PASSWORD_MAX, rules.TOKEN_SOURCE_MAX, rules.INT32_MAX) == (128, 4096, 2147483647)
    assert (rules.PORT_MIN, rules.PORT_MAX, rules.INTERVAL_MIN, rules.INTERVAL_MAX) == (1, 65535, 1, 86400)
    assert rules.ENCRYPT_MODES == ("yes", "no", "optional", "strict")
    assert rules.COLLECTION_MODES == ("auto", "procedure", "adhoc")
    assert rules.AUTH_MODES == ("sql", "entra-token") and rules.DEFAULT_DATABASE == "master"
    with pytest.raises(AssertionError):
        rules._length(servers.c.port)  # an Integer column has no length


def test_shown_cuts_long_values_short() -> None:
    assert rules.shown("abc") == "'abc'"
    assert rules.shown("x" * 60) == repr("x" * 60)  # 60 characters: whole
    assert rules.shown("x" * 61) == repr("x" * 60) + "… (61 characters)"
    assert rules.shown("y" * 100_000) == repr("y" * 60) + "… (100,000 characters)"
    assert rules.shown(b"z" * 59) == repr(b"z" * 59)  # 62 characters of repr: whole
    assert rules.shown(b"z" * 60) == repr(b"z" * 60)[:60] + "…"
    assert rules.shown(None) == "None" and rules.shown(7) == "7"


def test_text_must_be_a_string_of_valid_utf8() -> None:
    refused(rules.server_name, 5, "must be text, not int")
    refused(rules.server_name, b"sql", "must be text, not bytes")
    refused(rules.server_name, "sql\udc80", "is not valid UTF-8 text")  # a lone surrogate (surrogateescape)


@pytest.mark.parametrize(
    ("rule", "maximum"),
    [(rules.server_name, 128), (rules.tenant_name, 200), (rules.username, 128), (rules.database, 128)],
)
def test_printable_names_and_their_length(rule, maximum: int) -> None:  # type: ignore[no-untyped-def]
    assert rule("a") == "a" and rule("n" * maximum) == "n" * maximum
    assert rule("Sales DB (EU) ü") == "Sales DB (EU) ü"  # spaces and non-ASCII are printable
    message = f"must be 1-{maximum} printable characters"
    for bad in ("", "n" * (maximum + 1), "tab\there", "new\nline", "nul\x00"):
        refused(rule, bad, message)


def test_optional_names_take_none() -> None:
    assert rules.username(None) is None and rules.database(None) is None


def test_host_names_and_addresses() -> None:
    for good in ("db1", "10.0.0.7", "::1", "[fe80::1]", "sql.example.com", "h" * 255, "host\\INSTANCE", "::1\\I"):
        assert rules.host(good) == good
    message = "must be a host name or IP address of 1-255 characters without spaces"
    for bad in ("", "h" * 256, "two words", "tab\t", "nbsp\u00a0x", "line\n"):
        refused(rules.host, bad, message)
    refused(rules.host, None, "must be text, not NoneType")


def test_a_host_cannot_carry_a_port_or_a_protocol() -> None:
    """Driver 18 reads ``SERVER=host,port``: a comma in the host would override the port column; ``admin:`` would
    take the server's single dedicated admin connection."""
    for bad in ("db1,1500", "10.0.0.7,1433", ","):
        refused(rules.host, bad, "must not contain ',' (the port is a setting of its own)")
    for bad in ("tcp:db1", "admin:db1", "np:\\\\db1\\pipe\\sql\\query", "lpc:db1", "db1:1433", "[db1]:1433"):
        refused(rules.host, bad, "must be a host name or IP address, without a protocol prefix such as tcp: or admin:")


def test_passwords_any_text_without_nul_up_to_128() -> None:
    assert rules.password("") == ""
    assert rules.password("p" * 128) == "p" * 128
    assert rules.password("sp ace};{=\t") == "sp ace};{=\t"
    refused(rules.password, "a\x00b", "contains a NUL character")
    refused(rules.password, "p" * 129, "is longer than 128 characters (SQL Server's limit)")
    refused(rules.password, 123, "must be text, not int")


def test_whole_numbers() -> None:
    assert rules.whole_number(1, 1, 3) == 1 and rules.whole_number(3, 1, 3) == 3
    assert rules.whole_number(30.0, 1, 60) == 30 and type(rules.whole_number(30.0, 1, 60)) is int
    refused(rules.whole_number, 0, "must be between 1 and 3", 1, 3)
    refused(rules.whole_number, 4, "must be between 1 and 3", 1, 3)
    refused(rules.whole_number, 4.0, "must be between 1 and 3", 1, 3)
    for bad in (True, False, 2.5, "2", None, float("nan"), float("inf")):
        refused(rules.whole_number, bad, "must be a whole number between 1 and 3", 1, 3)


def test_ports_and_intervals() -> None:
    assert rules.port(1) == 1 and rules.port(65535) == 65535 and rules.port(1433.0) == 1433
    refused(rules.port, 0, "must be between 1 and 65535")
    refused(rules.port, 65536, "must be between 1 and 65535")
    refused(rules.port, "1433", "must be a whole number between 1 and 65535")
    assert rules.interval(None) is None and rules.interval(1) == 1 and rules.interval(86400) == 86400
    refused(rules.interval, 0, "must be between 1 and 86400")
    refused(rules.interval, 86401, "must be between 1 and 86400")


def test_choices_are_exact_lower_case_or_none() -> None:
    for mode in rules.ENCRYPT_MODES:
        assert rules.encrypt(mode) == mode
    for mode in rules.COLLECTION_MODES:
        assert rules.collection_mode(mode) == mode
    for mode in rules.AUTH_MODES:
        assert rules.auth(mode) == mode
    assert rules.encrypt(None) is None and rules.collection_mode(None) is None and rules.auth(None) is None
    refused(rules.encrypt, "YES", "expected one of yes, no, optional, strict (or NULL for the default)")
    refused(rules.encrypt, " yes", "expected one of yes, no, optional, strict (or NULL for the default)")
    refused(rules.collection_mode, 1, "expected one of auto, procedure, adhoc (or NULL for the default)")
    refused(rules.auth, "kerberos", "expected one of sql, entra-token (or NULL for the default)")
    assert rules.choice("b", ("a", "b")) == "b"


def test_flags() -> None:
    assert rules.flag(True, nullable=False) is True and rules.flag(False, nullable=True) is False
    assert rules.flag(1, nullable=False) is True and rules.flag(0, nullable=False) is False
    assert rules.flag(None, nullable=True) is None
    refused(rules.flag, None, "expected true or false (1 or 0)", nullable=False)
    refused(rules.flag, 2, "expected true or false (1 or 0), or NULL for the default", nullable=True)
    refused(rules.flag, "yes", "expected true or false (1 or 0)", nullable=False)
    refused(rules.flag, 1.0, "expected true or false (1 or 0)", nullable=False)


def test_token_sources() -> None:
    assert rules.token_command(None) is None and rules.token_file(None) is None
    assert rules.token_command("az account get-access-token --output tsv") == "az account get-access-token --output tsv"
    assert rules.token_command("'/opt/my tool' --x") == "'/opt/my tool' --x"
    assert rules.token_command("c" * 4096) == "c" * 4096
    refused(rules.token_command, "c" * 4097, "must be 1-4096 printable characters")
    refused(rules.token_command, "'unclosed", "cannot be split into words: No closing quotation")
    refused(rules.token_command, "   ", "names no program")
    assert rules.token_file("/run/token") == "/run/token"
    refused(rules.token_file, "run/token", "must be an absolute path")
    refused(rules.token_file, "", "must be 1-4096 printable characters")


@pytest.mark.parametrize(
    ("mode", "user", "command", "file", "effective"),
    [
        (None, "monitor", None, None, "sql"),
        ("sql", None, None, None, "sql"),
        ("entra-token", None, "get-token", None, "entra-token"),
        ("entra-token", None, None, "/run/token", "entra-token"),
    ],
)
def test_authentication_combinations_accepted(mode, user, command, file, effective) -> None:  # type: ignore[no-untyped-def]
    assert rules.authentication(mode, user, command, file) == effective


ONE_SOURCE = "entra-token needs exactly one token source: a token command or a token file"


@pytest.mark.parametrize(
    ("mode", "user", "command", "file", "message"),
    [
        ("entra-token", None, None, None, ONE_SOURCE),
        ("entra-token", None, "cmd", "/f", ONE_SOURCE),
        ("entra-token", "monitor", "cmd", None, "entra-token takes no username (the token names the principal)"),
        (None, None, "cmd", None, "a token source (token_command) is only used with auth entra-token"),
        ("sql", None, None, "/f", "a token source (token_file) is only used with auth entra-token"),
        ("sql", None, "cmd", "/f", "a token source (token_command) is only used with auth entra-token"),
    ],
)
def test_authentication_combinations_refused(mode, user, command, file, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        rules.authentication(mode, user, command, file)


def test_length_reads_the_column_type() -> None:
    assert rules._length(servers.c.name) == 128 and rules._length(tenants.c.name) == 200


def test_a_one_character_host_is_a_host() -> None:
    assert rules.host("h") == "h"
