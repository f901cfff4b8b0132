"""What the planner decides, as data. Every decision carries its reason.

The runtime carries these out; logging, metrics and ``str(plan)`` read the
reasons after planning, never during it.
"""

from __future__ import annotations

from typing import NamedTuple

import attrs

__all__ = [
    "Assignment",
    "Deprovision",
    "Drained",
    "Figures",
    "IdleExpired",
    "NotReadyInTime",
    "OverMaxInstances",
    "Plan",
    "Provision",
    "RemovalReason",
    "Unhealthy",
    "UseCountExhausted",
]


@attrs.frozen
class IdleExpired:
    """Idle longer than the active policy's ``idle_time`` and beyond the idle target."""

    idle_for: float
    idle_time: float

    def __str__(self) -> str:
        return f"idle for {self.idle_for:.0f}s, over idle_time {self.idle_time:.0f}s"


@attrs.frozen
class UseCountExhausted:
    """Served ``max_use_count`` acquisitions and has none left running."""

    use_count: int
    max_use_count: int

    def __str__(self) -> str:
        return f"use count {self.use_count} reached max_use_count {self.max_use_count}"


@attrs.frozen
class Unhealthy:
    """Failed ``failure_threshold`` consecutive health checks and is free."""

    failures: int
    threshold: int

    def __str__(self) -> str:
        return f"unhealthy after {self.failures} failures (threshold {self.threshold})"


@attrs.frozen
class NotReadyInTime:
    """Not ready ``ready_timeout`` seconds after it was created."""

    waited: float
    timeout: float

    def __str__(self) -> str:
        return f"not ready after {self.waited:.0f}s (timeout {self.timeout:.0f}s)"


@attrs.frozen
class OverMaxInstances:
    """More instances than ``max_instances`` (after a limit was lowered)."""

    instances: int
    max_instances: int

    def __str__(self) -> str:
        return f"{self.instances} instances over max_instances {self.max_instances}"


@attrs.frozen
class Drained:
    """Marked draining by the runtime (``Instance.drain_reason``) and now free."""

    reason: str

    def __str__(self) -> str:
        return f"drained ({self.reason}) and free"


RemovalReason = (
    IdleExpired | UseCountExhausted | Unhealthy | NotReadyInTime | OverMaxInstances | Drained
)


@attrs.frozen
class Figures:
    """The numbers behind a plan, in slots unless named otherwise.

    ``in_use = acquired + reserved``; ``demand_slots = acquired + unavailable +
    reserved + pending + idle_target``; ``desired_instances`` is that demand in
    instances after clamping; ``capped_by`` names what clamped it
    (``"max_instances"``) or is ``None``.

    All of these describe the fleet *after* the plan's assignments and removals:
    ``acquired`` includes the slots just assigned, ``pending`` only the keys left
    waiting, and ``instances`` counts the instances that stay and count as
    capacity (requested, creating, running, ready, draining). ``idle`` is free
    slots that can take a job now, ``unready`` the slots of instances not yet
    ready, and ``all_instances`` every instance in any state, the figure
    ``max_instances`` bounds. The identity ``instances * capacity_per_instance ==
    acquired + unavailable + idle + unready`` holds.
    """

    acquired: int
    reserved: int
    pending: int
    unavailable: int
    in_use: int
    idle_target: int
    demand_slots: int
    instances: int
    desired_instances: int
    capped_by: str | None = None
    idle: int = 0
    unready: int = 0
    all_instances: int = 0


@attrs.frozen
class Provision:
    """Ask the provider for ``count`` more instances, because of ``figures``."""

    count: int
    figures: Figures

    def __str__(self) -> str:
        f = self.figures
        capped = f", capped by {f.capped_by}" if f.capped_by else ""
        return (
            f"provision {self.count}: demand {f.demand_slots} slots "
            f"(in use {f.in_use}, pending {f.pending}, idle target {f.idle_target}) "
            f"wants {f.desired_instances} instances, have {f.instances}{capped}"
        )


@attrs.frozen
class Deprovision:
    """Remove one instance, for ``reason``."""

    instance_id: str
    reason: RemovalReason

    def __str__(self) -> str:
        return f"deprovision {self.instance_id}: {self.reason}"


# A NamedTuple rather than attrs, unlike every other decision: a plan can carry
# tens of thousands of assignments, and building them straight from tuples
# (tuple.__new__ in C) is five times faster than a frozen attrs __init__, which
# is what keeps plan() within its 20 ms budget at 10,000 instances
# (bench/bench_planner.py). Immutable, hashable, compared by value all the same.
class Assignment(NamedTuple):
    """Give slot ``slot`` of ``instance_id`` to the pending acquisition ``key``."""

    key: str
    instance_id: str
    slot: int

    def __str__(self) -> str:
        return f"assign {self.key} -> {self.instance_id} slot {self.slot}"


@attrs.frozen
class Plan:
    """The planner's answer for one snapshot: assignments first, then scaling."""

    assignments: tuple[Assignment, ...]
    provision: Provision | None
    deprovisions: tuple[Deprovision, ...]
    figures: Figures

    @property
    def empty(self) -> bool:
        """Whether the plan asks for nothing to be done."""
        return not (self.assignments or self.provision or self.deprovisions)

    def __str__(self) -> str:
        lines = [str(a) for a in self.assignments]
        if self.provision is not None:
            lines.append(str(self.provision))
        lines += [str(d) for d in self.deprovisions]
        return "\n".join(lines) if lines else "no change"
