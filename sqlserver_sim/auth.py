"""Whether a LOGIN7 may log in, and SQL Server's answer when not.

A SQL login: the fleet entry's ``user`` and ``password`` (and no ``login_failed`` fault). The database asked for
must be one of the entry's ``databases`` when it lists them (else error 4060, then 18456, as SQL Server answers a
login to a database it cannot open).
"""

from __future__ import annotations

from sqlserver_sim.flavours import database_refused
from sqlserver_sim.fleet import ServerSpec
from sqlserver_sim.login import Login7
from sqlserver_sim.tokens import error


def refusal(spec: ServerSpec, request: Login7) -> tuple[bytes, str] | None:
    """(error tokens, the principal's name) when the login is refused, else None."""
    user = request.user_name
    if spec.faults.login_failed or user != spec.user or request.password != spec.password:
        return error(18456, f"Login failed for user '{user}'.", 14, state=1), user
    database = request.database or "master"
    if database_refused(spec, database):
        text = f'Cannot open database "{database}" requested by the login. The login failed.'
        return error(4060, text, 11, state=1) + error(18456, f"Login failed for user '{user}'.", 14, state=1), user
    return None
