"""Whether a LOGIN7 may log in, and SQL Server's answer when not.

A SQL login: the fleet entry's ``user`` and ``password`` (and no ``login_failed`` fault). An access token:
LOGIN7's FEDAUTH feature extension with the security-token library, checked by ``entra.py`` (the entry needs
``entra``); its ``fFedAuthEcho`` bit must echo the FEDAUTHREQUIRED option of the server's PRELOGIN answer, as
[MS-TDS] 3.3.5.5 requires. The database asked for must be one of the entry's ``databases`` when it lists them
(else error 4060, then 18456, as SQL Server answers a login to a database it cannot open).
"""

from __future__ import annotations

import struct

from sqlserver_sim import entra
from sqlserver_sim.flavours import database_refused
from sqlserver_sim.fleet import ServerSpec
from sqlserver_sim.login import Login7
from sqlserver_sim.tokens import error

_FEATUREEXTACK = 0xAE


def fedauth_required(spec: ServerSpec) -> int:
    """The FEDAUTHREQUIRED value of this server's PRELOGIN answer (to a client that sent the option): 0x00.
    ODBC Driver 18 (18.6) sends fFedAuthEcho 0 even when the answer is 0x01, which [MS-TDS] says the server must
    refuse; answering 0x00 (the server does not demand federated authentication: SQL logins work too) keeps the
    echo rule checkable and Driver 18's token logins valid."""
    del spec
    return 0x00


def refusal(spec: ServerSpec, request: Login7, *, prelogin_fedauth: int | None = None) -> tuple[bytes, str] | None:
    """(error tokens, the principal's name) when the login is refused, else None. ``prelogin_fedauth``: the
    FEDAUTHREQUIRED value this session's PRELOGIN answer carried (None: not sent)."""
    fedauth = request.feature(entra.FEATURE_FEDAUTH)
    if fedauth is not None:
        user = entra.TOKEN_PRINCIPAL
        reason = _token_refusal(spec, fedauth, prelogin_fedauth)
        if reason is not None or spec.faults.login_failed:
            return error(18456, f"Login failed for user '{user}'. {reason or ''}".rstrip(), 14, state=1), user
    else:
        user = request.user_name
        if spec.faults.login_failed or user != spec.user or request.password != spec.password:
            return error(18456, f"Login failed for user '{user}'.", 14, state=1), user
    database = request.database or "master"
    if database_refused(spec, database):
        text = f'Cannot open database "{database}" requested by the login. The login failed.'
        return error(4060, text, 11, state=1) + error(18456, f"Login failed for user '{user}'.", 14, state=1), user
    return None


def _token_refusal(spec: ServerSpec, data: bytes, prelogin_fedauth: int | None) -> str | None:
    parsed = entra.parse_fedauth(data)
    if parsed is None:
        return "The FEDAUTH feature extension is malformed."
    library, echo, token = parsed
    if echo != (prelogin_fedauth == 0x01):
        return "fFedAuthEcho does not match the server's FEDAUTHREQUIRED."
    if library != entra.LIBRARY_SECURITY_TOKEN:
        return "Only access tokens (the security token library) are accepted."
    return entra.check(spec.entra, token)


def feature_acks(request: Login7) -> bytes:
    """FEATUREEXTACK for the features the login reply acknowledges (FEDAUTH, after a token login), or b""."""
    if request.feature(entra.FEATURE_FEDAUTH) is None:
        return b""
    return bytes((_FEATUREEXTACK, entra.FEATURE_FEDAUTH)) + struct.pack("<I", 0) + b"\xff"


def principal(request: Login7) -> str:
    """Who logged in: the SQL login's name, or the access token's principal."""
    fedauth = request.feature(entra.FEATURE_FEDAUTH)
    parsed = entra.parse_fedauth(fedauth) if fedauth is not None else None
    return entra.principal_of(parsed[2]) if parsed else request.user_name
