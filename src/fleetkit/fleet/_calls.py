"""The fleet's door to its instance group: one call per verb at a time.

The protocol lets a provider assume it is never called concurrently for the
same verb; the fleet's ready-up and heartbeat tasks would otherwise call
``connect_info`` side by side, so each verb goes through its own lock.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio

from fleetkit.model import ConnectInfo
from fleetkit.provider import InstanceGroup, InstanceStatus, ProviderInfo

__all__ = ["GroupCalls"]


class GroupCalls:
    """Serialises calls per verb to one :class:`~fleetkit.provider.InstanceGroup`."""

    __slots__ = ("_group", "_locks", "_shut")

    def __init__(self, group: InstanceGroup) -> None:
        self._group = group
        self._locks: dict[str, anyio.Lock] = {}
        self._shut = False

    def _lock(self, verb: str) -> anyio.Lock:
        lock = self._locks.get(verb)
        if lock is None:
            lock = self._locks[verb] = anyio.Lock()
        return lock

    async def init(self) -> ProviderInfo:
        """The group's ``init``."""
        async with self._lock("init"):
            return await self._group.init()

    async def update(self) -> Sequence[InstanceStatus]:
        """The group's ``update``."""
        async with self._lock("update"):
            return await self._group.update()

    async def increase(self, n: int) -> int:
        """The group's ``increase``."""
        async with self._lock("increase"):
            return await self._group.increase(n)

    async def decrease(self, ids: Sequence[str]) -> Sequence[str]:
        """The group's ``decrease``."""
        async with self._lock("decrease"):
            return await self._group.decrease(ids)

    async def connect_info(self, instance_id: str) -> ConnectInfo:
        """The group's ``connect_info``."""
        async with self._lock("connect_info"):
            return await self._group.connect_info(instance_id)

    async def heartbeat(self, instance_id: str) -> None:
        """The group's ``heartbeat``."""
        async with self._lock("heartbeat"):
            await self._group.heartbeat(instance_id)

    async def shutdown(self) -> None:
        """The group's ``shutdown``, at most once."""
        if self._shut:
            return
        self._shut = True
        async with self._lock("shutdown"):
            await self._group.shutdown()
