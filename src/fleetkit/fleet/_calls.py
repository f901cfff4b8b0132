"""The fleet's door to its instance group: one call per verb at a time.

The protocol lets a provider assume it is never called concurrently for the
same verb; the fleet's ready-up and heartbeat tasks would otherwise call
``connect_info`` side by side, so each verb goes through its own lock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import anyio

from fleetkit.model import ConnectInfo
from fleetkit.provider import InstanceGroup, InstanceStatus, ProviderInfo

__all__ = ["GroupCalls"]

_T = TypeVar("_T")


class GroupCalls:
    """Serialises calls per verb to one :class:`~fleetkit.provider.InstanceGroup`,
    counting each in ``operations`` (``fleeting_provisioner_internal_operations``)."""

    __slots__ = ("_group", "_locks", "_shut", "operations")

    def __init__(self, group: InstanceGroup, operations: Counter[str] | None = None) -> None:
        self._group = group
        self._locks: dict[str, anyio.Lock] = {}
        self._shut = False
        self.operations: Counter[str] = operations if operations is not None else Counter()

    def _lock(self, verb: str) -> anyio.Lock:
        lock = self._locks.get(verb)
        if lock is None:
            lock = self._locks[verb] = anyio.Lock()
        return lock

    async def _call(self, verb: str, call: Callable[[], Awaitable[_T]]) -> _T:
        async with self._lock(verb):
            try:
                result = await call()
            except Exception:
                self.operations[f"{verb}_failure"] += 1
                raise
            self.operations[verb] += 1
            return result

    async def init(self) -> ProviderInfo:
        """The group's ``init``."""
        return await self._call("init", self._group.init)

    async def update(self) -> Sequence[InstanceStatus]:
        """The group's ``update``."""
        return await self._call("update", self._group.update)

    async def increase(self, n: int) -> int:
        """The group's ``increase``."""
        return await self._call("increase", lambda: self._group.increase(n))

    async def decrease(self, ids: Sequence[str]) -> Sequence[str]:
        """The group's ``decrease``."""
        return await self._call("decrease", lambda: self._group.decrease(ids))

    async def connect_info(self, instance_id: str) -> ConnectInfo:
        """The group's ``connect_info``."""
        return await self._call("connect_info", lambda: self._group.connect_info(instance_id))

    async def heartbeat(self, instance_id: str) -> None:
        """The group's ``heartbeat``."""
        await self._call("heartbeat", lambda: self._group.heartbeat(instance_id))

    async def shutdown(self) -> None:
        """The group's ``shutdown``, at most once."""
        if self._shut:
            return
        self._shut = True
        await self._call("shutdown", self._group.shutdown)
