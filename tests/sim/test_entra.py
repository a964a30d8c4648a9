"""The simulator's Entra ID token logins (``sqlserver_sim/entra.py``, ``auth.py``): what it accepts and why it
refuses, and a real ODBC Driver 18 login with SQL_COPT_SS_ACCESS_TOKEN."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pyodbc
import pytest

from sqlserver_sim import auth, entra
from sqlserver_sim.fleet import parse_fleet
from sqlserver_sim.login import Login7
from sqlserver_sim.values import FleetError
from supervisor.children.access_token import attrs_before
from tests.helpers.drivers import driver_setting
from tests.helpers.simulator import Simulator

KEY = "k"
SPEC = entra.EntraSpec(KEY, principals=("monitor@contoso.example",))


def fedauth(token: str, *, echo: bool = False, library: int = entra.LIBRARY_SECURITY_TOKEN) -> bytes:
    raw = token.encode("utf-16-le")
    return bytes(((library << 1) | int(echo),)) + struct.pack("<I", len(raw)) + raw


def login7(data: bytes | None, user: str = "", password: str = "", database: str = "sales") -> Login7:
    features = ((entra.FEATURE_FEDAUTH, data),) if data is not None else ()
    return Login7(0x74000004, 4096, "h", user, password, "app", "s", "lib", "", database,
                  tuple(f for f, _ in features), features)  # fmt: skip


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (entra.mint(KEY), None),
        (entra.mint(KEY, expires_in=-1), "Token is expired."),
        (entra.mint("other"), "The token's signature is not valid."),
        (entra.mint(KEY, audience="https://management.azure.com/"), "The token's audience is not this server."),
        (entra.mint(KEY, now=time.time() + 3600), "The token is not valid yet."),
        (entra.mint(KEY, principal="intruder@x"), "The token's principal is not a user of this database."),
        ("not-a-jwt", "The token is not a JWT."),
        ("a.b.c", "The token cannot be read."),
    ],
)
def test_token_checks(token: str, reason: str | None) -> None:
    assert entra.check(SPEC, token) == reason
    assert entra.check(None, entra.mint(KEY)) == "Federated authentication is not configured on this server."


def test_login_refusals() -> None:
    (spec,) = parse_fleet({"servers": [{"name": "az", "port": 1, "engine_edition": 5, "databases": ["sales"],
                                        "entra": {"key": KEY}}]}).servers  # fmt: skip
    good = entra.mint(KEY)
    assert auth.refusal(spec, login7(fedauth(good)), prelogin_fedauth=0) is None
    assert auth.refusal(spec, login7(fedauth(good)), prelogin_fedauth=None) is None
    assert auth.principal(login7(fedauth(good))) == "monitor@contoso.example"
    cases = {
        "echo 1 to a FEDAUTHREQUIRED of 0": login7(fedauth(good, echo=True)),
        "ADAL (the driver's own Entra login, not a token)": login7(fedauth(good, library=2)),
        "malformed": login7(b"\x02\xff\xff"),
        "expired": login7(fedauth(entra.mint(KEY, expires_in=-5))),
        "a database the token's user may not open": login7(fedauth(good), database="hr"),
    }
    for case, request in cases.items():
        refused = auth.refusal(spec, request, prelogin_fedauth=0)
        assert refused is not None and refused[1] == entra.TOKEN_PRINCIPAL, case
        assert "<token-identified principal>".encode("utf-16-le") in refused[0], case
    sql_login = login7(None, user=spec.user, password=spec.password)
    assert auth.refusal(spec, sql_login) is None  # SQL logins still work next to tokens


def test_fleet_entra_errors_name_the_field() -> None:
    for value, field in (({"audience": "x"}, "entra.key"), ({"key": "k", "principals": "x"}, "entra.principals"),
                         ({"key": "k", "colour": 1}, "entra.colour"), ("k", "entra")):  # fmt: skip
        with pytest.raises(FleetError, match=field.replace(".", r"\.")):
            parse_fleet({"servers": [{"name": "a", "port": 1, "entra": value}]})


def test_driver_18_logs_in_with_an_access_token(tmp_path: Path) -> None:
    sim = Simulator(tmp_path, [{"name": "az", "engine_edition": 5, "databases": ["master", "sales"],
                                "entra": {"key": KEY}}])  # fmt: skip
    sim.start()
    try:
        text = f"DRIVER={{{driver_setting('msodbc18')}}};SERVER=127.0.0.1,{sim.ports['az']};Encrypt=no;DATABASE=sales;"
        with pyodbc.connect(text, timeout=5, attrs_before=attrs_before(entra.mint(KEY))) as conn:
            assert tuple(conn.execute("SELECT DB_NAME(), SUSER_NAME()").fetchone()) == (
                "sales", "monitor@contoso.example"
            )
        with pytest.raises(pyodbc.Error, match=r"Token is expired\. \(18456\)"):
            pyodbc.connect(text, timeout=5, attrs_before=attrs_before(entra.mint(KEY, expires_in=-1)))
    finally:
        assert sim.stop() == 0
