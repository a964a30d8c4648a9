"""Pure logic: connection strings, error classes, samples, deltas, scheduler, status."""

from __future__ import annotations

import datetime as dt
import logging
import math
import random
from collections.abc import Callable

import pyodbc
import pytest

from supervisor.children.connection_string import Endpoint, UnsafeValue, brace, brace_freetds, build
from supervisor.children.deltas import Baseline, compute, wait_increments
from supervisor.children.errors import CollectionFailure, classify
from supervisor.children.failure_log import FailureLogPolicy
from supervisor.children.odbc_driver import FREETDS, MSODBC, OdbcDriver, kind_of
from supervisor.children.sample import Sample, WaitCounts, clamp_percent, parse_sample
from supervisor.children.scheduler import Scheduler
from supervisor.children.status import OFFLINE, ONLINE, ServerState, apply_outcome

MS = OdbcDriver("ODBC Driver 18 for SQL Server", MSODBC)
TDS = OdbcDriver("FreeTDS", FREETDS)
HOSTILE = ["x;Trusted_Connection=yes", "pw};UID=sa;PWD={x", "}", "{", "a}}b", "p;w", "név ü"]


def parse_odbc(text: str) -> dict[str, str]:
    """The ODBC rules (MS-ODBCSTR): ``{...}`` values with ``}}`` for ``}``."""
    pairs: dict[str, str] = {}
    i = 0
    while i < len(text):
        key_end = text.index("=", i)
        key = text[i:key_end]
        i = key_end + 1
        if text[i] == "{":
            value, i = "", i + 1
            while True:
                if text[i] == "}":
                    if i + 1 < len(text) and text[i + 1] == "}":
                        value, i = value + "}", i + 2
                        continue
                    i += 1
                    break
                value, i = value + text[i], i + 1
        else:
            end = text.find(";", i)
            end = len(text) if end < 0 else end
            value, i = text[i:end], end
        assert key not in pairs
        pairs[key] = value
        assert i == len(text) or text[i] == ";"
        i += 1
    return pairs


@pytest.mark.parametrize("value", HOSTILE)
def test_msodbc_values_cannot_inject(value: str) -> None:
    text = build(MS, Endpoint(value, 1433, value, value, "no", False, database=value))
    pairs = parse_odbc(text)
    assert set(pairs) == {"DRIVER", "SERVER", "Encrypt", "TrustServerCertificate", "APP", "DATABASE", "UID", "PWD"}
    assert pairs["PWD"] == value and pairs["UID"] == value and pairs["SERVER"] == f"{value},1433"
    assert pairs["DATABASE"] == value
    assert pairs["APP"] == "collector-supervisor"


def test_freetds_braces_literally_and_refuses_what_it_cannot_carry() -> None:
    assert brace_freetds("p}w;d") == "{p}w;d}"
    assert brace("p}w") == "{p}}w}"
    with pytest.raises(UnsafeValue):
        brace_freetds("pw};UID=sa")
    with pytest.raises(UnsafeValue):
        build(TDS, Endpoint("h", 1, "u", "x};Trusted_Connection=yes", "yes", False))
    text = build(TDS, Endpoint("h;x=1", 1433, "u", "p;w}", "optional", False))
    assert "Encryption={request}" in text and "SERVER={h;x=1}" in text and "PORT={1433}" in text
    with pytest.raises(UnsafeValue):
        brace("a\x00b")


def test_encrypt_mapping() -> None:
    assert "Encrypt={strict}" in build(MS, Endpoint("h", 1, None, None, "strict", True))
    assert "TrustServerCertificate={yes}" in build(MS, Endpoint("h", 1, None, None, "yes", True))
    assert "Encryption={require}" in build(TDS, Endpoint("h", 1, None, None, "yes", False))
    assert "Encryption={off}" in build(TDS, Endpoint("h", 1, None, None, "no", False))
    assert "UID" not in build(MS, Endpoint("h", 1, None, None, "no", False))


def test_driver_kind() -> None:
    assert kind_of("FreeTDS") == FREETDS and kind_of("/usr/lib/x86_64-linux-gnu/odbc/libtdsodbc.so") == FREETDS
    assert kind_of("ODBC Driver 18 for SQL Server") == MSODBC and kind_of("/x/libmsodbcsql-18.6.so.2.1") == MSODBC


@pytest.mark.parametrize(
    ("state", "message", "phase", "expected"),
    [
        ("28000", "[28000] Login failed for user 'u'. (18456) (SQLDriverConnect)", "connect", "login"),
        ("42000", "[42000] [FreeTDS]Login failed for user 'u'. (18456) (SQLDriverConnect)", "connect", "login"),
        ("08S01", "[08S01] Unable to connect (20009) (SQLDriverConnect)", "connect", "connect"),
        ("HYT00", "[HYT00] Login timeout expired (0) (SQLDriverConnect)", "connect", "connect"),
        ("HYT00", "[HYT00] Query timeout expired (0) (SQLExecDirectW)", "query", "timeout"),
        ("HY008", "[HY008] Operation was cancelled (0) (SQLExecDirectW)", "query", "timeout"),
        ("42000", "[42000] VIEW SERVER STATE permission was denied (300) (SQLExecDirectW)", "query", "permission"),
        ("42000", "[42000] The user does not have permission (297) (SQLExecDirectW)", "query", "permission"),
        ("08S01", "[08S01] TCP Provider: Error code 0x2746 (10054) (SQLMoreResults)", "query", "connect"),
        ("42000", "[42000] Incorrect syntax near 'x'. (102) (SQLExecDirectW)", "query", "protocol"),
    ],
)
def test_classification(state: str, message: str, phase: str, expected: str) -> None:
    assert classify(pyodbc.Error(state, message), phase=phase).error_class == expected


def test_pyodbcs_own_errors_keep_their_message() -> None:
    """pyodbc raises what it cannot read itself as (text, SQLSTATE), the drivers' diagnostics as (SQLSTATE, text)."""
    own = pyodbc.ProgrammingError("ODBC SQL type -16 is not yet supported.  column-index=4  type=-16", "HY106")
    failure = classify(own, phase="query")
    assert failure.message == "ODBC SQL type -16 is not yet supported. column-index=4 type=-16", failure.message
    assert failure.error_class == "protocol"


def test_driver_text_is_redacted() -> None:
    from supervisor.logs import register_secret

    register_secret("Hunter2-secret")
    failure = classify(pyodbc.Error("28000", "Login failed; PWD=Hunter2-secret (18456)"), phase="connect")
    assert "Hunter2" not in failure.message
    assert classify(ValueError("boom"), phase="query").error_class == "internal"


T0 = dt.datetime(2024, 1, 1, 12, 0, 0)
START = dt.datetime(2023, 12, 1)


def sample(seconds: float, batches: int | None, *, start: dt.datetime = START, waits: dict | None = None) -> Sample:
    return Sample(
        "s",
        "16.0",
        "Windows",
        start,
        T0 + dt.timedelta(seconds=seconds),
        10,
        20,
        50.0,
        100,
        100,
        5,
        batches,
        waits or {},
    )


def test_rates_and_rebaselines() -> None:
    first = compute(None, sample(0, 1000), 3600)
    assert first.batch_requests_per_sec is None and first.interval_seconds is None and first.waits == {}
    base = Baseline.of(sample(0, 1000))
    assert compute(base, sample(10, 6000), 3600).batch_requests_per_sec == 500.0
    restarted = compute(base, sample(10, 50, start=START + dt.timedelta(days=1)), 3600)
    assert restarted.batch_requests_per_sec is None and restarted.rebaselined == "instance restarted"
    assert compute(base, sample(10, 10), 3600).batch_requests_per_sec is None  # counter went backwards
    assert compute(base, sample(7200, 9000), 3600).batch_requests_per_sec is None  # gap
    assert compute(base, sample(0, 2000), 3600).batch_requests_per_sec is None  # no time passed
    assert compute(base, sample(-5, 2000), 3600).batch_requests_per_sec is None
    assert compute(base, sample(1, 10**12), 3600).batch_requests_per_sec is None  # absurd


def test_wait_increments() -> None:
    before = {"A": WaitCounts(10, 100, 5), "B": WaitCounts(5, 50, 1), "C": WaitCounts(3, 3, 0)}
    after = {"A": WaitCounts(12, 130, 6), "B": WaitCounts(5, 50, 1), "C": WaitCounts(3, 3, 0), "D": WaitCounts(2, 9, 1)}
    assert wait_increments(before, after, 60_000.0) == {"A": WaitCounts(2, 30, 1), "D": WaitCounts(2, 9, 1)}
    assert wait_increments(before, {**after, "C": WaitCounts(1, 1, 0)}, 60_000.0) is None  # cleared
    base = Baseline.of(sample(0, 1, waits=before))
    assert Baseline.parse_waits(base.waits_json()) == before


def raw_sets(cpu: list, waits: list, platform: str = "Windows", counters: tuple | None = None) -> list:
    instance = (["contract_version", "server_name", "product_version", "edition", "engine_edition", "host_platform",
                 "database_name", "cpu_count", "sqlserver_start_time", "sample_time_utc"],
                [(2, "s", "16", "Dev", 3, platform, "master", 8, START, T0)])  # fmt: skip
    cpu_set = (["record_id", "record_time_utc", "sql_cpu_percent", "system_idle_percent", "host_cpu_percent"],
               [row if len(row) == 5 else (*row, None) for row in cpu])  # fmt: skip
    counters_set = (["total_physical_memory_kb", "available_physical_memory_kb", "total_server_memory_kb",
                     "target_server_memory_kb", "user_connections", "batch_requests_total", "memory_used_percent"],
                    [counters or (10000, 2500, 2048, 4096, 7, 99, None)])  # fmt: skip
    wait_set = (["wait_type", "waiting_tasks_count", "wait_time_ms", "signal_wait_time_ms"], waits)
    return [instance, cpu_set, counters_set, wait_set]


def test_parse_sample_clamps_filters_and_knows_linux() -> None:
    parsed = parse_sample(
        raw_sets([(1, T0, 130, 10)], [("WRITELOG", 5, 9, 1), ("SLEEP_TASK", 9, 9, 9), ("LCK_M_X", 0, 0, 0)])
    )
    assert parsed.cpu_percent == 100 and parsed.system_cpu_percent == 100
    assert parsed.memory_percent == 75.0 and parsed.sql_memory_mb == 2 and parsed.sql_target_memory_mb == 4
    assert set(parsed.waits) == {"WRITELOG"}
    assert (parsed.engine_edition, parsed.database_name) == (3, "master")
    linux = parse_sample(raw_sets([(1, T0, 20, 0)], [], platform="Linux"))
    assert linux.cpu_percent == 20 and linux.system_cpu_percent is None
    assert parse_sample(raw_sets([], [])).cpu_percent is None
    assert clamp_percent(-3) == 0
    with pytest.raises(CollectionFailure):
        parse_sample(raw_sets([], [])[:3])


def test_parse_sample_of_the_azure_flavours() -> None:
    """Azure SQL Database: CPU and memory as percentages of the service tier, host CPU of the hosting instance;
    Managed Instance: no host CPU at all. No record ids: the newest record is the latest end time."""
    earlier = T0 - dt.timedelta(seconds=15)
    azure = parse_sample(raw_sets(
        [(None, earlier, 90, None, 99), (None, T0, 12, None, 40)], [],
        counters=(None, None, 2048, 4096, 3, 99, 61.257),
    ))  # fmt: skip
    assert (azure.cpu_percent, azure.system_cpu_percent, azure.memory_percent) == (12, 40, 61.26)
    managed = parse_sample(raw_sets([(None, T0, 33, None, None)], []))
    assert (managed.cpu_percent, managed.system_cpu_percent, managed.memory_percent) == (33, None, 75.0)
    nothing = parse_sample(raw_sets([], [], counters=(None, None, None, None, None, None, None)))
    assert nothing.memory_percent is None and nothing.connection_count is None


def test_an_older_contract_is_refused() -> None:
    sets = raw_sets([], [])
    sets[0] = (sets[0][0], [(1, *sets[0][1][0][1:])])
    with pytest.raises(CollectionFailure, match="contract version 1"):
        parse_sample(sets)


def test_scheduler_never_two_in_flight_and_skips_late_slots() -> None:
    scheduler = Scheduler(wall_clock=lambda: 0.0)
    scheduler.set_servers({1: 10.0, 2: 10.0}, now=0.0)
    started = scheduler.due(10.0)
    assert sorted(started) == [1, 2]
    assert scheduler.due(25.0) == []  # both still in flight: skipped, not queued
    assert scheduler.skipped(1) == 1
    scheduler.finished(1)
    assert scheduler.due(26.0) == []  # the missed slot is not made up
    assert scheduler.due(41.0) == [1]  # phase < 10 s: its next slot is at most 40 s
    scheduler.set_servers({2: 10.0, 3: 1.0}, now=41.0)
    assert len(scheduler) == 2 and not scheduler.in_flight(1)
    assert 3 in scheduler.due(42.1)


def test_scheduler_spreads_servers_over_the_whole_interval_and_keeps_their_slots() -> None:
    scheduler = Scheduler(salt="acme", wall_clock=lambda: 1000.0)
    scheduler.set_servers({i: 30.0 for i in range(300)}, now=0.0)
    started_at = {}
    for tenth in range(1, 301):
        for server_id in scheduler.due(tenth / 10):
            started_at[server_id] = tenth / 10
    assert len(started_at) == 300
    per_10s = [sum(1 for t in started_at.values() if k * 10 < t <= (k + 1) * 10) for k in range(3)]
    assert all(70 <= count <= 130 for count in per_10s), per_10s  # even thirds, not a burst

    # A restarted child (another monotonic origin, the wall clock 7 s on) keeps each server's wall-clock slot.
    restarted = Scheduler(salt="acme", wall_clock=lambda: 1007.0)
    for server_id in (0, 17, 299):
        wall_slot = (1000.0 + started_at[server_id]) % 30
        assert math.isclose((1007.0 + restarted.first_delay(server_id, 30.0)) % 30, wall_slot, abs_tol=0.11)
    other_tenant = Scheduler(salt="globex", wall_clock=lambda: 1000.0)
    assert [other_tenant.first_delay(i, 30.0) for i in range(5)] != [scheduler.first_delay(i, 30.0) for i in range(5)]


class _ScanScheduler:
    """The plain reference: scan every server on every call (what the heap must match)."""

    def __init__(self, first_delay: Callable[[int, float], float]) -> None:
        self.first_delay = first_delay
        self.slots: dict[int, list[float]] = {}  # id -> [interval, next_due, in_flight]

    def set_servers(self, intervals: dict[int, float], now: float) -> None:
        self.slots = {sid: slot for sid, slot in self.slots.items() if sid in intervals}
        for sid, interval in intervals.items():
            slot = self.slots.get(sid)
            if slot is None:
                self.slots[sid] = [interval, now + self.first_delay(sid, interval), 0]
            elif slot[0] != interval:
                slot[1] = min(slot[1], now + interval)
                slot[0] = interval

    def due(self, now: float) -> list[int]:
        ready = []
        for sid, slot in self.slots.items():
            if slot[1] <= now:
                slot[1] += (math.floor((now - slot[1]) / slot[0]) + 1) * slot[0]
                if not slot[2]:
                    slot[2] = 1
                    ready.append(sid)
        return ready

    def next_due_in(self, now: float) -> float | None:
        return max(0.0, min(slot[1] for slot in self.slots.values()) - now) if self.slots else None


def test_scheduler_matches_a_full_scan_under_random_changes() -> None:
    rng = random.Random(7)
    scheduler = Scheduler(salt="x", wall_clock=lambda: 0.0)
    reference = _ScanScheduler(scheduler.first_delay)
    now = 0.0
    for step in range(3000):
        now += rng.choice((0.0, 0.05, 0.3, 1.0, 7.0))
        if step % 50 == 0:  # servers come, go and change interval
            intervals = {sid: rng.choice((1.0, 5.0, 30.0)) for sid in rng.sample(range(40), rng.randint(0, 30))}
            scheduler.set_servers(intervals, now)
            reference.set_servers(intervals, now)
        started = scheduler.due(now)
        assert sorted(started) == sorted(reference.due(now)), step
        for sid in started:
            if rng.random() < 0.8:  # the rest stay in flight for a while
                scheduler.finished(sid)
                reference.slots[sid][2] = 0
        for sid in list(reference.slots):
            if reference.slots[sid][2] and rng.random() < 0.1:
                scheduler.finished(sid)
                reference.slots[sid][2] = 0
        assert scheduler.next_due_in(now) == reference.next_due_in(now), step


def test_status_transitions() -> None:
    now = dt.datetime(2024, 1, 1)
    state, update = apply_outcome(1, ServerState(), CollectionFailure("connect", "refused"), now)
    assert state == ServerState(OFFLINE, 1) and update.status_changed and update.error_class == "connect"
    state, update = apply_outcome(1, state, CollectionFailure("login", "bad password"), now)
    assert state == ServerState(OFFLINE, 2) and not update.status_changed
    state, update = apply_outcome(1, state, CollectionFailure("permission", "300"), now)
    assert state.status == ONLINE and update.status_changed and update.error == "300"
    state, update = apply_outcome(1, state, None, now)
    assert state == ServerState(ONLINE, 0) and update.success and update.error is None and not update.status_changed


def test_a_failing_server_is_logged_loudly_once_per_streak_then_reminded() -> None:
    policy = FailureLogPolicy(remind_every=600)
    assert policy.failed(1, "connect", now=0) == (logging.WARNING, 0)
    assert policy.failed(1, "connect", now=30) == (logging.DEBUG, 1)
    assert policy.failed(2, "connect", now=30) == (logging.WARNING, 0)  # another server: its own streak
    assert policy.failed(1, "connect", now=60) == (logging.DEBUG, 2)
    assert policy.failed(1, "connect", now=600) == (logging.WARNING, 2)  # the reminder says how many were quiet
    assert policy.failed(1, "login", now=610) == (logging.WARNING, 0)  # a different error: loud again
    policy.succeeded(1)
    assert policy.failed(1, "login", now=620) == (logging.WARNING, 0)


def test_scheduler_ahead_starts_slots_early_but_never_one_a_previous_child_may_have_taken() -> None:
    """A tenant moved or restarted: its previous child, with the same wall-clock slots, may have started the
    next slot up to ``ahead`` early; the new child must not collect that slot again."""
    ahead, interval = 0.5, 10.0
    previous = Scheduler(salt="acme", wall_clock=lambda: 1000.0, ahead=ahead)
    server = next(sid for sid in range(1000) if 1.0 <= previous.first_delay(sid, interval) <= 2.0)
    slot = previous.first_delay(server, interval)
    previous.set_servers({server: interval}, now=0.0)
    assert math.isclose(previous.next_due_in(0.0) or 0.0, slot)  # a wake at the slot...
    assert previous.due(slot - ahead - 0.01) == []  # ...but a wake for another slot may take it ahead early
    assert previous.due(slot - ahead + 1e-6) == [server]  # early, by ahead at most
    # The next child starts just after, with that slot 0.2 s away on the same wall clock: not collected again.
    after = Scheduler(salt="acme", wall_clock=lambda: 1000.0 + slot - 0.2, ahead=ahead)
    after.set_servers({server: interval}, now=0.0)
    assert after.due(0.2) == [] and after.due(interval + 0.2 - ahead - 0.01) == []
    assert after.due(interval + 0.2 - ahead + 1e-6) == [server]  # the next slot, early again
    # A first slot further away than ahead is kept.
    later = Scheduler(salt="acme", wall_clock=lambda: 1000.0 + slot - 1.0, ahead=ahead)
    later.set_servers({server: interval}, now=0.0)
    assert later.due(1.0 - ahead + 1e-6) == [server]
