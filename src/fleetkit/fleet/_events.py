"""What happens in a fleet, as frozen event values.

The fleet state (:mod:`fleetkit.fleet._state`) returns these among its effects;
the driver hands them to :class:`~fleetkit.fleet._hub.EventHub`.
"""

from __future__ import annotations

import attrs

from fleetkit.planner import Plan

__all__ = [
    "FleetEvent",
    "InstanceDeleted",
    "InstanceDraining",
    "InstanceFailed",
    "InstanceReady",
    "InstanceRunning",
    "InstanceSeen",
    "InstancesRequested",
    "PlanMade",
    "SlotAcquired",
    "SlotReleased",
]


@attrs.frozen
class InstancesRequested:
    """``increase(asked)`` was called and the provider accepted ``accepted``."""

    at: float
    asked: int
    accepted: int


@attrs.frozen
class InstanceSeen:
    """The provider reported a new instance (creating or running)."""

    at: float
    instance_id: str


@attrs.frozen
class InstanceRunning:
    """The provider reports the instance running; ready-up starts."""

    at: float
    instance_id: str


@attrs.frozen
class InstanceReady:
    """Ready-up succeeded: the instance takes work."""

    at: float
    instance_id: str


@attrs.frozen
class SlotAcquired:
    """Acquisition ``key`` holds slot ``slot`` of the instance."""

    at: float
    key: str
    instance_id: str
    slot: int


@attrs.frozen
class SlotReleased:
    """Acquisition ``key`` gave its slot back; ``failed`` if it reported a failure."""

    at: float
    key: str
    instance_id: str
    slot: int
    failed: bool


@attrs.frozen
class InstanceDraining:
    """The instance takes no new work and will be deleted, for ``reason``."""

    at: float
    instance_id: str
    reason: str


@attrs.frozen
class InstanceDeleted:
    """The instance is gone; ``expected`` is false when the fleet did not delete it."""

    at: float
    instance_id: str
    expected: bool


@attrs.frozen
class InstanceFailed:
    """Something failed about the instance (ready-up, heartbeat, a user report)."""

    at: float
    instance_id: str
    reason: str


@attrs.frozen
class PlanMade:
    """A plan that changed something, with every decision's reason in ``plan``."""

    at: float
    plan: Plan


FleetEvent = (
    InstancesRequested
    | InstanceSeen
    | InstanceRunning
    | InstanceReady
    | SlotAcquired
    | SlotReleased
    | InstanceDraining
    | InstanceDeleted
    | InstanceFailed
    | PlanMade
)
