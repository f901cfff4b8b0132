"""The provider state of an instance whose life is a schedule of instants, as
the simulated groups (the test double and the simulator's cloud) keep it."""

from __future__ import annotations

from fleetkit.model import ProviderState

__all__ = ["scheduled_state"]


def scheduled_state(
    now: float, *, running_at: float, delete_at: float, gone_at: float
) -> ProviderState:
    """The state at ``now`` of an instance that runs from ``running_at``, whose
    deletion was accepted at ``delete_at`` and which is gone (deleted, or died)
    from ``gone_at``; an instant not reached is ``math.inf``."""
    if now >= gone_at:
        return ProviderState.DELETED
    if now >= delete_at:
        return ProviderState.DELETING
    if now >= running_at:
        return ProviderState.RUNNING
    return ProviderState.CREATING
