"""Reaching an instance for the fleet: its connect info, and one command on it.

Ready-up (``instance_ready_command``) and heartbeats are the same act: get the
instance's connect info, connect, run a command, and turn whatever goes wrong
into one line of reason. Connect info is cached on the record, refreshed when
its credentials expire (EC2 Instance Connect keys last 60 s), and asked again
for a while when the provider answers :class:`~fleetkit.errors.RetryLater`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import anyio

from fleetkit.connector import Connector
from fleetkit.errors import FleetkitError, InstanceNotFound, RetryLater
from fleetkit.fleet._calls import GroupCalls
from fleetkit.fleet._table import Record
from fleetkit.model import ConnectInfo

__all__ = ["Probe"]

# connect_info answering RetryLater is retried for about half a minute.
_CONNECT_INFO_ATTEMPTS = 7
# Credentials this close to expiry are already treated as expired.
_EXPIRY_MARGIN = timedelta(seconds=5)


class Probe:
    """Connect info and commands for the instances of one fleet.

    ``wall_now`` gives the fleet's wall-clock time, against which credential
    expiry is judged.
    """

    def __init__(
        self,
        calls: GroupCalls,
        connector: Connector | None,
        wall_now: Callable[[], datetime],
    ) -> None:
        self._calls = calls
        self._connector = connector
        self._wall_now = wall_now

    def expired(self, info: ConnectInfo) -> bool:
        """Whether ``info``'s credentials have (nearly) expired."""
        if info.expires_at is None:
            return False
        return info.expires_at - _EXPIRY_MARGIN <= self._wall_now()

    async def connect_info(self, record: Record) -> ConnectInfo:
        """The instance's connect info, from the cache while it is fresh."""
        info = record.info
        if info is not None and not self.expired(info):
            return info
        delay = 0.5
        for attempt in range(1, _CONNECT_INFO_ATTEMPTS + 1):
            try:
                fresh = await self._calls.connect_info(record.id)
            except RetryLater:
                # e.g. AWS: a new instance not yet visible to DescribeInstances.
                if attempt == _CONNECT_INFO_ATTEMPTS:
                    raise
                await anyio.sleep(delay)
                delay = min(delay * 2, 10.0)
            else:
                record.info = fresh
                return fresh
        raise AssertionError("unreachable")

    async def check(self, record: Record, command: str | None, seconds: float) -> str | None:
        """Fetch connect info and run ``command`` (if any) within ``seconds``:
        ``None`` when all went well, else why not."""
        try:
            with anyio.fail_after(seconds):
                info = await self.connect_info(record)
                if not command or self._connector is None:
                    return None
                async with self._connector.connect(info) as conn:
                    result = await conn.run(command, timeout=seconds)
        except InstanceNotFound:
            return "the provider no longer knows it"
        except FleetkitError as exc:  # before TimeoutError: ConnectTimeout is both
            return f"{type(exc).__name__}: {exc}"
        except TimeoutError:
            return f"no answer within {seconds:.0f}s"
        if result.exit_code != 0:
            return f"command exited with {result.exit_code}"
        return None
