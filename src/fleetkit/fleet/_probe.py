"""Reaching an instance for the fleet: its connect info, and checks on it.

Ready-up (``instance_ready_command``) and heartbeats are the same act: get the
instance's connect info, connect, run a command, and turn whatever goes wrong
into one line of reason. A heartbeat also calls the provider's ``heartbeat``
verb first when the provider declares it. Connect info is cached per instance,
refreshed when its credentials expire (EC2 Instance Connect keys last 60 s),
and asked again for a while when the provider answers
:class:`~fleetkit.errors.RetryLater`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Protocol

import anyio

from fleetkit.connector import Connector
from fleetkit.errors import FleetkitError, InstanceNotFound, RetryLater
from fleetkit.fleet._calls import GroupCalls
from fleetkit.model import ConnectInfo

__all__ = ["Probe", "ReadyCheck"]

# connect_info answering RetryLater is retried for about half a minute.
_CONNECT_INFO_ATTEMPTS = 7
# Credentials this close to expiry are already treated as expired.
_EXPIRY_MARGIN = timedelta(seconds=5)


class ReadyCheck(Protocol):
    """**Protocol:** one more ready-up step, run after ``instance_ready_command``.

    Called with the instance's connect info; returns ``None`` when the instance
    is ready, else a one-line reason why not (the instance is then removed, as
    after a failed ready command). For example "ready only when its nesting
    daemon answers".
    """

    def __call__(self, info: ConnectInfo) -> Awaitable[str | None]: ...


class Probe:
    """Connect info and checks for the instances of one fleet.

    ``wall_now`` gives the fleet's wall-clock time, against which credential
    expiry is judged. ``verb``: heartbeats call the provider's ``heartbeat``.
    """

    def __init__(
        self,
        calls: GroupCalls,
        connector: Connector | None,
        wall_now: Callable[[], datetime],
        *,
        ready_check: ReadyCheck | None = None,
    ) -> None:
        self._calls = calls
        self._connector = connector
        self._wall_now = wall_now
        self._ready_check = ready_check
        self._infos: dict[str, ConnectInfo] = {}
        self.verb = False

    def cached(self, instance_id: str) -> ConnectInfo | None:
        """The connect info last fetched for the instance, if any."""
        return self._infos.get(instance_id)

    def forget(self, instance_id: str) -> None:
        """The instance is gone: drop its connect info."""
        self._infos.pop(instance_id, None)

    def expired(self, info: ConnectInfo) -> bool:
        """Whether ``info``'s credentials have (nearly) expired."""
        if info.expires_at is None:
            return False
        return info.expires_at - _EXPIRY_MARGIN <= self._wall_now()

    async def connect_info(self, instance_id: str) -> ConnectInfo:
        """The instance's connect info, from the cache while it is fresh."""
        info = self._infos.get(instance_id)
        if info is not None and not self.expired(info):
            return info
        delay = 0.5
        for attempt in range(1, _CONNECT_INFO_ATTEMPTS + 1):
            try:
                fresh = await self._calls.connect_info(instance_id)
            except RetryLater:
                # e.g. AWS: a new instance not yet visible to DescribeInstances.
                if attempt == _CONNECT_INFO_ATTEMPTS:
                    raise
                await anyio.sleep(delay)
                delay = min(delay * 2, 10.0)
            else:
                self._infos[instance_id] = fresh
                return fresh
        raise AssertionError("unreachable")

    async def ready_up(self, instance_id: str, command: str | None, seconds: float) -> str | None:
        """Ready-up: connect info, ``command`` (if any), then the ready check (if
        any), within ``seconds``: ``None`` when all went well, else why not."""
        return await self._check(instance_id, command, seconds, verb=False, extra=True)

    async def heartbeat(self, instance_id: str, command: str, seconds: float) -> str | None:
        """A heartbeat within ``seconds``: the provider's verb where it has one,
        and ``command`` over the connector where the fleet has one."""
        return await self._check(instance_id, command, seconds, verb=self.verb, extra=False)

    async def _check(
        self, instance_id: str, command: str | None, seconds: float, *, verb: bool, extra: bool
    ) -> str | None:
        try:
            with anyio.fail_after(seconds):
                if verb:
                    await self._calls.heartbeat(instance_id)
                info = await self.connect_info(instance_id)
                if command and self._connector is not None:
                    async with self._connector.connect(info) as conn:
                        result = await conn.run(command, timeout=seconds)
                    if result.exit_code != 0:
                        return f"command exited with {result.exit_code}"
                if extra and self._ready_check is not None:
                    return await self._ready_check(info)
        except InstanceNotFound:
            return "the provider no longer knows it"
        except FleetkitError as exc:  # before TimeoutError: ConnectTimeout is both
            return f"{type(exc).__name__}: {exc}"
        except TimeoutError:
            return f"no answer within {seconds:.0f}s"
        return None
