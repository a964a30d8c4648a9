"""Restart delays: equal jitter between half the ceiling and the ceiling, the ceiling doubling up to the cap."""

from __future__ import annotations

import random

import pytest

from supervisor.backoff import Backoff, config_error_backoff, crash_backoff
from tests.unit.fakes import EdgeRandom

CAP = 300.0


def ceiling(base: float, n: int, cap: float = CAP) -> float:
    return min(cap, base * 2.0**n)


@pytest.mark.parametrize("seed", range(5))
def test_delay_n_lies_between_half_the_ceiling_and_the_ceiling(seed: int) -> None:
    backoff = Backoff(base=1.0, cap=CAP, rng=random.Random(seed))
    for n in range(14):
        top = ceiling(1.0, n)
        assert top / 2 <= backoff.next_delay() <= top, n
    assert backoff.failures == 14


def test_the_bounds_are_reached_exactly() -> None:
    lowest = Backoff(base=1.0, cap=CAP, rng=EdgeRandom(high=False))
    highest = Backoff(base=1.0, cap=CAP, rng=EdgeRandom(high=True))
    assert [lowest.next_delay() for _ in range(11)] == [0.5, 1, 2, 4, 8, 16, 32, 64, 128, 150, 150]
    assert [highest.next_delay() for _ in range(11)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]


def test_once_capped_every_delay_stays_in_the_upper_band() -> None:
    backoff = Backoff(base=1.0, cap=CAP, rng=random.Random(3))
    for _ in range(9):  # 2**9 = 512 > 300: capped from the tenth failure on
        backoff.next_delay()
    capped = [backoff.next_delay() for _ in range(200)]
    assert all(CAP / 2 <= delay <= CAP for delay in capped)
    assert max(capped) - min(capped) > CAP / 4  # jittered, not one fixed value


def test_the_jitter_spreads_tenants_that_failed_together() -> None:
    first_delays = [Backoff(rng=random.Random(seed)).next_delay() for seed in range(50)]
    assert len(set(first_delays)) == 50
    assert min(first_delays) < 0.6 and max(first_delays) > 0.9


def test_a_seeded_backoff_is_reproducible() -> None:
    one, two = Backoff(rng=random.Random(42)), Backoff(rng=random.Random(42))
    assert [one.next_delay() for _ in range(8)] == [two.next_delay() for _ in range(8)]


def test_reset_starts_over() -> None:
    backoff = Backoff(base=1.0, cap=CAP, rng=random.Random(1))
    for _ in range(6):
        backoff.next_delay()
    backoff.reset()
    assert backoff.failures == 0
    assert 0.5 <= backoff.next_delay() <= 1.0
    assert 1.0 <= backoff.next_delay() <= 2.0


def test_the_two_restart_policies() -> None:
    crash, config = crash_backoff(), config_error_backoff()
    assert (crash.base, crash.cap) == (1.0, CAP)
    assert (config.base, config.cap) == (60.0, CAP)
    assert 30.0 <= config.next_delay() <= 60.0
    assert 60.0 <= config.next_delay() <= 120.0
    assert 120.0 <= config.next_delay() <= 240.0
    assert 150.0 <= config.next_delay() <= 300.0  # 480 capped
