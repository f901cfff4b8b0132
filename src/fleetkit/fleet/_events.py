"""What happens in a fleet, as frozen event values, and the hub that streams them.

Subscribers get a bounded anyio memory stream. Publishing never blocks the
runtime: when a subscriber's buffer is full the event is dropped for that
subscriber and counted in ``dropped``, since a slow dashboard must not stall
slot grants.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from fleetkit.planner import Plan

__all__ = [
    "EventHub",
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


class EventHub:
    """Fans events out to subscribers without ever blocking the publisher."""

    __slots__ = ("_subscribers", "dropped")

    def __init__(self) -> None:
        self._subscribers: list[MemoryObjectSendStream[FleetEvent]] = []
        self.dropped = 0

    @property
    def active(self) -> bool:
        """Whether anyone is listening (publishers may skip building events)."""
        return bool(self._subscribers)

    def publish(self, event: FleetEvent) -> None:
        """Offer ``event`` to every subscriber; drop it where a buffer is full."""
        for send in tuple(self._subscribers):
            try:
                send.send_nowait(event)
            except anyio.WouldBlock:
                self.dropped += 1
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._subscribers.remove(send)

    @asynccontextmanager
    async def subscribe(
        self, max_buffer: int = 1000
    ) -> AsyncIterator[MemoryObjectReceiveStream[FleetEvent]]:
        """A stream of the events published while the context is open."""
        send, receive = anyio.create_memory_object_stream[FleetEvent](max_buffer)
        self._subscribers.append(send)
        try:
            async with receive:
                yield receive
        finally:
            if send in self._subscribers:
                self._subscribers.remove(send)
            send.close()

    def close(self) -> None:
        """End every subscriber's stream (their iteration stops)."""
        for send in self._subscribers:
            send.close()
        self._subscribers.clear()
