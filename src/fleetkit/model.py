"""Frozen value types shared by every layer: instance states, connect info, the
fleet snapshot the planner reads, and the limits it plans within.

Times in these types are seconds on the runtime's monotonic clock (anyio's
``current_time()``), passed in by the caller: nothing here reads a clock.
Durations are :class:`Duration` values (seconds as a ``float``); every field
that holds one accepts seconds or a :class:`datetime.timedelta`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime

import attrs

from fleetkit._checks import int_at_least
from fleetkit._duration import (
    Duration,
    DurationLike,
    duration_check,
    to_optional_duration,
)

__all__ = [
    "ConnectInfo",
    "ConnectorConfig",
    "Duration",
    "DurationLike",
    "Instance",
    "InstanceState",
    "Limits",
    "ProviderState",
    "Snapshot",
    "mask_secret",
]


def mask_secret(value: object) -> str:
    """repr for a secret field: says whether it is set, never what it is."""
    return "None" if value is None else "'***'"


class ProviderState(enum.Enum):
    """An instance's state as an instance group reports it (fleeting's states).

    Providers map their cloud's own vocabulary onto these at their edge.
    """

    CREATING = "creating"
    RUNNING = "running"
    DELETING = "deleting"
    DELETED = "deleted"
    TIMEOUT = "timeout"  # never became running; the group gave up on it


class InstanceState(enum.Enum):
    """An instance's lifecycle inside the fleet.

    ``REQUESTED`` (increase issued, not yet seen) -> ``CREATING`` -> ``RUNNING``
    (provider says running, ready-up not done) -> ``READY`` (takes jobs) ->
    ``DRAINING`` (takes no new job; removed when free) -> ``DELETING`` -> ``DELETED``.
    """

    REQUESTED = "requested"
    CREATING = "creating"
    RUNNING = "running"
    READY = "ready"
    DRAINING = "draining"
    DELETING = "deleting"
    DELETED = "deleted"


@attrs.frozen(kw_only=True)
class ConnectorConfig:
    """``[runners.autoscaler.connector_config]``: connector settings given to the
    provider, which copies them into every :class:`ConnectInfo` and fills in what
    it knows (OS, arch, username, generated credentials).

    ``None`` means "not set": the provider or connector default applies.
    ``key_path`` is read by the provider at ``init``; ``password`` is a secret.
    """

    os: str | None = None
    arch: str | None = None
    protocol: str | None = None
    protocol_port: int | None = None
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=mask_secret)
    key_path: str | None = None
    use_static_credentials: bool = False
    keepalive: Duration | None = attrs.field(
        default=None, converter=to_optional_duration, validator=duration_check()
    )
    timeout: Duration | None = attrs.field(
        default=None, converter=to_optional_duration, validator=duration_check()
    )
    use_external_addr: bool = False


@attrs.frozen(kw_only=True)
class ConnectInfo:
    """How to reach one instance: addresses plus the connector settings.

    ``password`` and ``key`` are secrets: their repr is masked.
    ``host_key`` is the instance's public SSH host key (OpenSSH format) when the
    provider knows it; connectors check against it instead of pinning on first use.
    """

    id: str
    internal_addr: str | None = None
    external_addr: str | None = None
    os: str = "linux"
    arch: str = "amd64"
    protocol: str = "ssh"
    protocol_port: int | None = None
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=mask_secret)
    key: bytes | None = attrs.field(default=None, repr=mask_secret)
    use_static_credentials: bool = False
    keepalive: Duration | None = attrs.field(
        default=None, converter=to_optional_duration, validator=duration_check()
    )
    timeout: Duration | None = attrs.field(
        default=None, converter=to_optional_duration, validator=duration_check()
    )
    expires_at: datetime | None = None
    host_key: str | None = None

    @property
    def port(self) -> int:
        """The protocol port, with the protocol's default when unset."""
        if self.protocol_port:
            return self.protocol_port
        return {"ssh": 22, "winrm": 5985, "winrm+https": 5986}.get(self.protocol, 22)

    def address(self, *, use_external: bool = False) -> str:
        """The address to dial: the preferred one, or the other when it is missing."""
        first, second = (
            (self.external_addr, self.internal_addr)
            if use_external
            else (self.internal_addr, self.external_addr)
        )
        addr = first or second
        if not addr:
            raise ValueError(f"instance {self.id!r} has no address")
        return addr


@attrs.frozen(kw_only=True)
class Limits:
    """The fixed limits a fleet plans within (from ``[runners.autoscaler]``).

    ``max_use_count`` and ``max_instances`` use 0 for unlimited.
    ``ready_timeout`` bounds how long an instance may take from request to ready
    (``None``: no bound).
    """

    capacity_per_instance: int = attrs.field(default=1, validator=int_at_least(1))
    max_use_count: int = attrs.field(default=0, validator=int_at_least(0))
    max_instances: int = attrs.field(default=0, validator=int_at_least(0))
    failure_threshold: int = attrs.field(default=3, validator=int_at_least(0))
    ready_timeout: Duration | None = attrs.field(
        default=None, converter=to_optional_duration, validator=duration_check(positive=True)
    )


@attrs.frozen(kw_only=True)
class Instance:
    """One instance as the fleet knows it at a moment.

    ``slots_in_use`` are the slot numbers (0..capacity-1) held by acquisitions.
    ``use_count`` counts acquisitions over the instance's life.
    ``idle_since`` is when its last job ended, or when it became ready if it was
    never used (``None`` until ready).
    ``health_failures`` counts consecutive failed health checks or reports.
    ``owner`` is the fleet id that created it (from state storage or a tag).
    ``drain_reason`` says why the runtime marked it ``DRAINING`` (for the planner's
    removal reason once it is free).
    """

    id: str
    state: InstanceState
    created_at: float
    ready_at: float | None = None
    slots_in_use: frozenset[int] = frozenset()
    use_count: int = 0
    idle_since: float | None = None
    health_failures: int = 0
    owner: str | None = None
    drain_reason: str | None = None

    @property
    def acquired(self) -> int:
        """How many slots are held now."""
        return len(self.slots_in_use)


@attrs.frozen(kw_only=True)
class Snapshot:
    """The whole fleet at one instant, as the planner sees it.

    ``reservations`` are the keys holding a reservation (no job yet);
    ``pending`` the keys waiting in ``acquire`` for a slot, oldest first.
    ``requested`` counts instances asked of the provider and not yet seen.
    """

    instances: tuple[Instance, ...] = ()
    reservations: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()
    requested: int = 0

    def by_id(self) -> Mapping[str, Instance]:
        """The instances keyed by id."""
        return {i.id: i for i in self.instances}
