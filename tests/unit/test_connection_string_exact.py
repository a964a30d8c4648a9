"""Connection strings built for each driver, compared whole; every refusal with its exact reason
(scripts/mutation.sh runs these)."""

from __future__ import annotations

import re

import pytest

from supervisor.children.connection_string import (
    APP_NAME,
    Endpoint,
    UnsafeValue,
    brace,
    brace_freetds,
    build,
)
from supervisor.children.odbc_driver import FREETDS, MSODBC, OdbcDriver

MS = OdbcDriver("/opt/msodbcsql18/lib/libmsodbcsql-18.so", MSODBC)
TDS = OdbcDriver("FreeTDS", FREETDS)


def endpoint(**fields: object) -> Endpoint:
    values: dict[str, object] = {"host": "db1", "port": 1433, "username": "monitor", "password": "pw",
                                 "encrypt": "yes", "trust_server_certificate": False}  # fmt: skip
    return Endpoint(**{**values, **fields})  # type: ignore[arg-type]


def test_driver_18_string_whole() -> None:
    assert APP_NAME == "collector-supervisor"
    assert build(MS, endpoint()) == (
        "DRIVER={/opt/msodbcsql18/lib/libmsodbcsql-18.so};SERVER={db1,1433};Encrypt={yes};"
        "TrustServerCertificate={no};APP={collector-supervisor};DATABASE={master};UID={monitor};PWD={pw};"
    )
    assert build(MS, endpoint(trust_server_certificate=True, encrypt="strict", database="Sales")) == (
        "DRIVER={/opt/msodbcsql18/lib/libmsodbcsql-18.so};SERVER={db1,1433};Encrypt={strict};"
        "TrustServerCertificate={yes};APP={collector-supervisor};DATABASE={Sales};UID={monitor};PWD={pw};"
    )


def test_freetds_string_whole() -> None:
    assert build(TDS, endpoint(encrypt="optional", port=14330)) == (
        "DRIVER={FreeTDS};SERVER={db1};PORT={14330};TDS_Version={7.4};Encryption={request};"
        "APP={collector-supervisor};DATABASE={master};UID={monitor};PWD={pw};"
    )


MODES = [("yes", "yes", "require"), ("strict", "strict", "require"), ("optional", "optional", "request"),
         ("no", "no", "off")]  # fmt: skip


@pytest.mark.parametrize(("mode", "ms", "tds"), MODES)
def test_encrypt_modes(mode: str, ms: str, tds: str) -> None:
    assert f";Encrypt={{{ms}}};" in build(MS, endpoint(encrypt=mode))
    assert f";Encryption={{{tds}}};" in build(TDS, endpoint(encrypt=mode))


def test_logins_without_a_password_or_a_user() -> None:
    assert build(MS, endpoint(password=None)).endswith(";UID={monitor};PWD={};")
    assert build(TDS, endpoint(password="")).endswith(";UID={monitor};PWD={};")
    no_user = build(MS, endpoint(username=None, password="ignored"))
    assert "UID=" not in no_user and "PWD=" not in no_user and no_user.endswith("DATABASE={master};")


def test_an_access_token_takes_no_uid_or_pwd_and_needs_driver_18() -> None:
    token = endpoint(auth="entra-token", token_file="/run/token", username="ignored")
    assert token.uses_token and not endpoint().uses_token
    assert build(MS, token).endswith("APP={collector-supervisor};DATABASE={master};")
    message = ("auth entra-token needs Microsoft ODBC Driver 18 (FreeTDS cannot pass an access token, "
               "SQL_COPT_SS_ACCESS_TOKEN): set collector.odbc_driver to Driver 18")  # fmt: skip
    with pytest.raises(UnsafeValue, match=f"^{re.escape(message)}$"):
        build(TDS, token)


def test_braces() -> None:
    assert brace("a}b{c;d=e") == "{a}}b{c;d=e}"
    assert brace_freetds("a}b{c;d") == "{a}b{c;d}"
    with pytest.raises(UnsafeValue, match=r"^contains '\};', which FreeTDS cannot pass in a connection string$"):
        brace_freetds("pw};UID={sa")
    for quote in (brace, brace_freetds):
        with pytest.raises(UnsafeValue, match=r"^contains a NUL character$"):
            quote("a\x00b")
    with pytest.raises(UnsafeValue, match=r"^contains '\};'"):
        build(TDS, endpoint(password="x};y"))
    assert "PWD={x}};y}" in build(MS, endpoint(password="x};y"))


@pytest.mark.parametrize("port", [0, 65536, -1, True, "1433", 1433.0])
def test_a_port_that_is_not_one_is_refused(port: object) -> None:
    for driver in (MS, TDS):
        with pytest.raises(UnsafeValue, match=r"^the port is not a number between 1 and 65535$"):
            build(driver, endpoint(port=port))


def test_the_port_bounds_are_accepted() -> None:
    assert "SERVER={db1,1};" in build(MS, endpoint(port=1))
    assert "PORT={65535};" in build(TDS, endpoint(port=65535))


def test_an_unknown_encrypt_mode_is_refused_by_name() -> None:
    with pytest.raises(UnsafeValue, match=r"^unknown encrypt mode 'maybe'$"):
        build(MS, endpoint(encrypt="maybe"))
