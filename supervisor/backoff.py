"""Restart delays: exponential with jitter, capped, reset after a healthy run."""

from __future__ import annotations

import random

#: A child that ran at least this long before exiting is considered healthy: its backoff starts over.
HEALTHY_RUN_SECONDS = 60.0


class Backoff:
    """Delay n is drawn from [d/2, d] with d = min(cap, base * 2**n) ("equal jitter").

    The lower half is fixed so delays never shrink while failures continue; the random half spreads
    restarts of many tenants that failed at the same moment (e.g. a shared tenant DB server).
    """

    def __init__(self, base: float = 1.0, cap: float = 300.0, rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * 2.0**self.failures)
        self.failures += 1
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.failures = 0


def crash_backoff() -> Backoff:
    return Backoff(base=1.0, cap=300.0)


def config_error_backoff() -> Backoff:
    """A tenant whose configuration is unusable is retried slowly: a human has to fix something."""
    return Backoff(base=60.0, cap=300.0)
