"""Property: whatever value another program writes into any column of ``servers`` or ``collection_configs``,
the child's path from the row to the stored status never raises, and the value is a ``config`` error of that
one server or a value the rules accept; the other server is untouched.

Rows are written directly with SQL (as the product's web app would) into real SQLite and PostgreSQL tenant
DBs; the child's own code reads them (``read_servers``, ``load_states``), schedules them, builds their
connection strings, reports them (``OutcomeRecorder``) and stores the result (``write_items``). Every column
of both tables is covered, found from the schema, so a column added later is covered too.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Boolean, DateTime, Engine, Integer, String, Text, text
from sqlalchemy.exc import IntegrityError

from supervisor import rules
from supervisor.children.collect import CollectionOutcome
from supervisor.children.connection_string import UnsafeValue, build
from supervisor.children.errors import CollectionFailure
from supervisor.children.odbc_driver import FREETDS, MSODBC, OdbcDriver
from supervisor.children.persist import write_items
from supervisor.children.recorder import OutcomeRecorder
from supervisor.children.records import WriteItem
from supervisor.children.scheduler import Scheduler
from supervisor.children.stats import TenantStats
from supervisor.children.stored_state import load_states
from supervisor.children.targets import read_servers
from supervisor.config import Settings
from supervisor.errors import CONNECT
from supervisor.secret_box import DeferredSecretBox, SecretBox
from supervisor.servers import ServerSpec, add_server
from supervisor.storage.engine import make_engine
from supervisor.storage.migrations import upgrade_tenant
from supervisor.storage.tenant_schema import collection_configs, servers

DRIVERS = (OdbcDriver("ODBC Driver 18 for SQL Server", MSODBC), OdbcDriver("FreeTDS", FREETDS))
GOOD, HOSTILE = "good-server", "hostile-server"
PASSWORD = "pw;}{x"
#: Every column but the keys, from the schema.
COLUMNS = [
    (table.name, column)
    for table in (servers, collection_configs)
    for column in table.c
    if not column.primary_key and not column.foreign_keys
]

WORDS = st.sampled_from([
    "", " ", "abc", "-5", "0", "1433", "70000", "yes", "YES", "no", "true", "bogus", "auto", "adhoc", "online",
    "nan", "inf", "1e300", "\x00", "a\x00b", "a\nb", "\t", "h" * 300, "é" * 129, "}; DRIVER={x}", "2026-13-45",
])  # fmt: skip
NOW = dt.datetime.now(dt.UTC).replace(tzinfo=None)


def sqlite_values(column: Any) -> st.SearchStrategy[Any]:
    """Anything SQLite stores in any column (NULL only where the schema allows it: SQLite enforces NOT NULL)."""
    anything = st.one_of(
        WORDS,
        st.text(max_size=300),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=False),
        st.booleans(),
        st.binary(max_size=16),
        st.sampled_from([0, 1, -1, 2**31, 86401, 65536, 1.5, 30.0]),
    )
    return st.one_of(st.none(), anything) if column.nullable else anything


def _far_from_now(moment: dt.datetime) -> bool:
    """A stored check time within the next two days legitimately holds later updates back (see persist)."""
    return not NOW - dt.timedelta(hours=1) <= moment <= NOW + dt.timedelta(days=2)


def postgres_values(column: Any) -> st.SearchStrategy[Any]:
    """What PostgreSQL accepts in the column's type: the web app cannot store anything else."""
    kind = column.type
    if isinstance(kind, Boolean):
        values: st.SearchStrategy[Any] = st.booleans()
    elif isinstance(kind, Integer):
        values = st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([0, -1, 65536, 86401, 2**31 - 1]))
    elif isinstance(kind, DateTime):
        values = st.datetimes(dt.datetime(1, 1, 2), dt.datetime(9999, 12, 30)).filter(_far_from_now)
    elif isinstance(kind, String | Text):
        limit = getattr(kind, "length", None) or 300
        no_nul = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=limit)
        values = st.one_of(WORDS.filter(lambda w: "\x00" not in w and len(w) <= limit), no_nul)
    else:
        raise AssertionError(f"no strategy for {column}")
    return st.one_of(st.none(), values) if column.nullable else values


def tokens(box: SecretBox) -> st.SearchStrategy[str]:
    """Stored passwords: ours with a value a driver cannot take, another key's, not UTF-8, not a token."""
    other = Fernet(Fernet.generate_key())
    return st.sampled_from([
        box.encrypt("with\x00nul"),
        box.encrypt("p" * 129),
        box.encrypt(""),
        box.encrypt("fine"),
        other.encrypt(PASSWORD.encode()).decode(),
        box._fernet.encrypt(b"\xff\xfe not utf-8").decode(),
        "gAAAAA" + "A" * 100,
    ])  # fmt: skip


#: The rule a child applies to each checked column (the password's also depends on decrypting it).
RULES = {
    "name": rules.server_name,
    "host": rules.host,
    "port": rules.port,
    "username": rules.username,
    "encrypt": rules.encrypt,
    "trust_server_certificate": lambda value: rules.flag(value, nullable=True),
    "collection_mode": rules.collection_mode,
    "interval_seconds": rules.interval,
    "enabled": lambda value: rules.flag(value, nullable=False),
    "database": rules.database,
    # The hostile row has a username and no token source: entra-token, or a token source alone, is refused.
    "auth": lambda value: rules.authentication(rules.auth(value), "monitor", None, None),
    "token_command": lambda value: rules.authentication(None, "monitor", rules.token_command(value), None),
    "token_file": lambda value: rules.authentication(None, "monitor", None, rules.token_file(value)),
}


def accepted(column: str, value: Any) -> bool:
    try:
        RULES[column](value)
    except ValueError:
        return False
    return True


class TenantDB:
    def __init__(self, url: str, key_file: Path) -> None:
        self.engine: Engine = make_engine(url, pooled=False)
        upgrade_tenant(self.engine)
        self.box = SecretBox.load(str(key_file))
        self.settings = Settings(secret_key_file=str(key_file))

    def reset(self) -> dict[str, int]:
        with self.engine.begin() as conn:
            for table in ("server_status_events", "collection_configs", "servers"):
                conn.execute(text(f"DELETE FROM {table}"))
        ids = {}
        for name in (GOOD, HOSTILE):
            spec = ServerSpec(name=name, host="127.0.0.1", port=1433, username="monitor", password=PASSWORD)
            ids[name] = add_server(self.engine, spec, self.box.encrypt(PASSWORD)).id
        return ids

    def write(self, table: str, column: str, server_id: int, value: Any) -> bool:
        """UPDATE as the web app would; False when the DB refuses the value (then it cannot be there)."""
        key = "id" if table == "servers" else "server_id"
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    text(f"UPDATE {table} SET {column} = :value WHERE {key} = :id"), {"value": value, "id": server_id}
                )
        except IntegrityError:
            return False  # e.g. the other server's name (unique)
        return True

    def stored(self, table: str, column: str, server_id: int) -> Any:
        """The value as the DB keeps it (SQLite converts '1433' in an INTEGER column to 1433)."""
        key = "id" if table == "servers" else "server_id"
        with self.engine.connect() as conn:
            return conn.execute(text(f"SELECT {column} FROM {table} WHERE {key} = :id"), {"id": server_id}).scalar()

    def raw_status(self) -> dict[int, tuple[Any, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT id, status, last_error_class FROM servers"))
            return {row[0]: (row[1], row[2]) for row in rows}


def check_row(db: TenantDB, table: str, column: Any, value: Any) -> None:
    ids = db.reset()
    if not db.write(table, column.name, ids[HOSTILE], value):
        return
    with db.engine.connect() as conn:
        rows = read_servers(conn, db.settings, DeferredSecretBox(db.settings.secret_key_file))
        states = load_states(conn)
    targets = {t.server_id: t for t in rows.targets}
    invalid = {s.server_id: s for s in rows.invalid}
    assert targets[ids[GOOD]].endpoint.password == PASSWORD and ids[GOOD] not in invalid

    hostile = ids[HOSTILE]
    value = db.stored(table, column.name, hostile)
    seen = (column.name, value, invalid.get(hostile))
    if column.name == "removed_at":
        assert (hostile in targets) == (value is None) and hostile not in invalid, seen
    elif column.name == "enabled" and accepted("enabled", value) and not value:
        assert hostile not in targets and hostile not in invalid, seen  # disabled
    elif column.name in RULES:
        assert (hostile in targets) == accepted(column.name, value) != (hostile in invalid), seen
    elif column.name == "password_encrypted":
        assert (hostile in targets) != (hostile in invalid), seen
    else:  # the collector's own columns (status, times, failures): read leniently, overwritten by the next result
        assert hostile in targets, seen
    if hostile in invalid:
        error = invalid[hostile].error
        assert column.name in error, error
        assert PASSWORD not in error
    if hostile in targets:
        target = targets[hostile]
        rules.server_name(target.name)
        rules.host(target.endpoint.host)
        rules.port(target.endpoint.port)
        rules.username(target.endpoint.username)
        rules.password(target.endpoint.password or "")
        rules.database(target.endpoint.database)
        assert target.endpoint.auth in rules.AUTH_MODES
        assert rules.INTERVAL_MIN <= target.interval_seconds <= rules.INTERVAL_MAX
        assert target.endpoint.encrypt in rules.ENCRYPT_MODES and target.collection_mode in rules.COLLECTION_MODES
        assert isinstance(target.endpoint.trust_server_certificate, bool)
        for driver in DRIVERS:
            with contextlib.suppress(UnsafeValue):  # a config failure at connect time (e.g. "};" on FreeTDS)
                assert isinstance(build(driver, target.endpoint), str)
    for state in states.values():
        assert state.status in ("unknown", "online", "offline") and 0 <= state.consecutive_failures < 2**31 - 1

    scheduler = Scheduler(salt="acme")
    now = time.monotonic()
    scheduler.set_servers({sid: t.interval_seconds for sid, t in targets.items()}, now)
    assert set(scheduler.due(now + 2 * rules.INTERVAL_MAX)) == set(targets)

    items: list[WriteItem] = []
    recorder = OutcomeRecorder("acme", 3600.0, TenantStats(), items.append, collection_timeout=5.0)
    recorder.states = states
    recorder.report_invalid(rows.invalid)
    recorder.report_invalid(rows.invalid)  # the next read: nothing new to report
    assert len(items) == len(invalid)
    refused = CollectionFailure(CONNECT, "connection refused", phase="connect")
    for target in targets.values():
        recorder.record(CollectionOutcome(target, time.time(), 1, None, refused))
    with db.engine.begin() as conn:
        write_items(conn, items)
    stored = db.raw_status()
    for sid in targets:
        assert stored[sid] == ("offline", "connect"), (column.name, value, stored[sid])
    for sid in invalid:
        assert stored[sid] == ("offline", "config"), (column.name, value, stored[sid])


PROPERTY = settings(
    max_examples=12, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(params=["sqlite", "postgresql"])
def tenant_db(request: pytest.FixtureRequest, tmp_path: Path) -> TenantDB:
    sqlite = request.param == "sqlite"
    url = f"sqlite:///{tmp_path}/tenant.db" if sqlite else request.getfixturevalue("pg_database")()
    db = TenantDB(url, tmp_path / "secret.key")
    yield db
    db.engine.dispose()


@pytest.mark.parametrize(("table", "column"), COLUMNS, ids=[f"{t}.{c.name}" for t, c in COLUMNS])
def test_any_value_in_any_column_is_that_servers_config_error_or_valid(
    tenant_db: TenantDB, table: str, column: Any
) -> None:
    postgres = tenant_db.engine.dialect.name == "postgresql"
    values = postgres_values(column) if postgres else sqlite_values(column)
    if column.name == "password_encrypted":
        values = st.one_of(values, tokens(tenant_db.box))

    @PROPERTY
    @given(values)
    def check(value: Any) -> None:
        check_row(tenant_db, table, column, value)

    check()
