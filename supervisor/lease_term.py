"""How long a tenant's lease runs: the parents write leases by it, and a child whose parent does not run stops
before it could run out (``children.parent_watch``)."""

from __future__ import annotations

#: While other instances are live, a lease runs this much less than ``lease_duration`` (at most a tenth of it): the
#: time one of them needs to see it ran out, claim the tenant, start its child and catch its servers up, so that a
#: dead instance's tenants collect again within ``lease_duration`` of its death, even right after a renewal.
TAKEOVER_ALLOWANCE = 3.0


def shared_term(lease_duration: float) -> float:
    """How long a lease runs from its renewal while other instances are live (and how recent a heartbeat is live)."""
    return lease_duration - min(TAKEOVER_ALLOWANCE, lease_duration / 10)
