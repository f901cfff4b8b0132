"""Auto Scaling lifecycle states mapped onto :class:`~fleetkit.model.ProviderState`.

The table follows the Auto Scaling lifecycle (AWS docs, "Amazon EC2 Auto
Scaling instance lifecycle"): Pending (and its lifecycle-hook waits) is
creating; InService is running; Standby is running too (an operator set it
aside, it still exists and only InService can enter it); Terminating and
Detaching (and their hook waits) are deleting; Terminated and Detached are
deleted. ``Warmed:*`` states belong to a warm pool; they only show up in the
group's instance list while moving into it, so they count as creating unless
they are on their way out.
"""

from __future__ import annotations

from fleetkit.model import ProviderState

__all__ = ["forward", "map_lifecycle"]

_EXACT = {
    "InService": ProviderState.RUNNING,
    "Standby": ProviderState.RUNNING,
    "EnteringStandby": ProviderState.RUNNING,
    "Terminated": ProviderState.DELETED,
    "Detached": ProviderState.DELETED,
    "Warmed:Terminated": ProviderState.DELETED,
}
_PREFIXES = (
    ("Pending", ProviderState.CREATING),
    ("Terminating", ProviderState.DELETING),
    ("Detaching", ProviderState.DELETING),
    ("Warmed:Terminating", ProviderState.DELETING),
    ("Warmed:", ProviderState.CREATING),
)
_RANK = {
    ProviderState.CREATING: 0,
    ProviderState.RUNNING: 1,
    ProviderState.DELETING: 2,
    ProviderState.DELETED: 3,
    ProviderState.TIMEOUT: 3,
}


def map_lifecycle(lifecycle: str, health: str = "Healthy") -> ProviderState | None:
    """The fleetkit state for an Auto Scaling ``LifecycleState`` (``None``: unknown).

    An InService instance the group marked ``Unhealthy`` is about to be
    terminated and replaced by Auto Scaling, so it counts as deleting: the
    fleet must not hand it a job.
    """
    state = _EXACT.get(lifecycle)
    if state is None:
        for prefix, candidate in _PREFIXES:
            if lifecycle.startswith(prefix):
                state = candidate
                break
    if state is ProviderState.RUNNING and health == "Unhealthy":
        return ProviderState.DELETING
    return state


def forward(previous: ProviderState | None, new: ProviderState) -> ProviderState:
    """``new``, unless it would move the instance back from ``previous``.

    Reported states only move forward (the protocol's contract); AWS's
    answers can lag (eventual consistency), so an older view never wins.
    """
    if previous is not None and _RANK[new] < _RANK[previous]:
        return previous
    return new
