"""The instance group protocol: fleeting's verbs, async.

A provider creates and deletes instances of one group (an AWS Auto Scaling
group, a set of local sandboxes, ...). fleetkit calls it from one task at a time
per group; a provider need not be safe for concurrent calls to the same verb.

The verbs mirror GitLab fleeting's ``provider.InstanceGroup`` (``Init``,
``Update``, ``Increase``, ``Decrease``, ``ConnectInfo``, ``Heartbeat``,
``Shutdown``), so a fleeting plugin's author recognises every contract.

Construction convention
-----------------------
Every provider class offers a classmethod (see :class:`InstanceGroupFactory`)::

    @classmethod
    def from_config(
        cls,
        plugin_config: Mapping[str, Any],
        connector_config: ConnectorConfig,
        *,
        owner: str | None = None,
    ) -> Self: ...

* ``plugin_config`` is ``[runners.autoscaler.plugin_config]`` as parsed from
  TOML. ``from_config`` validates it without I/O and raises
  :class:`~fleetkit.errors.ConfigError` with one
  :class:`~fleetkit.errors.Problem` per bad key, its path spelled
  ``plugin_config.<key>`` (``plugin_config.name``), saying what was expected.
  Unknown keys are problems too (GitLab's plugins reject them).
* ``connector_config`` is ``[runners.autoscaler.connector_config]``; the
  provider copies it into every :class:`~fleetkit.model.ConnectInfo` and fills
  in what it knows.
* ``owner`` is the fleet's id. The provider stamps it on every instance it
  creates (a cloud tag, a record on disk) and reports it back as
  :attr:`InstanceStatus.owner`, so that a restarted fleet can prove which
  instances are its own.

:func:`fleetkit.provider.load` finds the class by plugin name and calls
``from_config``; a third-party package registers its class under the
entry-point group ``fleetkit.providers``. Where the fleeting plugin writes
``var _ provider.InstanceGroup = (*InstanceGroup)(nil)``, a provider module
writes ``if TYPE_CHECKING: _check: InstanceGroupFactory = MyGroup`` so mypy
enforces both protocols at no runtime cost.

A verb other than ``init`` called before ``init`` raises
:class:`~fleetkit.errors.ProviderError` (not an ``AttributeError`` from a
half-built object). :mod:`fleetkit.testing.conformance` checks every contract
written here against a live provider.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from fleetkit.model import ConnectInfo, ConnectorConfig, ProviderState

__all__ = ["InstanceGroup", "InstanceGroupFactory", "InstanceStatus", "ProviderInfo"]


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

        Called once before any other verb; the other verbs raise
        :class:`~fleetkit.errors.ProviderError` until it has succeeded. Raises
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


class InstanceGroupFactory(Protocol):
    """**Protocol:** what :func:`fleetkit.provider.load` needs of a provider class.

    A provider class satisfies it with a ``from_config`` classmethod; see the
    construction convention in this module's docstring.
    """

    def from_config(
        self,
        plugin_config: Mapping[str, Any],
        connector_config: ConnectorConfig,
        *,
        owner: str | None = None,
    ) -> InstanceGroup:
        """Validate ``plugin_config`` and build an (un-initialised) group.

        Raises :class:`~fleetkit.errors.ConfigError` whose problem paths name
        the offending key as ``plugin_config.<key>``. Does no I/O: connecting
        and creating credentials happen in :meth:`InstanceGroup.init`.
        """
        ...
