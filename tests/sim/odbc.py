"""pyodbc against the simulator with the drivers' own connection-string keys (not the collector's builder),
as the shared ``simulator``'s servers accept them: ``SIM_USER``/``SIM_PASSWORD`` unless told otherwise."""

from __future__ import annotations

from typing import Any

import pyodbc

from tests.helpers.drivers import driver_setting
from tests.helpers.simulator import SIM_PASSWORD, SIM_USER


def connection_string(driver: str, port: int, *, host: str = "127.0.0.1", user: str = SIM_USER,
                      password: str = SIM_PASSWORD) -> str:
    """Driver 18 by the bundled library's path, FreeTDS by name; the password braced as each driver reads it
    (Driver 18 undoubles ``}}``, FreeTDS takes the value up to a ``}`` followed by ``;`` or the end)."""
    if driver == "msodbc18":
        return (f"DRIVER={{{driver_setting(driver)}}};SERVER={host},{port};UID={user};"
                f"PWD={{{password.replace('}', '}}')}}};Encrypt=no")
    assert "};" not in password, "FreeTDS cannot take this password in a connection string"
    return f"DRIVER={{FreeTDS}};SERVER={host};PORT={port};UID={user};PWD={{{password}}};TDS_Version=7.4"


def result_sets(cursor: pyodbc.Cursor) -> list[tuple[list[str], list[tuple[Any, ...]]]]:
    """Every result set of the current statement; skips the procedure's tail (description None)."""
    sets = []
    while True:
        if cursor.description is not None:
            names = [column[0] for column in cursor.description]
            sets.append((names, [tuple(row) for row in cursor.fetchall()]))
        if not cursor.nextset():
            return sets
