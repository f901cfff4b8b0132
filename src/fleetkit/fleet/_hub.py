"""The hub that streams a fleet's events to its subscribers.

Subscribers get a bounded anyio memory stream. Publishing never blocks the
runtime: when a subscriber's buffer is full the event is dropped for that
subscriber and counted in ``dropped``, since a slow dashboard must not stall
slot grants.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from fleetkit.fleet._events import FleetEvent

__all__ = ["EventHub"]


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
