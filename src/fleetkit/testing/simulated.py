"""An in-memory instance group with latency and injected faults, in anyio time.

:class:`SimulatedGroup` implements :class:`~fleetkit.provider._protocol.InstanceGroup`
without any cloud: instances boot and delete after delays drawn from a seeded
``random.Random``, and every clock read is ``anyio.current_time()``, so under trio's
``MockClock(autojump_threshold=0)`` a day of boots and deletions passes in
milliseconds, and the same seed gives the same run.

Faults are one frozen :class:`Faults` value on ``group.faults``; assign a new one
(``group.faults = attrs.evolve(group.faults, update_failure=1.0)``) to change them
mid-test. Every verb call is appended to ``group.calls`` as a :class:`Call`.

An instance's provider state is *computed* from its timestamps at each read, never
stored, so states can only move forward (creating -> running -> deleting ->
deleted) whatever order the verbs are called in.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import anyio
import attrs
from anyio.lowlevel import checkpoint

from fleetkit.errors import InstanceNotFound, ProviderError, RetryLater, Throttled
from fleetkit.model import ConnectInfo, ProviderState
from fleetkit.provider._protocol import InstanceStatus, ProviderInfo
from fleetkit.provider._timeline import scheduled_state

__all__ = ["Call", "Delay", "Faults", "SimulatedGroup"]


def _probability(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"Faults.{attribute.name} must be within [0, 1], got {value}")


@attrs.frozen
class Delay:
    """A delay distribution: uniform between ``low`` and ``high`` seconds."""

    low: float
    high: float = attrs.field()

    @high.validator
    def _check(self, _attribute: attrs.Attribute[float], value: float) -> None:
        if not 0.0 <= self.low <= value:
            raise ValueError(f"Delay needs 0 <= low <= high, got low={self.low} high={value}")

    def draw(self, rng: random.Random) -> float:
        """One delay in seconds."""
        return self.low if self.low == self.high else rng.uniform(self.low, self.high)


@attrs.frozen(kw_only=True)
class Faults:
    """What goes wrong, as probabilities per call or per instance (0 = never).

    * ``increase_error``: ``increase`` raises :class:`~fleetkit.errors.RetryLater`.
    * ``increase_shortfall``: ``increase`` accepts fewer than asked (possibly 0).
    * ``stuck_creating``: a new instance never leaves ``CREATING``.
    * ``death``: a running instance dies (reported ``DELETED``) within ``death_within``.
    * ``decrease_error`` / ``update_error``: the verb raises ``RetryLater``.
    * ``decrease_ignored``: ``decrease`` leaves an id out of its result (not accepted).
    * ``throttle``: any verb raises :class:`~fleetkit.errors.Throttled` before acting.
    """

    increase_error: float = attrs.field(default=0.0, validator=_probability)
    increase_shortfall: float = attrs.field(default=0.0, validator=_probability)
    stuck_creating: float = attrs.field(default=0.0, validator=_probability)
    death: float = attrs.field(default=0.0, validator=_probability)
    death_within: float = 3600.0
    decrease_error: float = attrs.field(default=0.0, validator=_probability)
    decrease_ignored: float = attrs.field(default=0.0, validator=_probability)
    update_error: float = attrs.field(default=0.0, validator=_probability)
    throttle: float = attrs.field(default=0.0, validator=_probability)


@attrs.frozen
class Call:
    """One recorded verb call: its name, arguments, time and outcome.

    ``outcome`` is the result's repr, or the exception's class name for a failure.
    """

    verb: str
    args: tuple[object, ...]
    at: float
    outcome: str


@attrs.define
class _Sim:
    """One simulated instance's timeline (``inf`` = never)."""

    id: str
    owner: str | None
    requested_at: float
    running_at: float
    dies_at: float
    delete_at: float = math.inf  # when deletion was accepted
    deleted_at: float = math.inf
    reported_gone: bool = False

    def state(self, now: float) -> ProviderState:
        return scheduled_state(
            now,
            running_at=self.running_at,
            delete_at=self.delete_at,
            gone_at=min(self.deleted_at, self.dies_at),
        )


class SimulatedGroup:
    """An in-memory :class:`~fleetkit.provider._protocol.InstanceGroup`.

    ``boot`` is the delay from ``increase`` to running, ``deletion`` from an
    accepted ``decrease`` to deleted. ``max_size`` bounds live instances (those not
    deleted). ``owner`` is stamped on every instance it creates, as a cloud
    provider's owner tag. ``capabilities`` is reported by :meth:`init`.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        max_size: int = 1000,
        boot: Delay = Delay(5.0, 30.0),
        deletion: Delay = Delay(1.0, 10.0),
        faults: Faults = Faults(),
        owner: str | None = "simulated",
        id_prefix: str = "sim",
    ) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        self.max_size = max_size
        self.boot = boot
        self.deletion = deletion
        self.faults = faults
        self.owner = owner
        self.calls: list[Call] = []
        self._rng = random.Random(seed)
        self._prefix = id_prefix
        self._next = 0
        self._instances: dict[str, _Sim] = {}
        self._initialised = False
        self._shut = False

    def __repr__(self) -> str:
        return (
            f"SimulatedGroup(instances={len(self._instances)}, max_size={self.max_size}, "
            f"faults={self.faults!r})"
        )

    # --- test helpers ------------------------------------------------------

    def live_ids(self) -> list[str]:
        """Ids of instances that are not deleted now, in creation order."""
        now = anyio.current_time()
        return [s.id for s in self._instances.values() if s.state(now) is not ProviderState.DELETED]

    def state_of(self, instance_id: str) -> ProviderState:
        """The state the group would report for ``instance_id`` now."""
        sim = self._instances.get(instance_id)
        if sim is None:
            return ProviderState.DELETED
        return sim.state(anyio.current_time())

    def kill(self, instance_id: str) -> None:
        """Make an instance die now, as a cloud might (spot reclaim, host failure)."""
        self._instances[instance_id].dies_at = anyio.current_time()

    def add_existing(
        self, instance_id: str, *, owner: str | None = None, running: bool = True
    ) -> None:
        """Add an instance that exists before the fleet starts (a previous run's)."""
        now = anyio.current_time()
        self._instances[instance_id] = _Sim(
            id=instance_id,
            owner=owner,
            requested_at=now,
            running_at=now if running else math.inf,
            dies_at=math.inf,
        )

    def calls_to(self, verb: str) -> list[Call]:
        """The recorded calls of one verb."""
        return [c for c in self.calls if c.verb == verb]

    # --- the protocol ----------------------------------------------------------

    def _record(self, verb: str, args: tuple[object, ...], outcome: object) -> None:
        text = type(outcome).__name__ if isinstance(outcome, Exception) else repr(outcome)
        self.calls.append(Call(verb, args, anyio.current_time(), text))

    def _roll(self, probability: float) -> bool:
        return probability > 0.0 and self._rng.random() < probability

    def _enter(self, verb: str, args: tuple[object, ...]) -> None:
        if self._shut:
            error: ProviderError = ProviderError(f"simulated group: {verb} after shutdown")
        elif not self._initialised and verb != "init":
            error = ProviderError(f"simulated group: {verb} before init")
        elif self._roll(self.faults.throttle):
            error = Throttled(f"simulated group: {verb} throttled")
        else:
            return
        self._record(verb, args, error)
        raise error

    async def init(self) -> ProviderInfo:
        """Describe the group; the only verb allowed before the others."""
        self._enter("init", ())
        self._initialised = True
        info = ProviderInfo(
            id=self.owner or "simulated",
            max_size=self.max_size,
            version="1",
            capabilities=frozenset({"heartbeat"}),
        )
        self._record("init", (), info)
        return info

    async def update(self) -> Sequence[InstanceStatus]:
        """Every known instance once; a deleted one is reported once, then dropped."""
        self._enter("update", ())
        if self._roll(self.faults.update_error):
            error = RetryLater("simulated group: update failed")
            self._record("update", (), error)
            raise error
        now = anyio.current_time()
        result: list[InstanceStatus] = []
        for sim in list(self._instances.values()):
            state = sim.state(now)
            if state is ProviderState.DELETED:
                if sim.reported_gone:
                    continue
                sim.reported_gone = True
            result.append(InstanceStatus(id=sim.id, state=state, owner=sim.owner))
        self._record("update", (), len(result))
        await checkpoint()
        return result

    async def increase(self, n: int) -> int:
        """Accept up to ``n`` new instances, within ``max_size`` and the faults."""
        self._enter("increase", (n,))
        if n < 1:
            raise ValueError(f"increase needs n >= 1, got {n}")
        if self._roll(self.faults.increase_error):
            error = RetryLater("simulated group: increase failed")
            self._record("increase", (n,), error)
            raise error
        room = self.max_size - len(self.live_ids())
        accepted = max(0, min(n, room))
        if accepted and self._roll(self.faults.increase_shortfall):
            accepted = self._rng.randrange(accepted)
        now = anyio.current_time()
        for _ in range(accepted):
            self._next += 1
            stuck = self._roll(self.faults.stuck_creating)
            running_at = math.inf if stuck else now + self.boot.draw(self._rng)
            dies = self._roll(self.faults.death)
            dies_at = (
                running_at + self._rng.uniform(0.0, self.faults.death_within)
                if dies and not stuck
                else math.inf
            )
            sim_id = f"{self._prefix}-{self._next:05d}"
            self._instances[sim_id] = _Sim(
                id=sim_id,
                owner=self.owner,
                requested_at=now,
                running_at=running_at,
                dies_at=dies_at,
            )
        self._record("increase", (n,), accepted)
        await checkpoint()
        return accepted

    async def decrease(self, ids: Sequence[str]) -> Sequence[str]:
        """Start deleting ``ids``; unknown or already-deleting ids count as removed."""
        args = (tuple(ids),)
        self._enter("decrease", args)
        if self._roll(self.faults.decrease_error):
            error = RetryLater("simulated group: decrease failed")
            self._record("decrease", args, error)
            raise error
        now = anyio.current_time()
        removed: list[str] = []
        for instance_id in ids:
            sim = self._instances.get(instance_id)
            if sim is not None and sim.delete_at == math.inf:
                if self._roll(self.faults.decrease_ignored):
                    continue
                sim.delete_at = now
                sim.deleted_at = now + self.deletion.draw(self._rng)
            removed.append(instance_id)
        self._record("decrease", args, removed)
        await checkpoint()
        return removed

    async def connect_info(self, instance_id: str) -> ConnectInfo:
        """Loopback-looking addresses for a known, not deleted instance."""
        self._enter("connect_info", (instance_id,))
        sim = self._instances.get(instance_id)
        if sim is None or sim.state(anyio.current_time()) is ProviderState.DELETED:
            error = InstanceNotFound(instance_id)
            self._record("connect_info", (instance_id,), error)
            raise error
        number = int(instance_id.rsplit("-", 1)[-1]) if instance_id[-1].isdigit() else 0
        info = ConnectInfo(
            id=instance_id,
            internal_addr=f"10.{number // 65536 % 256}.{number // 256 % 256}.{number % 256}",
            external_addr=None,
            protocol="ssh",
            username="sim",
        )
        self._record("connect_info", (instance_id,), info)
        return info

    async def heartbeat(self, instance_id: str) -> None:
        """Raise :class:`~fleetkit.errors.InstanceNotFound` when the instance is gone."""
        self._enter("heartbeat", (instance_id,))
        if self.state_of(instance_id) is ProviderState.DELETED:
            error = InstanceNotFound(instance_id)
            self._record("heartbeat", (instance_id,), error)
            raise error
        self._record("heartbeat", (instance_id,), None)

    async def shutdown(self) -> None:
        """Refuse further verbs; deletes nothing. Idempotent."""
        self._shut = True
        self.calls.append(Call("shutdown", (), anyio.current_time(), "None"))
