"""A kept connection's cursor is reused, but pyodbc fixes a cursor's query timeout when it is made: a cursor
whose timeout is shorter than the time the next collection has is replaced, so the driver never ends a query
before the collector's deadline does."""

from __future__ import annotations

from supervisor.children.collect import ServerSession
from supervisor.children.connection_string import Endpoint
from supervisor.children.odbc_driver import MSODBC, OdbcDriver
from supervisor.children.targets import Target


class FakeCursor:
    def __init__(self, timeout: int) -> None:
        self.timeout = timeout
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeConnection:
    """pyodbc's rule: a new cursor takes the connection's ``timeout`` of that moment."""

    def __init__(self) -> None:
        self.timeout = 0
        self.cursors: list[FakeCursor] = []

    def cursor(self) -> FakeCursor:
        self.cursors.append(FakeCursor(self.timeout))
        return self.cursors[-1]


def session() -> tuple[ServerSession, FakeConnection]:
    target = Target(1, "t", Endpoint("127.0.0.1", 1433, "mon", "pw", "no", False), 30.0, "auto")
    kept = ServerSession(target, OdbcDriver("fake", MSODBC), 1.0, keep_connection=True)
    conn = FakeConnection()
    kept._conn = conn
    return kept, conn


def test_a_cursor_is_reused_while_its_timeout_covers_the_time_left() -> None:
    kept, conn = session()
    first = kept._cursor_for(6)
    assert kept._cursor_for(6) is first and kept._cursor_for(3) is first
    assert len(conn.cursors) == 1 and first.timeout == 6


def test_a_cursor_made_with_less_time_is_replaced_when_a_collection_has_more() -> None:
    kept, conn = session()
    short = kept._cursor_for(2)  # made right after a slow login
    longer = kept._cursor_for(6)
    assert longer is not short and short.closed and longer.timeout == 6
    assert kept._cursor_for(6) is longer and len(conn.cursors) == 2
