"""The simulated cloud the replay runs on: boot times, faults, and a ledger.

:class:`CloudGroup` is an :class:`~fleetkit.provider.InstanceGroup` in anyio
time with seeded boot times (:class:`~fleetkit.simulate.BootTime`) and the
faults that matter for cost and wait (:class:`CloudFaults`): creations that
fail, instances that never become ready, instances lost mid-job (spot
reclaims). It keeps every instance's :class:`Life` (requested, running, gone),
which is what the cloud bills, for the figures afterwards. Instances are
dropped from the live table once reported gone, so a week of churn costs each
``update`` only the instances alive now.

:class:`ReadyUp` stands in for the ready command: it takes a fixed time and
fails with a seeded probability (taskscaler#26's failing ready command).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import anyio
import attrs
from anyio.lowlevel import checkpoint

from fleetkit.errors import InstanceNotFound
from fleetkit.model import ConnectInfo, ProviderState
from fleetkit.provider import InstanceStatus, ProviderInfo
from fleetkit.provider._timeline import scheduled_state
from fleetkit.simulate._boot import BootTime

__all__ = ["CloudFaults", "CloudGroup", "Life", "ReadyUp"]


def _probability(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be within [0, 1], got {value}")


def _rate(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"{attribute.name} must be a number >= 0, got {value}")


@attrs.frozen(kw_only=True)
class CloudFaults:
    """What goes wrong in the simulated cloud (0 = never).

    * ``create_failure``: share of new instances that fail while creating (they
      vanish after their boot time, never running);
    * ``never_ready``: share that stay creating for ever (the fleet removes
      them after its ``ready_timeout``);
    * ``spot_loss_per_hour``: rate at which a running instance is reclaimed, per
      instance-hour (exponential lifetimes: 0.05 loses one in twenty each hour);
    * ``ready_failure``: share of ``instance_ready_command`` runs that fail;
    * ``ready_time``: seconds the ready command takes;
    * ``deletion``: seconds from an accepted delete to the instance gone (billed).
    """

    create_failure: float = attrs.field(default=0.0, validator=_probability)
    never_ready: float = attrs.field(default=0.0, validator=_probability)
    spot_loss_per_hour: float = attrs.field(default=0.0, validator=_rate)
    ready_failure: float = attrs.field(default=0.0, validator=_probability)
    ready_time: float = attrs.field(default=0.0, validator=_rate)
    deletion: float = attrs.field(default=10.0, validator=_rate)


@attrs.define(slots=True)
class Life:
    """One instance's timeline in seconds of loop time (``inf``: never)."""

    id: str
    requested_at: float
    running_at: float
    gone_at: float  # failed creation or spot loss: the cloud removes it
    delete_at: float = math.inf
    deleted_at: float = math.inf
    preloaded: bool = False
    reported_gone: bool = False

    @property
    def ended_at(self) -> float:
        """When the instance stopped existing (and costing)."""
        return min(self.gone_at, self.deleted_at)

    @property
    def lost(self) -> bool:
        """Whether the cloud took it away (not a delete the fleet asked for)."""
        return self.gone_at < self.deleted_at

    def next_change(self, now: float) -> float:
        """When the state reported at ``now`` next changes (``inf``: never)."""
        # Explicit tests: this runs for every live instance on most polls.
        change = math.inf
        if now < self.running_at < change:
            change = self.running_at
        if now < self.gone_at < change:
            change = self.gone_at
        if now < self.delete_at < change:
            change = self.delete_at
        if now < self.deleted_at < change:
            change = self.deleted_at
        return change

    def state(self, now: float) -> ProviderState:
        return scheduled_state(
            now,
            running_at=self.running_at,
            delete_at=self.delete_at,
            gone_at=min(self.gone_at, self.deleted_at),
        )


class CloudGroup:
    """A seeded simulated instance group that records each instance's :class:`Life`.

    ``max_size`` bounds instances alive at once (0: unbounded). ``owner`` is the
    tag stamped on every instance, so a fleet with the same ``owner_id`` adopts
    the ones :meth:`preload` puts there before it starts.
    """

    def __init__(
        self,
        boot: BootTime,
        *,
        faults: CloudFaults = CloudFaults(),
        seed: int = 0,
        max_size: int = 0,
        owner: str = "simulate",
    ) -> None:
        self.boot = boot
        self.faults = faults
        self.max_size = max_size
        self.owner = owner
        self.lives: list[Life] = []
        self.by_id: dict[str, Life] = {}
        self._live: dict[str, Life] = {}
        self._statuses: dict[str, InstanceStatus] = {}
        self._report: tuple[InstanceStatus, ...] | None = None  # the last, while it holds
        self._report_until = 0.0
        # One stream per purpose: changing a fault rate leaves the boot draws alone.
        self._boot_rng = random.Random(f"{seed}-boot")
        self._fault_rng = random.Random(f"{seed}-faults")
        self._next = 0

    def __repr__(self) -> str:
        return f"CloudGroup(boot={self.boot}, live={len(self._live)}, made={len(self.lives)})"

    def preload(self, n: int) -> None:
        """Put ``n`` running instances in the group before a fleet starts (warm start)."""
        now = anyio.current_time()
        for _ in range(n):
            life = self._new(now, running_at=now)
            life.preloaded = True

    def _new(self, now: float, *, running_at: float) -> Life:
        self._next += 1
        life = Life(f"vm-{self._next:06d}", now, running_at, math.inf)
        self.lives.append(life)
        self.by_id[life.id] = life
        self._report = None
        self._live[life.id] = life
        return life

    def _alive_now(self, now: float) -> int:
        return sum(
            1 for life in self._live.values() if life.state(now) is not ProviderState.DELETED
        )

    # --- the InstanceGroup verbs --------------------------------------------

    async def init(self) -> ProviderInfo:
        """Describe the group."""
        return ProviderInfo(
            id=f"simulate/{self.owner}",
            max_size=self.max_size,
            version="1",
            capabilities=frozenset({"heartbeat"}),
        )

    async def update(self) -> Sequence[InstanceStatus]:
        """Every live instance once; a gone one is reported once, then dropped."""
        now = anyio.current_time()
        if self._report is not None and now < self._report_until:
            # Nothing changed since the last report: a fleet polls every few
            # seconds while anything is in transition, and most polls of a
            # big fleet find every instance as it was.
            await checkpoint()
            return self._report
        result: list[InstanceStatus] = []
        gone: list[str] = []
        statuses = self._statuses
        for life in self._live.values():
            state = life.state(now)
            if state is ProviderState.DELETED:
                gone.append(life.id)
            # One status value per instance and state, reused while the state
            # holds: most polls report most instances unchanged.
            status = statuses.get(life.id)
            if status is None or status.state is not state:
                status = statuses[life.id] = InstanceStatus(
                    id=life.id, state=state, owner=self.owner
                )
            result.append(status)
        for instance_id in gone:
            self._live.pop(instance_id).reported_gone = True
            statuses.pop(instance_id, None)
        report = tuple(result)
        # Gone instances are reported once: the next report differs.
        self._report = None if gone else report
        self._report_until = min(
            (life.next_change(now) for life in self._live.values()), default=math.inf
        )
        await checkpoint()
        return report

    async def increase(self, n: int) -> int:
        """Accept up to ``n`` new instances within ``max_size``."""
        if n < 1:
            raise ValueError(f"increase needs n >= 1, got {n}")
        now = anyio.current_time()
        accepted = n if not self.max_size else max(0, min(n, self.max_size - self._alive_now(now)))
        faults, rng = self.faults, self._fault_rng
        for _ in range(accepted):
            boot = self.boot.draw(self._boot_rng)
            roll = rng.random() if faults.create_failure or faults.never_ready else 1.0
            if roll < faults.create_failure:
                life = self._new(now, running_at=math.inf)
                life.gone_at = now + boot
                continue
            if roll < faults.create_failure + faults.never_ready:
                self._new(now, running_at=math.inf)
                continue
            life = self._new(now, running_at=now + boot)
            if faults.spot_loss_per_hour:
                life.gone_at = life.running_at + rng.expovariate(faults.spot_loss_per_hour / 3600)
        await checkpoint()
        return accepted

    async def decrease(self, ids: Sequence[str]) -> Sequence[str]:
        """Start deleting ``ids``; unknown or already deleting ids count as removed."""
        now = anyio.current_time()
        for instance_id in ids:
            life = self._live.get(instance_id)
            if life is not None and life.delete_at == math.inf:
                life.delete_at = now
                life.deleted_at = now + self.faults.deletion
                self._report = None
        await checkpoint()
        return list(ids)

    async def connect_info(self, instance_id: str) -> ConnectInfo:
        """A made-up address for a live instance."""
        life = self._live.get(instance_id)
        if life is None or life.state(anyio.current_time()) is ProviderState.DELETED:
            raise InstanceNotFound(instance_id)
        return ConnectInfo(id=instance_id, internal_addr="192.0.2.1", username="sim")

    async def heartbeat(self, instance_id: str) -> None:
        """Raise :class:`~fleetkit.errors.InstanceNotFound` when the instance is gone."""
        life = self._live.get(instance_id)
        if life is None or life.state(anyio.current_time()) is ProviderState.DELETED:
            raise InstanceNotFound(instance_id)

    async def shutdown(self) -> None:
        """Nothing to clean up."""


class ReadyUp:
    """The ready-up step of a simulated instance, as the fleet's ``ready_check``.

    Takes ``faults.ready_time`` and fails at ``faults.ready_failure``, drawn
    per instance and attempt (not from one shared stream), so the outcome does
    not depend on which of two simultaneous ready-ups ran first. It stands in
    for ``instance_ready_command``: a connector and a command run nothing in a
    simulation.
    """

    def __init__(self, faults: CloudFaults, *, seed: int = 0) -> None:
        self.faults = faults
        self.seed = seed
        self._runs: dict[str, int] = {}

    async def __call__(self, info: ConnectInfo) -> str | None:
        """``None`` when the instance is ready, else why not."""
        faults = self.faults
        if faults.ready_time:
            await anyio.sleep(faults.ready_time)
        else:
            await checkpoint()
        if not faults.ready_failure:
            return None
        run = self._runs.get(info.id, 0)
        self._runs[info.id] = run + 1
        draw = random.Random(f"{self.seed}-ready-{info.id}-{run}").random()
        return "the ready command failed (simulated)" if draw < faults.ready_failure else None
