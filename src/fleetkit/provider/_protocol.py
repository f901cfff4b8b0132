"""The instance group protocol: fleeting's verbs, async.

A provider creates and deletes instances of one group (an AWS Auto Scaling
group, a set of local sandboxes, ...). fleetkit calls it from one task at a time
per group; a provider need not be safe for concurrent calls to the same verb.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import attrs

from fleetkit.model import ConnectInfo, ProviderState

__all__ = ["InstanceGroup", "InstanceStatus", "ProviderInfo"]


@attrs.frozen(kw_only=True)
class ProviderInfo:
    """What :meth:`InstanceGroup.init` reports about the group.

    ``max_size`` is the group's own limit on instances (the fleet never asks for
    more); ``capabilities`` names optional features (e.g. ``"heartbeat"``).
    """

    id: str
    max_size: int
    version: str = "0"
    capabilities: frozenset[str] = frozenset()


@attrs.frozen(kw_only=True)
class InstanceStatus:
    """One instance as :meth:`InstanceGroup.update` reports it.

    ``owner`` is the owner tag the provider stamped on the instance when it
    created it (``None`` when the instance carries none): the runtime adopts an
    instance at start only when ownership is proven.
    """

    id: str
    state: ProviderState
    owner: str | None = None


@runtime_checkable
class InstanceGroup(Protocol):
    """**Protocol:** a group of instances that can grow and shrink.

    Implementations translate their cloud's errors into :mod:`fleetkit.errors`
    (:class:`~fleetkit.errors.RetryLater`, :class:`~fleetkit.errors.Throttled`,
    :class:`~fleetkit.errors.QuotaExceeded`, :class:`~fleetkit.errors.InstanceNotFound`)
    and their cloud's state names into :class:`~fleetkit.model.ProviderState`.
    """

    async def init(self) -> ProviderInfo:
        """Validate configuration, prepare credentials, and describe the group.

        Called once before any other verb. Raises
        :class:`~fleetkit.errors.ConfigError` for a bad plugin config.
        """
        ...

    async def update(self) -> Sequence[InstanceStatus]:
        """Report every instance the group knows, each exactly once.

        An instance's state only moves forward (creating -> running -> deleting
        -> deleted; timeout is final). Instances that are gone may be reported
        as ``DELETED`` once or simply no longer reported. Raises
        :class:`~fleetkit.errors.RetryLater` when the state could not be read;
        the caller keeps the previous view.
        """
        ...

    async def increase(self, n: int) -> int:
        """Ask for ``n`` (>= 1) more instances; return how many were accepted.

        Partial success is normal: a return below ``n`` (even 0) is not an
        error. Never exceeds the group's ``max_size``. New instances show up in
        later :meth:`update` calls. Raises only when nothing was accepted.
        """
        ...

    async def decrease(self, ids: Sequence[str]) -> Sequence[str]:
        """Delete the given instances; return the ids accepted for deletion.

        Idempotent: an id that is already gone (or being deleted) counts as
        removed and is returned. Ids the group refuses are left out of the
        result; the caller retries them later.
        """
        ...

    async def connect_info(self, instance_id: str) -> ConnectInfo:
        """How to reach a running instance: addresses and connector settings.

        Raises :class:`~fleetkit.errors.InstanceNotFound` for an unknown id.
        """
        ...

    async def heartbeat(self, instance_id: str) -> None:
        """Check with the cloud that the instance is still alive (may be a no-op).

        Raises :class:`~fleetkit.errors.InstanceNotFound` when it is gone.
        """
        ...

    async def shutdown(self) -> None:
        """Release provider-side resources (keys, clients). Deletes no instance.

        Called once, last; idempotent.
        """
        ...
