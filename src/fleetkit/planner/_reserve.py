"""Whether a reservation can be granted now (taskscaler's ``Reserve``, spec §2.3).

Reading of GitLab's rules, where the sources leave room:

* *Preemptive* mode (``Policy.preemptive``): a reservation needs a slot a job
  could take now: idle slots (ready, healthy, uses left) minus the reservations
  and pending acquisitions already counting on them must be above zero.
* *Non-preemptive* mode: a reservation needs *potential* capacity:
  ``max_instances * capacity_per_instance - acquired - reserved - pending > 0``;
  always granted when ``max_instances`` is 0 (unlimited). The job then waits in
  ``acquire`` while the planner provisions.
* *Reservation throttling* (on by default, as in GitLab Runner since ts!60):
  while idle slots exist, outstanding reservations are capped at
  ``idle - capacity_per_instance`` so long-polling job requests cannot pin every
  idle instance and stop it from expiring (gitlab-runner#39161). Our reading
  floors that cap at one: a fleet whose idle capacity is one instance or less
  still takes one reservation at a time instead of none, which would make a
  preemptive fleet with ``idle_count <= capacity_per_instance`` unable to ever
  ask for work.
"""

from __future__ import annotations

import attrs

from fleetkit.model import Limits, Snapshot
from fleetkit.planner._accounting import count_instances
from fleetkit.policy import Policy

__all__ = ["ReserveDecision", "can_reserve"]


@attrs.frozen
class ReserveDecision:
    """The answer to "may one more key reserve now?", with the reason as text."""

    granted: bool
    reason: str

    def __bool__(self) -> bool:
        return self.granted


def can_reserve(
    snapshot: Snapshot, policy: Policy, limits: Limits, *, throttling: bool = True
) -> ReserveDecision:
    """Decide whether one more reservation fits, per the policy's mode and the limits."""
    cap = limits.capacity_per_instance
    idle, unready, unavailable, unhealthy, acquired = count_instances(
        snapshot.instances, limits, snapshot.requested
    )
    reserved = len(snapshot.reservations)
    pending = len(snapshot.pending)
    counts = (
        f"idle:{idle},reserved:{reserved},pending:{pending},acquired:{acquired},"
        f"unavailable:{unavailable},unhealthy:{unhealthy},unready:{unready}"
    )
    if throttling and idle > 0:
        allowed = max(idle - cap, 1)
        if reserved >= allowed:
            return ReserveDecision(
                False, f"reservation throttled: {reserved} of at most {allowed} ({counts})"
            )
    if policy.preemptive:
        available = idle - reserved - pending
        if available <= 0:
            return ReserveDecision(False, f"no immediately available capacity ({counts})")
        return ReserveDecision(True, f"available capacity {available} ({counts})")
    if not limits.max_instances:
        return ReserveDecision(True, f"potential capacity unlimited ({counts})")
    potential = limits.max_instances * cap - acquired - reserved - pending
    if potential <= 0:
        return ReserveDecision(False, f"no potential capacity within max_instances ({counts})")
    return ReserveDecision(True, f"potential capacity {potential} ({counts})")
