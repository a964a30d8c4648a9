"""Entra ID (Azure AD) access tokens, as a simulated Azure SQL Database or Managed Instance checks them.

A fleet entry's ``"entra": {"key": "…", "audience": "https://database.windows.net/", "principals": [...]}``
makes the server accept LOGIN7's FEDAUTH feature extension with the security-token library (what ODBC Driver 18
sends for ``SQL_COPT_SS_ACCESS_TOKEN``): the token must be a JWT signed with HS256 and ``key`` (real Entra ID
signs with RS256 and keys of its own; the simulator only needs a signature it can check), whose ``aud`` is
``audience``, whose ``exp`` has not passed and ``nbf`` has, and, when ``principals`` is given, whose ``upn``,
``unique_name``, ``appid``, ``oid`` or ``sub`` is one of them (a user created FROM EXTERNAL PROVIDER). Anything
else is a failed login (error 18456 for ``'<token-identified principal>'``, with the reason).

``mint`` makes such a token (tests, demos).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

from sqlserver_sim.values import FleetError, as_strings, reject_unknown

AZURE_SQL_AUDIENCE = "https://database.windows.net/"
TOKEN_PRINCIPAL = "<token-identified principal>"
#: LOGIN7 FeatureExt id of federated authentication, and its security-token library ([MS-TDS] 2.2.6.4).
FEATURE_FEDAUTH = 0x02
LIBRARY_SECURITY_TOKEN = 0x01
_PRINCIPAL_CLAIMS = ("upn", "unique_name", "appid", "oid", "sub")


@dataclass(frozen=True)
class EntraSpec:
    key: str
    audience: str = AZURE_SQL_AUDIENCE
    principals: tuple[str, ...] | None = None


def parse_entra(value: Any, where: str) -> EntraSpec:
    if not isinstance(value, dict):
        raise FleetError(f"{where}: expected an object")
    reject_unknown(value, {"key", "audience", "principals"}, where)
    key = value.get("key")
    if not isinstance(key, str) or not key:
        raise FleetError(f"{where}.key: expected a non-empty string")
    audience = value.get("audience", AZURE_SQL_AUDIENCE)
    if not isinstance(audience, str) or not audience:
        raise FleetError(f"{where}.audience: expected a non-empty string")
    principals = value.get("principals")
    return EntraSpec(key, audience, None if principals is None else as_strings(principals, f"{where}.principals"))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint(key: str, *, expires_in: float = 3600.0, audience: str = AZURE_SQL_AUDIENCE,
         principal: str = "monitor@contoso.example", now: float | None = None) -> str:
    """A token this module accepts (with ``key``) until ``expires_in`` seconds from ``now``."""
    now = time.time() if now is None else now
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"aud": audience, "iss": "https://sts.windows.net/simulated/", "iat": int(now), "nbf": int(now) - 60,
              "exp": int(now + expires_in), "upn": principal, "oid": "00000000-0000-0000-0000-000000000001"}
    payload = _b64(json.dumps(claims).encode())
    signature = hmac.new(key.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def check(spec: EntraSpec | None, token: str, now: float | None = None) -> str | None:
    """None when ``token`` logs in, else why not (the text after "Login failed for user …")."""
    if spec is None:
        return "Federated authentication is not configured on this server."
    parts = token.split(".")
    if len(parts) != 3:
        return "The token is not a JWT."
    try:
        header = json.loads(_unb64(parts[0]))
        claims = json.loads(_unb64(parts[1]))
        signature = _unb64(parts[2])
    except (binascii.Error, ValueError):
        return "The token cannot be read."
    if not isinstance(header, dict) or not isinstance(claims, dict) or header.get("alg") != "HS256":
        return "The token's signing algorithm is not accepted."
    expected = hmac.new(spec.key.encode(), f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected):
        return "The token's signature is not valid."
    if claims.get("aud") != spec.audience:
        return "The token's audience is not this server."
    now = time.time() if now is None else now
    expiry, not_before = claims.get("exp"), claims.get("nbf")
    if not isinstance(expiry, int | float) or expiry <= now:
        return "Token is expired."
    if isinstance(not_before, int | float) and not_before > now:
        return "The token is not valid yet."
    if spec.principals is not None and not {str(claims.get(c)) for c in _PRINCIPAL_CLAIMS} & set(spec.principals):
        return "The token's principal is not a user of this database."
    return None


def principal_of(token: str) -> str:
    """The name a checked token logs in as (SUSER_NAME()): its first principal claim."""
    try:
        claims = json.loads(_unb64(token.split(".")[1]))
    except (IndexError, binascii.Error, ValueError):
        return TOKEN_PRINCIPAL
    names = [claims.get(claim) for claim in _PRINCIPAL_CLAIMS] if isinstance(claims, dict) else []
    return next((str(name) for name in names if name), TOKEN_PRINCIPAL)


def parse_fedauth(data: bytes) -> tuple[int, bool, str] | None:
    """(library, echo, token) of a FEDAUTH feature's data, or None when it is not a well-formed one."""
    if len(data) < 1:
        return None
    options = data[0]
    library, echo = options >> 1, bool(options & 0x01)
    if library != LIBRARY_SECURITY_TOKEN:
        return library, echo, ""
    if len(data) < 5:
        return None
    length = int.from_bytes(data[1:5], "little")
    raw = data[5:5 + length]
    if len(raw) != length or length % 2:
        return None
    try:
        return library, echo, raw.decode("utf-16-le")
    except UnicodeDecodeError:
        return None
