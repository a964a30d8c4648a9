"""How instances share the active tenants (pure): each one's share, what it gives back, what it claims.

Instances split the active tenants by **weight**, not by count: a tenant weighs its collection-enabled
servers (``tenant_leases.servers``, written by the instance whose child reports them in its heartbeats; at
least 1), a tenant nobody has run yet the mean of the known weights (1 when none is known). With S = total
weight / live instances, each poll of an instance (one view of the lease table):

- **gives back** while it holds more than S, one tenant at a time, a tenant t only if its load minus w(t)
  stays above the least loaded other instance's load (so the move narrows the gap between the two by more
  than nothing: a balance within one tenant's weight of the least loaded instance is left alone); it gives
  back first tenants with no child running here, then the largest that leaves it at or above S, else the
  smallest that qualifies; each one is counted as landing on the least loaded other instance;
- **claims** free tenants heaviest first, each one that fits (load + w ≤ S) or while it is the least loaded
  live instance (load ≤ every other's), so a tenant heavier than any share still gets an owner and no free
  tenant is left to nobody.

Stable: a tenant given back is one its instance would not claim again (it neither fits nor is that
instance the least loaded), and whoever takes it ends nearer the giver than the gap was, so every move
lowers the sum of squared loads: moves stop. Children already running are kept first.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass


def tenant_weights(reported: Mapping[int, int | None]) -> dict[int, int]:
    """Each tenant's weight: its reported servers (at least 1), or the mean of the known ones when never reported."""
    known = [max(1, servers) for servers in reported.values() if servers is not None]
    default = max(1, round(sum(known) / len(known))) if known else 1
    return {tenant_id: default if servers is None else max(1, servers) for tenant_id, servers in reported.items()}


@dataclass(frozen=True)
class View:
    """One instance's view of the active tenants' leases."""

    me: str
    weights: Mapping[int, int]  # every active tenant's weight
    owners: Mapping[int, str | None]  # every active tenant's live owner (None: free to claim)
    live: int  # live instances, this one included

    @property
    def mine(self) -> set[int]:
        return {tenant_id for tenant_id, owner in self.owners.items() if owner == self.me}

    @property
    def free(self) -> set[int]:
        return {tenant_id for tenant_id, owner in self.owners.items() if owner is None}

    def other_loads(self) -> list[int]:
        """The weight each other live instance holds, lightest first; 0 for live ones that hold nothing."""
        loads: dict[str, int] = {}
        for tenant_id, owner in self.owners.items():
            if owner is not None and owner != self.me:
                loads[owner] = loads.get(owner, 0) + self.weights[tenant_id]
        idle = max(0, self.live - 1 - len(loads))
        return sorted([*loads.values(), *[0] * idle])

    def share(self) -> float:
        instances = max(self.live, 1 + len({o for o in self.owners.values() if o is not None and o != self.me}))
        return sum(self.weights.values()) / instances


def plan_release(
    held: Collection[int],
    weights: Mapping[int, int],
    running: Collection[int],
    share: float,
    others: Sequence[int],
    kept: Collection[int] = (),
) -> tuple[set[int], list[int]]:
    """The tenants to give back, and the other instances' loads once each has landed on the least loaded; ``kept``
    are never given back (another instance refused them: it would not take them)."""
    load = sum(weights[t] for t in held)
    heap = list(others)
    heapq.heapify(heap)
    release: set[int] = set()
    while load > share and heap:
        lowest = heap[0]
        movable = [t for t in held if t not in release and t not in kept and weights[t] < load - lowest]
        idle = [t for t in movable if t not in running]
        pool = idle or movable
        if not pool:
            break
        fitting = [t for t in pool if weights[t] <= load - share]
        # The largest that leaves this instance at or above its share, else the smallest that still narrows the gap;
        # ties go to the higher tenant id (the lower ids stay, as a lone instance's first claims).
        pick = max(fitting, key=lambda t: (weights[t], t)) if fitting else min(pool, key=lambda t: (weights[t], -t))
        release.add(pick)
        load -= weights[pick]
        heapq.heapreplace(heap, lowest + weights[pick])
    return release, sorted(heap)


def wants(load: int, weight: int, share: float, others: Sequence[int]) -> bool:
    """Whether an instance holding ``load`` claims a free tenant of ``weight``: it fits, or this is the least loaded."""
    return load + weight <= share or all(load <= other for other in others)


def claim_order(free: Iterable[int], weights: Mapping[int, int]) -> list[int]:
    """Free tenants heaviest first (then by id)."""
    return sorted(free, key=lambda t: (-weights[t], t))
