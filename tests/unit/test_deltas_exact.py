"""``supervisor.children.deltas`` with exact values at every boundary: each re-baseline reason, the interval, the
rate's rounding and ceiling, wait increments, and the baseline's JSON (scripts/mutation.sh runs these)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from supervisor.children.deltas import MAX_PLAUSIBLE_BATCH_RATE, Baseline, Deltas, compute, wait_increments
from supervisor.children.sample import Sample, WaitCounts

START = dt.datetime(2026, 3, 1, 8, 0, 0)
T0 = dt.datetime(2026, 3, 1, 9, 0, 0)
GAP = 3600.0


def sample(seconds: float, batches: int | None, *, started: dt.datetime = START,
           waits: dict[str, WaitCounts] | None = None) -> Sample:  # fmt: skip
    return Sample("s", "16.0", "Windows", started, T0 + dt.timedelta(seconds=seconds), 10, 20, 50.0, 100, 200, 3,
                  batches, waits or {})  # fmt: skip


def base(batches: int | None = 1000, waits: dict[str, WaitCounts] | None = None) -> Baseline:
    return Baseline.of(sample(0, batches, waits=waits))


def test_first_sample() -> None:
    assert compute(None, sample(1, 5), GAP) == Deltas(None, None, {}, "first sample")


def test_a_rate_rounded_to_milliunits_with_its_interval() -> None:
    deltas = compute(base(1000), sample(3, 1001), GAP)  # 1 batch in 3 s
    assert deltas == Deltas(0.333, 3.0, {}, None)
    assert compute(base(1000), sample(0.0005, 1000), GAP) == Deltas(0.0, 0.001, {}, None)  # interval 3 decimals
    assert compute(base(1000), sample(1.23456, 1000), GAP).interval_seconds == 1.235
    assert compute(base(0), sample(7, 1), GAP).batch_requests_per_sec == 0.143  # 1/7 to 3 decimals
    assert compute(base(10), sample(0.5, 10), GAP) == Deltas(0.0, 0.5, {}, None)  # under a second is a gap too


def test_an_instance_restart_keeps_the_interval_but_no_rate() -> None:
    restarted = sample(2.5, 5, started=START + dt.timedelta(hours=1))
    assert compute(base(1000), restarted, GAP) == Deltas(None, 2.5, {}, "instance restarted")
    clock_back = sample(-1, 5, started=START + dt.timedelta(hours=1))
    assert compute(base(1000), clock_back, GAP) == Deltas(None, None, {}, "instance restarted")


@pytest.mark.parametrize("seconds", [0, -5])
def test_a_clock_that_did_not_advance(seconds: float) -> None:
    assert compute(base(1000), sample(seconds, 2000), GAP) == Deltas(None, None, {}, "server clock did not advance")


def test_the_gap_limit_is_inclusive() -> None:
    assert compute(base(1000), sample(GAP, 1000 + 3600), GAP) == Deltas(1.0, GAP, {}, None)
    assert compute(base(1000), sample(GAP + 0.001, 5000), GAP) == Deltas(
        None, GAP + 0.001, {}, "gap longer than max_sample_gap"
    )


def test_counter_resets_and_missing_counters() -> None:
    assert compute(base(1000), sample(2, 999), GAP) == Deltas(None, 2.0, {}, "counter reset")
    assert compute(base(1000), sample(2, 1000), GAP) == Deltas(0.0, 2.0, {}, None)  # an idle server: rate 0
    assert compute(base(None), sample(2, 1000), GAP) == Deltas(None, 2.0, {}, "counter reset")
    assert compute(base(1000), sample(2, None), GAP) == Deltas(None, 2.0, {}, None)  # nothing to reset
    assert compute(base(None), sample(2, None), GAP) == Deltas(None, 2.0, {}, None)


def test_the_rate_ceiling_is_inclusive() -> None:
    top = int(MAX_PLAUSIBLE_BATCH_RATE)
    assert compute(base(0), sample(1, top), GAP).batch_requests_per_sec == MAX_PLAUSIBLE_BATCH_RATE
    over = compute(base(0), sample(1, top + 1), GAP)
    assert over == Deltas(None, 1.0, {}, "counter reset")  # a bogus counter: no rate
    assert MAX_PLAUSIBLE_BATCH_RATE == 10_000_000.0


def test_wait_increments_go_into_the_deltas() -> None:
    before = {"WRITELOG": WaitCounts(10, 100, 5)}
    after = {"WRITELOG": WaitCounts(12, 130, 6), "LCK_M_X": WaitCounts(1, 50, 0)}
    deltas = compute(base(0, before), sample(2, 10, waits=after), GAP)
    assert deltas.waits == {"WRITELOG": WaitCounts(2, 30, 1), "LCK_M_X": WaitCounts(1, 50, 0)}
    restarted = compute(base(0, before), sample(2, 10, started=T0, waits=after), GAP)
    assert restarted.waits == {}


UPTIME_MS = 3_600_000.0  # sample(): an hour after START


def test_wait_increments_drop_countless_and_impossible_ones() -> None:
    before = {name: WaitCounts(10, 100, 10) for name in ("D", "E", "F", "H", "I", "J")}
    after = {
        "D": WaitCounts(10, 150, 15),  # time without a count: dropped
        "E": WaitCounts(11, 100, 10),  # one wait of 0 ms: kept
        "F": WaitCounts(10, 100, 10),  # nothing happened: dropped
        "H": WaitCounts(12, 100 + 2 * 3_600_000, 10),  # two waits as long as the uptime: kept
        "I": WaitCounts(12, 101 + 2 * 3_600_000, 10),  # a millisecond more than two waits can have lasted: dropped
        "J": WaitCounts(11, 105, 16),  # more signal wait than wait: dropped
        "NEW": WaitCounts(1, 0, 0),  # new type: counts from 0
    }
    assert wait_increments(before, after, UPTIME_MS) == {
        "E": WaitCounts(1, 0, 0), "H": WaitCounts(2, 7_200_000, 0), "NEW": WaitCounts(1, 0, 0)
    }  # fmt: skip
    assert wait_increments({}, {"G": WaitCounts(0, 5, 0)}, UPTIME_MS) == {}
    assert wait_increments({}, {"K": WaitCounts(1, 5, 0)}, -1.0) == {}  # an uptime that is no uptime: nothing fits


@pytest.mark.parametrize("went_down", [WaitCounts(9, 200, 20), WaitCounts(11, 99, 20), WaitCounts(11, 200, 9)])
def test_one_counter_going_down_means_the_wait_statistics_were_cleared(went_down: WaitCounts) -> None:
    """``DBCC SQLPERF('sys.dm_os_wait_stats', CLEAR)``: every type restarted from zero, also one that has grown past
    its old total since (RARE below); the sample has no wait increments, its rate stays."""
    before = {"A": WaitCounts(10, 100, 10), "RARE": WaitCounts(3, 30, 0)}
    after = {"A": went_down, "RARE": WaitCounts(4, 4000, 0)}
    assert wait_increments(before, after, UPTIME_MS) is None
    deltas = compute(base(1000, before), sample(2, 1010, waits=after), GAP)
    assert deltas == Deltas(5.0, 2.0, {}, None)


def test_baseline_json_round_trip_is_compact_and_sorted() -> None:
    baseline = base(5, {"b": WaitCounts(1, 2, 3), "a": WaitCounts(4, 5, 6)})
    assert baseline.waits_json() == '{"a":[4,5,6],"b":[1,2,3]}'
    assert Baseline.parse_waits(baseline.waits_json()) == {"a": WaitCounts(4, 5, 6), "b": WaitCounts(1, 2, 3)}
    assert Baseline.parse_waits("") == {} and Baseline.parse_waits("{}") == {}
    for broken in ("not json", "[1, 2]", '{"a": [1]}', '{"a": ["x", 1, 2]}', '{"a": 5}', "null"):
        assert Baseline.parse_waits(broken) == {}, broken
    assert Baseline.parse_waits('{"7": [1, 2, 3]}') == {"7": WaitCounts(1, 2, 3)}
    of = Baseline.of(sample(4, 77, waits={"x": WaitCounts(1, 1, 1)}))
    assert (of.sqlserver_start_time, of.batch_requests_total) == (START, 77)
    assert of.sample_time == T0 + dt.timedelta(seconds=4) and of.waits == {"x": WaitCounts(1, 1, 1)}


def test_a_restart_at_the_same_instant_has_no_interval() -> None:
    restarted = sample(0, 5, started=START + dt.timedelta(hours=1))
    assert compute(base(1000), restarted, GAP) == Deltas(None, None, {}, "instance restarted")


def checked(seconds: float) -> dt.datetime:
    """This host's clock, ``seconds`` after the baseline's collection started (at T0 too)."""
    return T0 + dt.timedelta(seconds=seconds)


def test_a_server_clock_that_stepped_between_two_samples_gives_no_rate() -> None:
    """The server's elapsed time against this host's: they may differ by the collection timeout (each server time
    lies within its collection) and a second more; beyond that the server's clock stepped."""
    before = base(1000, {"WRITELOG": WaitCounts(1, 10, 0)})
    before = Baseline(before.sqlserver_start_time, before.sample_time, 1000, before.waits, checked_at=T0)
    after = {"WRITELOG": WaitCounts(3, 30, 0)}
    stepped = compute(before, sample(602, 2000, waits=after), GAP, checked(2), collection_timeout=5.0)
    assert stepped == Deltas(None, None, {}, "server clock stepped")
    back = compute(before, sample(0.5, 2000, waits=after), GAP, checked(30), collection_timeout=5.0)
    assert back == Deltas(None, None, {}, "server clock stepped")
    within = compute(before, sample(36, 1036, waits=after), GAP, checked(30), collection_timeout=5.0)
    assert within == Deltas(1.0, 36.0, {"WRITELOG": WaitCounts(2, 20, 0)}, None)
    assert compute(before, sample(36.001, 1036, waits=after), GAP, checked(30), collection_timeout=5.0).rebaselined
    assert compute(before, sample(36.001, 1036), GAP, checked(30), collection_timeout=10.0).rebaselined is None
    no_host_time = compute(base(1000), sample(602, 2000), GAP, checked(2), collection_timeout=5.0)
    assert no_host_time.rebaselined is None  # a baseline of an earlier version: no check
    assert compute(before, sample(602, 2000), GAP).rebaselined is None  # no host time for the sample either


def test_the_newer_baseline_is_the_later_by_this_hosts_clock_where_both_say() -> None:
    early = Baseline(START, T0 + dt.timedelta(hours=1), 5, checked_at=T0)  # the server's clock an hour ahead
    late = Baseline(START, T0, 6, checked_at=T0 + dt.timedelta(seconds=30))  # then set right
    assert late.newer_than(early) and not early.newer_than(late)
    unknown = Baseline(START, T0 + dt.timedelta(hours=1), 5)
    assert unknown.newer_than(late) and not late.newer_than(unknown)  # by the server's clock: no better answer
    assert Baseline.of(sample(1, 5), checked(1)).checked_at == checked(1)


def test_a_wait_type_whose_counters_were_unknown_has_no_increment_in_the_next_sample() -> None:
    """The answer gave WRITELOG with a NULL counter (``Sample.unknown_waits``): the next sample's WRITELOG is its
    whole cumulative count, not one interval's; it becomes the baseline for the one after."""
    first = Sample("s", "16.0", "Windows", START, T0, 10, 20, 50.0, 100, 200, 3, 1000, {"A": WaitCounts(1, 1, 0)},
                   unknown_waits=frozenset({"WRITELOG"}))  # fmt: skip
    previous = Baseline.of(first)
    assert previous.unknown_waits == ("WRITELOG",)
    after = {"A": WaitCounts(2, 3, 0), "WRITELOG": WaitCounts(102, 9_000_002, 10)}
    deltas = compute(previous, sample(2, 1010, waits=after), GAP)
    assert deltas.waits == {"A": WaitCounts(1, 2, 0)}
    later = {"A": WaitCounts(2, 3, 0), "WRITELOG": WaitCounts(103, 9_000_012, 10)}
    assert compute(Baseline.of(sample(2, 1010, waits=after)), sample(4, 1020, waits=later), GAP).waits == {
        "WRITELOG": WaitCounts(1, 10, 0)
    }


def test_a_spooled_baseline_keeps_this_hosts_time_and_its_unknown_waits() -> None:
    from supervisor.children.records import WriteItem
    from supervisor.children.status import StatusUpdate

    baseline = Baseline(START, T0, 5, {"A": WaitCounts(1, 2, 3)}, checked(1), ("WRITELOG",))
    status = StatusUpdate(1, checked(1), "online", False, True, 0, None, None)
    item = WriteItem(1, status, baseline=baseline, row="'x'")
    assert WriteItem.from_json(json.loads(json.dumps(item.to_json()))) == item
