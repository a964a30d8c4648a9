"""The two ODBC drivers every collection test runs with."""

from __future__ import annotations

import pytest

from supervisor.children.odbc_driver import bundled_library

DRIVERS = ("msodbc18", "freetds")


def driver_setting(driver: str) -> str:
    """The ``odbc_driver`` setting for a driver of ``DRIVERS``: FreeTDS by name, Driver 18 by the bundled path."""
    if driver == "freetds":
        return "FreeTDS"
    library = bundled_library()
    if library is None:
        pytest.fail("mssql-python-odbc is not installed (pip install -e '.[test]')")
    return library
